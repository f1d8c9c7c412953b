"""Another Snakemake run in the same folder: found before this run plans, so that Snakemake's own
messages about it (IncompleteFilesException, "Directory cannot be locked") come with its pid."""

from __future__ import annotations

import os
from datetime import datetime, timezone
from pathlib import Path


def _locked_outputs(workdir: Path) -> list[str]:
    """The files the output locks of Snakemake's file persistence (.snakemake/locks) hold."""
    out: list[str] = []
    for lock in sorted((workdir / ".snakemake" / "locks").glob("*.output.lock")):
        try:
            out += [line.strip() for line in lock.read_text().splitlines() if line.strip()]
        except OSError:
            continue
    return out


def snakemake_processes(workdir: Path) -> list[dict]:
    """Snakemake main processes (not the per-job ``--mode`` ones) whose working folder is
    ``workdir``, other than this process and its ancestors: pid, command line, start time."""
    import psutil

    own = {os.getpid(), *(p.pid for p in psutil.Process().parents())}
    found = []
    for proc in psutil.process_iter(["pid", "cmdline", "create_time"]):
        cmd = proc.info["cmdline"] or []
        if proc.info["pid"] in own or "--mode" in cmd:
            continue
        if not any(Path(a).name == "snakemake" or a == "snakemake" for a in cmd[:3]):
            continue
        try:
            if Path(proc.cwd()).resolve() != workdir:
                continue
        except (psutil.Error, OSError):
            continue
        found.append({"pid": proc.info["pid"], "cmdline": " ".join(cmd),
                      "started": datetime.fromtimestamp(proc.info["create_time"], timezone.utc)})
    return found


def other_run_message(workdir: str | os.PathLike = ".") -> str | None:
    """A warning when another Snakemake run holds locks in ``workdir`` (its pid where it runs on
    this machine), else None. Snakemake locks per file, so runs on separate outputs may share a
    folder; this says which run to wait for where they overlap."""
    workdir = Path(workdir).resolve()
    held = _locked_outputs(workdir)
    if not held:
        return None
    procs = snakemake_processes(workdir)
    example = ", ".join(held[:3]) + (" ..." if len(held) > 3 else "")
    if procs:
        who = "; ".join(f"pid {p['pid']} (started {p['started']:%Y-%m-%d %H:%M:%S} UTC: {p['cmdline'][:160]})"
                        for p in procs)
        head = f"another Snakemake run holds this folder: {who}"
        wait = f"wait for it to end (or stop it: kill {procs[0]['pid']})"
    else:
        head = ("another Snakemake run holds this folder, but no Snakemake process runs in it on this machine "
                "(it runs on another host, or it was killed)")
        wait = "wait for it to end; if none runs any more, `snakemake --unlock` clears its locks"
    return (f"ordclip: {head}. It locks {len(held)} output file(s) ({example}) and marks them incomplete while "
            f"it writes them. If this run stops with IncompleteFilesException or 'Directory cannot be locked', "
            f"that is the other run at work, not damage: {wait}, and do not use --rerun-incomplete meanwhile.")
