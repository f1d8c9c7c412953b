"""Time the whole demo suite (`snakemake --cores all results/table1.csv`) from an empty working
directory: data generation to table. Environment setup is excluded (the venv must exist).
Prints the wall time and the CPU time of Snakemake and all its jobs (user + system, core-seconds:
less sensitive than wall time to other work on a shared machine), Snakemake's own share of it, the
load average before and after, and where the time went: per rule, its jobs, their summed wall
seconds and the span from the first start to the last end (from Snakemake's log, 1 s resolution).
The run uses the repository's default workflow profile (profiles/default), as `make table1` does.

    .venv/bin/python bench/demo_suite.py [--cores N] [--keep DIR] [TARGET ...]

Targets default to results/table1.csv. With --keep, a second call in the same directory times
only what the new targets add (e.g. results/table3.csv after table 1).
"""

from __future__ import annotations

import argparse
import os
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from datetime import datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from common import machine  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def own_cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds of process ``pid`` itself (not its children), from /proc."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rule_times(log_text: str) -> dict[str, dict]:
    """Per rule: jobs, summed wall seconds, first start and last end (seconds from the first job's
    start), from a Snakemake log's timestamped job starts and "Finished jobid" lines."""
    stamp, rule, start, rules, end = None, None, {}, {}, {}
    for line in log_text.splitlines():
        if m := re.match(r"\[(\w{3} \w{3} +\d+ [\d:]+ \d{4})\]", line):
            stamp = datetime.strptime(m.group(1), "%a %b %d %H:%M:%S %Y")
        elif m := re.match(r"(?:local)?(?:checkpoint|rule) (\w+):", line):
            rule = m.group(1)
        elif (m := re.match(r"\s+jobid: (\d+)", line)) and rule:
            start[int(m.group(1))], rules[int(m.group(1))] = stamp, rule
        elif m := re.match(r"Finished jobid: (\d+)", line):
            end[int(m.group(1))] = stamp
    if not start:
        return {}
    t0 = min(start.values())
    out: dict[str, dict] = defaultdict(lambda: {"jobs": 0, "job_s": 0.0, "first": None, "last": None})
    for job, r in rules.items():
        if job not in end:
            continue
        a, b = (start[job] - t0).total_seconds(), (end[job] - t0).total_seconds()
        row = out[r]
        row["jobs"] += 1
        row["job_s"] += b - a
        row["first"] = a if row["first"] is None else min(row["first"], a)
        row["last"] = b if row["last"] is None else max(row["last"], b)
    return dict(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cores", default="all")
    parser.add_argument("--keep", help="run in this directory and keep it (default: a temporary one)")
    parser.add_argument("targets", nargs="*", default=["results/table1.csv"])
    args = parser.parse_args()
    work = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="ordclip-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    for name in ("Snakefile", "params.yaml"):
        shutil.copy(ROOT / name, work / name)
    for name in ("workflow", "profiles"):
        shutil.copytree(ROOT / name, work / name, dirs_exist_ok=True)
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    logs_before = set((work / ".snakemake" / "log").glob("*.log"))
    load0 = os.getloadavg()[0]
    cpu0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "snakemake", *args.targets, "--cores", args.cores],
                            cwd=work, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    own, done = [None], []

    def poll() -> None:  # Snakemake's own CPU time, read until it exits
        while not done:
            own[0] = own_cpu_seconds(proc.pid) or own[0]
            time.sleep(0.25)

    import threading

    watcher = threading.Thread(target=poll, daemon=True)
    watcher.start()
    stdout, stderr = proc.communicate()
    seconds = time.perf_counter() - t0
    done.append(True)
    cpu1 = resource.getrusage(resource.RUSAGE_CHILDREN)  # Snakemake and every job it waited for
    core_seconds = (cpu1.ru_utime - cpu0.ru_utime) + (cpu1.ru_stime - cpu0.ru_stime)
    load1 = os.getloadavg()[0]
    if proc.returncode:
        sys.exit(stderr[-3000:])
    jobs = stderr.count("Finished jobid")
    print(f"| {' '.join(args.targets)}, `--cores {args.cores}` | {seconds:.0f} s | {core_seconds:.0f} core-s "
          f"(Snakemake itself {own[0] or 0:.0f}) | {jobs} jobs | {machine()}, load average {load0:.1f} before, "
          f"{load1:.1f} after |")
    new_logs = sorted(set((work / ".snakemake" / "log").glob("*.log")) - logs_before)
    if new_logs:
        print("\n| rule | jobs | job-seconds (wall, summed) | first start s | last end s |\n|---|---|---|---|---|")
        for rule, r in sorted(rule_times(new_logs[-1].read_text()).items(), key=lambda t: t[1]["first"]):
            print(f"| {rule} | {r['jobs']} | {r['job_s']:.0f} | {r['first']:.0f} | {r['last']:.0f} |")
        print()
    for target in args.targets:
        print((work / target).with_suffix(".md").read_text())
    if not args.keep:
        shutil.rmtree(work)


if __name__ == "__main__":
    main()
