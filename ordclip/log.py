"""Job messages: the ``ordclip`` loggers write whole lines to stderr (each job's log file under
Snakemake), ``ordclip: ...`` and ``ordclip: WARNING: ...``, as the jobs printed them before."""

from __future__ import annotations

import logging
import sys


class _Stderr(logging.StreamHandler):
    """A handler on whatever ``sys.stderr`` is when a record is written (pytest swaps it)."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:
        pass


class _Format(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        prefix = "ordclip: WARNING: " if record.levelno >= logging.WARNING else "ordclip: "
        return prefix + super().format(record)


def setup(level: int = logging.INFO) -> None:
    """Send the ``ordclip`` loggers' records of ``level`` and above to stderr (once per process);
    change it with ``logging.getLogger("ordclip").setLevel``."""
    logger = logging.getLogger("ordclip")
    if not any(isinstance(h, _Stderr) for h in logger.handlers):
        handler = _Stderr()
        handler.setFormatter(_Format("%(message)s"))
        logger.addHandler(handler)
        logger.setLevel(level)
        logger.propagate = False
