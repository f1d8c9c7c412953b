"""Time the whole demo suite (`snakemake --cores all results/table1.csv`) from an empty working
directory: data generation to table. Environment setup is excluded (the venv must exist).
Prints the wall time and the CPU time of Snakemake and all its jobs (user + system, core-seconds:
less sensitive than wall time to other work on a shared machine).

    .venv/bin/python bench/demo_suite.py [--cores N] [--keep DIR] [TARGET ...]

Targets default to results/table1.csv. With --keep, a second call in the same directory times
only what the new targets add (e.g. results/table3.csv after table 1).
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from common import machine  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


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
    shutil.copytree(ROOT / "workflow", work / "workflow", dirs_exist_ok=True)
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    cpu0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "snakemake", *args.targets, "--cores", args.cores],
                          cwd=work, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    cpu1 = resource.getrusage(resource.RUSAGE_CHILDREN)  # Snakemake and every job it waited for
    core_seconds = (cpu1.ru_utime - cpu0.ru_utime) + (cpu1.ru_stime - cpu0.ru_stime)
    if proc.returncode:
        sys.exit(proc.stderr[-3000:])
    jobs = proc.stderr.count("Finished jobid")
    print(f"| {' '.join(args.targets)}, `--cores {args.cores}` | {seconds:.0f} s | {core_seconds:.0f} core-s "
          f"| {jobs} jobs | {machine()} |")
    for target in args.targets:
        print((work / target).with_suffix(".md").read_text())
    if not args.keep:
        shutil.rmtree(work)


if __name__ == "__main__":
    main()
