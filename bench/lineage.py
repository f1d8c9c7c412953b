"""Cost of DVC's record of a run (ordclip/dvcstages.py) at the paper suite's size.

Builds, in a temporary git + DVC repository holding a copy of the workflow and package, the jobs
Snakemake plans for ``results/paper/table1.csv`` (``--config suite=paper``: every data step, split,
embed, train, evaluate, cell and table job, and the default copy), writes small stand-in files for
every output (``--mb`` MB for each model.pt, outputs.npz and image cache, 4 KB for the rest), then
times the record (ordclip.dvcstages.record):

- ``first``: every stage new (hash every file, copy each output into the DVC cache), through
  ``snakemake --touch``, which marks the stand-ins as built and ends with the same onsuccess record
  as a real run;
- ``again``: the same jobs recorded again with nothing changed (what a later run of the same table
  pays), and after one cell's runs were rewritten;
- ``dvc status``: DVC's own check of the whole record afterwards.

It prints the sizes of dvc.yaml and dvc.lock too. Each time is the record's own figure (its last line).

    .venv/bin/python bench/lineage.py [--mb 1] [--out bench/out/lineage.md]
"""

from __future__ import annotations

import argparse
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
from common import machine  # noqa: E402

BIG = ("model.pt", "outputs.npz", "images.npy", "features.npz")
TARGET = ("results/table1.csv", "--config", "suite=paper")


def snakemake(repo: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(repo), "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    proc = subprocess.run([sys.executable, "-m", "snakemake", *args], cwd=repo, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"snakemake {' '.join(args)} failed:\n{proc.stderr[-3000:]}")
    return proc


def outputs(repo: Path) -> list[tuple[str, str]]:
    """(output file, rule) of every job of the paper suite's table 1, from ``snakemake --summary``."""
    rows = snakemake(repo, "--summary", *TARGET).stdout.splitlines()[1:]
    return [(r.split("\t")[0], r.split("\t")[2]) for r in rows if r.strip()]


def fill(repo: Path, files: list[tuple[str, str]], mb: float, only: str | None = None) -> int:
    """Write stand-in files for every output (only those under ``only``); returns the bytes written."""
    rng = random.Random(0)
    total = 0
    for out, rule in files:
        if only is not None and not out.startswith(only):
            continue
        path = repo / out
        if rule in ("generate", "fetch"):  # a folder of images and labels.csv
            path.mkdir(parents=True, exist_ok=True)
            for i in range(20):
                (path / f"img{i}.png").write_bytes(rng.randbytes(4096))
            (path / "labels.csv").write_text("path,label\n")
            continue
        size = int(mb * 2**20) if path.name in BIG else 4096
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.suffix == ".json":  # a cell file is a DVC metric: it must be JSON
            path.write_text('{"mae": %r}' % rng.random())
        else:
            path.write_bytes(rng.randbytes(size))
        total += size
    return total


def recorded(proc: subprocess.CompletedProcess) -> float:
    """The seconds the record took, from its own last line."""
    line = [l for l in proc.stderr.splitlines() if l.startswith("dvc lineage: recorded")][-1]
    return float(line.rsplit(" in ", 1)[1].removesuffix(" s"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mb", type=float, default=1.0, help="size of each model.pt/outputs.npz/image cache (MB)")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        repo = Path(tmp) / "repo"
        repo.mkdir()
        for name in ("Snakefile", "params.yaml", ".dvcignore", ".gitignore"):
            shutil.copy(ROOT / name, repo / name)
        for name in ("workflow", "ordclip", "profiles"):
            shutil.copytree(ROOT / name, repo / name, ignore=shutil.ignore_patterns("__pycache__"))
        (repo / ".dvc").mkdir()
        shutil.copy(ROOT / ".dvc" / "config", repo / ".dvc" / "config")
        subprocess.run(["git", "init", "-q"], cwd=repo, check=True)
        files = outputs(repo)
        rules: dict[str, int] = {}
        for _, rule in files:
            rules[rule] = rules.get(rule, 0) + 1
        written = fill(repo, files, args.mb)
        rows = []
        # --touch runs every job of the DAG as "done" and ends with the onsuccess record, as a real run
        proc = snakemake(repo, *TARGET, "--touch", "--cores", "1")
        rows.append(("first (every stage new)", recorded(proc)))
        n_jobs = len(re.findall(r"^(?:local)?rule \w+:", proc.stdout + proc.stderr, flags=re.M))
        # later runs: the same record with the files as they are (the DAG's jobs, saved by the record)
        again = ("import json, sys; from ordclip.dvcstages import record; s = json.load(open(sys.argv[1])); "
                 "record(s['jobs'], '.', s['configfiles'], s['config'])")
        env = {**os.environ, "PYTHONPATH": str(repo)}

        def rerecord() -> float:
            shutil.copy(repo / ".dvc/tmp/ordclip/last.json", repo / "saved.json")
            done = subprocess.run([sys.executable, "-c", again, "saved.json"], cwd=repo, env=env,
                                  capture_output=True, text=True)
            return recorded(done)

        rows.append(("again, nothing changed", rerecord()))
        fill(repo, files, args.mb, only="results/paper/runs/morph2/coop/")
        rows.append(("again, one cell's runs rewritten (5 folds)", rerecord()))
        t0 = time.perf_counter()
        status = subprocess.run([sys.executable, "-m", "dvc", "status", "-q"], cwd=repo,
                                env={**os.environ, "PYTHONPATH": str(repo)})
        rows.append(("dvc status (whole record, afterwards)", time.perf_counter() - t0))
        sizes = {n: (repo / n).stat().st_size for n in ("dvc.yaml", "dvc.lock")}
        import yaml

        n_stages = len(yaml.safe_load((repo / "dvc.yaml").read_text())["stages"])
    lines = [f"Machine: {machine()}", "",
             f"Paper suite, results/table1.csv: {n_jobs} jobs, {len(files)} output files "
             f"({', '.join(f'{k} {v}' for k, v in sorted(rules.items()))}), "
             f"{n_stages} DVC stages, {written / 2**20:.0f} MB of stand-in outputs ({args.mb:g} MB per model.pt, "
             f"outputs.npz, image cache).", "",
             "| record | seconds |", "|---|---|"]
    lines += [f"| {what} | {s:.1f} |" for what, s in rows]
    lines += ["", f"dvc.yaml {sizes['dvc.yaml'] / 1024:.0f} KB, dvc.lock {sizes['dvc.lock'] / 1024:.0f} KB; "
                  f"dvc status exit {status.returncode}."]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text)


if __name__ == "__main__":
    main()
