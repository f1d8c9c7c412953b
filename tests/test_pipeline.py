"""End to end: a reduced demo suite through Snakemake in a temporary directory."""

import math
import re
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

REDUCED = """
datasets:
  counting: {per_rank: 8}
  fading: {per_rank: 10}
  blur: {per_rank: 10}
suites:
  demo:
    folds: 2
    overrides:
      coop: {epochs: 2}
      ordinalclip: {epochs: 2}
"""


def _snakemake(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    return subprocess.run([sys.executable, "-m", "snakemake", *args], cwd=cwd, env=env,
                          capture_output=True, text=True)


def test_lint_is_clean(repo_copy):
    proc = _snakemake(repo_copy, "--lint")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Congratulations, your workflow is in a good condition!" in proc.stdout + proc.stderr


def test_dry_run_plans_every_cell(repo_copy):
    proc = _snakemake(repo_copy, "-n", "results/table1.csv")
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout + proc.stderr
    counts = dict(re.findall(r"^(\w+)\s+(\d+)$", out, flags=re.M))
    assert counts["train"] == "36" and counts["cell"] == "12" and counts["table"] == "1"


@pytest.mark.slow
def test_reduced_demo_suite(repo_copy):
    (repo_copy / "reduced.yaml").write_text(REDUCED)
    args = ("results/table1.csv", "--cores", "2", "--configfile", "reduced.yaml")  # --configfile takes several values
    proc = _snakemake(repo_copy, *args)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    table = pd.read_csv(repo_copy / "results/table1.csv")
    assert list(table.columns) == ["suite", "dataset", "method", "metric", "mean", "std", "n_folds"]
    for metric in ("mae", "acc"):
        rows = table[table.metric == metric]
        assert len(rows) == 12 and set(rows.dataset) == {"counting", "fading", "blur"}
        assert all(math.isfinite(v) for v in rows["mean"]) and all(math.isfinite(v) for v in rows["std"])
    assert (table.n_folds == 2).all() and (table.suite == "demo").all()
    md = (repo_copy / "results/table1.md").read_text()
    assert "| ordinalclip |" in md and "counting MAE" in md

    log = (repo_copy / "logs/demo/train/blur/coop/fold1.log").read_text()
    assert "epoch 2/2" in log
    again = _snakemake(repo_copy, *args)
    assert again.returncode == 0 and "Nothing to be done" in again.stdout + again.stderr
