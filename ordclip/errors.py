"""Errors that the CLI reports as one clear line (no traceback)."""

import signal


class OrdclipError(Exception):
    """A problem with the user's input: names the file, key or row at fault."""


class ConfigError(OrdclipError):
    """A bad key or value in the parameter files."""


class DataError(OrdclipError):
    """A missing or malformed dataset file, row or image."""


class DiskFullError(OrdclipError):
    """The disk filled while an output was written: names the file, the space it needs and what was kept."""


class Preempted(Exception):
    """Training stopped on a signal (SLURM preemption or time limit) after saving its checkpoint.

    Not an input problem: rerunning the same command resumes from ``checkpoint``. The CLI exits
    with ``exit_code`` (128 + the signal number, as a shell reports a process killed by it), so
    Snakemake counts the job as failed and ``--retries`` (or a SLURM requeue) runs it again.
    """

    def __init__(self, signum: int, checkpoint: str) -> None:
        self.signum = signum
        self.checkpoint = checkpoint
        self.exit_code = 128 + signum
        super().__init__(f"stopped by {signal.Signals(signum).name}; state saved to {checkpoint}; "
                         "run the same command again to resume")
