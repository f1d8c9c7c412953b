"""Check that speed work changes no result: build a reduced demo suite with one source tree and
keep its table and every run's metrics.json; then compare two such kept folders file by file.

    .venv/bin/python bench/same_results.py build --src TREE --out DIR   # TREE: a checkout of ordclip
    .venv/bin/python bench/same_results.py compare DIR_A DIR_B          # exit 1 on any difference

The reduced suite (REDUCED below): the demo's six methods on two of its datasets, one fold each.
The tree's ordclip package is put first on PYTHONPATH, so Snakemake and every job run its code.
"""

from __future__ import annotations

import argparse
import filecmp
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REDUCED = """\
suites:
  demo:
    datasets: [counting, fading]
    folds: 1
"""


def build(src: Path, out: Path, cores: str) -> float:
    """Run the reduced suite's results/table1.csv with the code of ``src``; copy the table and
    the metrics.json files to ``out``. Returns the wall time in seconds."""
    work = Path(tempfile.mkdtemp(prefix="ordclip-same-"))
    for name in ("Snakefile", "params.yaml"):
        shutil.copy(src / name, work / name)
    shutil.copytree(src / "workflow", work / "workflow")
    (work / "reduced.yaml").write_text(REDUCED)
    env = {**os.environ, "PYTHONPATH": str(src),
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "snakemake", "results/table1.csv", "--cores", cores,
                           "--configfile", "reduced.yaml"], cwd=work, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    if proc.returncode:
        sys.exit(proc.stderr[-3000:])
    out.mkdir(parents=True, exist_ok=True)
    results = work / "results"
    for path in sorted([*results.glob("demo/table1.*"), *results.glob("table1.*"),
                        *results.rglob("metrics.json"), *results.rglob("predictions.csv")]):
        dest = out / path.relative_to(results)
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(path, dest)
    shutil.rmtree(work)
    return seconds


def compare(a: Path, b: Path) -> list[str]:
    """Paths (relative) whose bytes differ between the two folders, or that only one has."""
    files_a = {p.relative_to(a) for p in a.rglob("*") if p.is_file()}
    files_b = {p.relative_to(b) for p in b.rglob("*") if p.is_file()}
    problems = [f"only in {a}: {p}" for p in sorted(files_a - files_b)]
    problems += [f"only in {b}: {p}" for p in sorted(files_b - files_a)]
    problems += [f"differs: {p}" for p in sorted(files_a & files_b)
                 if not filecmp.cmp(a / p, b / p, shallow=False)]
    return problems


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build")
    b.add_argument("--src", type=Path, required=True)
    b.add_argument("--out", type=Path, required=True)
    b.add_argument("--cores", default="all")
    c = sub.add_parser("compare")
    c.add_argument("a", type=Path)
    c.add_argument("b", type=Path)
    args = parser.parse_args()
    if args.cmd == "build":
        print(f"built in {build(args.src.resolve(), args.out.resolve(), args.cores):.0f} s")
    else:
        a, b = args.a, args.b
        problems = compare(a, b)
        n = sum(1 for p in a.rglob("*") if p.is_file())
        print("\n".join(problems) if problems else f"identical: {n} files")
        sys.exit(1 if problems else 0)


if __name__ == "__main__":
    main()
