"""Rebuild what is missing or damaged under a requested target, with the same snakemake command.

Snakemake rebuilds a missing intermediate file only when a job that needs it runs anyway: with the
table up to date, a deleted model.pt or cell file stays deleted ("Nothing to be done"). So each
job's ``params`` carry :func:`repair_count`, a count of the times its files were found broken: a job
some of whose outputs exist while another output is missing, has a size other than its record
(outputs.npz, the image cache and features: ``.NAME.sha256``; model.pt: run.json) or is unreadable
JSON, or whose inputs are missing while its outputs exist. The count grows once per breakage (its
state is kept under .snakemake/ordclip/repair/), Snakemake sees a changed parameter and reruns the
job, and what follows it; once the files are whole the count stays, so nothing reruns again.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Iterable

log = logging.getLogger(__name__)

STATE = Path(".snakemake/ordclip/repair")


def _recorded_size(path: Path) -> int | None:
    """The size a file's own record gives it: its ``.NAME.sha256``, or run.json for model.pt."""
    from ordclip.io import checksum_path

    record = checksum_path(path)
    try:
        if record.is_file():
            return int(json.loads(record.read_text())["bytes"])
        if path.name == "model.pt" and (path.parent / "run.json").is_file():
            entry = json.loads((path.parent / "run.json").read_text()).get("outputs", {}).get("model", {})
            return entry.get("bytes")
    except (json.JSONDecodeError, KeyError, TypeError, ValueError):
        return None
    return None


def _state(path: Path) -> str | None:
    """None if the file is whole, else why not ("missing", "size N, recorded M", "unreadable JSON")."""
    if not path.exists():
        return "missing"
    if path.is_dir():
        return None
    size = path.stat().st_size
    recorded = _recorded_size(path)
    if recorded is not None and recorded != size:
        return f"size {size}, recorded {recorded}"
    if path.suffix == ".json" and size < (1 << 20):
        try:
            json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError):
            return "unreadable JSON"
    return None


def broken(inputs: Iterable[str], outputs: Iterable[str]) -> list[tuple[str, str]]:
    """[(file, why)] of a job whose outputs were built once but are not whole now; [] otherwise
    (all outputs present and whole, or none there yet)."""
    outputs = [Path(p) for p in outputs]
    states = {str(p): _state(p) for p in outputs}
    if all(s == "missing" for s in states.values()):
        return []  # never built (or removed whole): Snakemake's own rules apply
    out = [(p, s) for p, s in states.items() if s]
    out += [(p, "missing") for p in inputs if not Path(p).exists()]
    return out


def repair_count(rule: str, key: str, inputs: Iterable[str], outputs: Iterable[str]) -> int:
    """How often this job's files were found broken (:func:`broken`); grows by one for each new
    breakage, which makes Snakemake rerun the job. ``key``: the job's wildcards, as text."""
    inputs, outputs = [str(p) for p in inputs], [str(p) for p in outputs]
    path = STATE / rule / f"{key}.json"
    try:
        saved = json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        saved = {"count": 0, "seen": None}
    problems = broken(inputs, outputs)
    if not problems:
        return saved["count"]
    # one breakage, however often it is seen: the state of every output (an input rebuilt meanwhile
    # changes nothing); the outputs' modification times tell a new breakage from the last one
    states = dict(problems)
    seen = sorted([p, states.get(p), _mtime(p)] for p in outputs)
    if seen != saved["seen"]:
        from ordclip.io import write_text

        saved = {"count": saved["count"] + 1, "seen": seen}
        write_text(path, json.dumps(saved))
        what = "; ".join(f"{p} ({s})" for p, s in problems)
        log.info(f"{rule} {key.replace('-', ' ')}: {what}: the job runs again")
    return saved["count"]


def _mtime(path: str) -> int | None:
    try:
        return os.stat(path).st_mtime_ns
    except FileNotFoundError:
        return None
