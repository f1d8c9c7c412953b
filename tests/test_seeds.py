"""Seeds as a dimension of a suite (issue 21): a reduced suite with 2 seeds end to end, its table's
intervals, comparisons, variance shares and cost, the audit and lineage of its runs, and a change of
the seed count that plans only the new runs."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from ordclip import layout

SEEDS = """
datasets:
  counting: {per_rank: 8}
suites:
  demo_random:
    datasets: [counting]
    methods: [zeroshot, coop, ordinalclip]
    folds: 2
    seeds: 2
    overrides:                   # 2 steps an epoch; RAdam moves the parameters from its 6th step on
      coop: {epochs: 4}
      ordinalclip: {epochs: 4}
"""
TABLE = "results/demo_random/table1.csv"


def _snakemake(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    return subprocess.run([sys.executable, "-m", "snakemake", *args], cwd=cwd, env=env, capture_output=True, text=True)


def _ordclip(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ordclip", *args], cwd=cwd, capture_output=True, text=True)


def test_run_names_and_seed_configs():
    from ordclip.config import load_params, run_config
    from ordclip.errors import ConfigError
    from conftest import ROOT

    assert layout.run_name(0) == "fold0" and layout.run_name(2, 1) == "fold2-seed1"
    assert layout.parse_run("fold3") == (3, 0) and layout.parse_run("fold3-seed12") == (3, 12)
    assert re.fullmatch(layout.RUN_NAME, "fold0-seed1") and not re.fullmatch(layout.RUN_NAME, "fold0-seed0")
    params = load_params([ROOT / "params.yaml"])
    params["suites"]["demo"]["seeds"] = 3
    first, third = (run_config(params, "demo", "counting", "baseline", j) for j in (0, 2))
    assert "seed_index" not in first and third["seed_index"] == 2 and third["seed"] == first["seed"] + 2
    assert third["method"]["head_seed"] == first["method"]["head_seed"] + 2       # the head's initialisation too
    del params["suites"]["demo"]["seeds"]
    assert run_config(params, "demo", "counting", "baseline") == first       # one seed: as before seeds
    with pytest.raises(ConfigError, match="suites.demo.seeds: seed index 1 is not below 1"):
        run_config(params, "demo", "counting", "coop", 1)


@pytest.mark.slow
def test_two_seeds_end_to_end(repo_copy):
    (repo_copy / "seeds.yaml").write_text(SEEDS)
    proc = _snakemake(repo_copy, TABLE, "--cores", "2", "--configfile", "seeds.yaml")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    runs = repo_copy / "results/demo_random/runs/counting/coop"
    assert sorted(p.name for p in runs.iterdir()) == ["fold0", "fold0-seed1", "fold1", "fold1-seed1"]
    first, second = (json.loads((runs / n / "run.json").read_text()) for n in ("fold0", "fold0-seed1"))
    assert (first["seed"], first["seed_index"], second["seed"], second["seed_index"]) == (0, 0, 1, 1)
    a, b = (pd.read_csv(runs / n / "predictions.csv") for n in ("fold0", "fold0-seed1"))
    assert list(a["index"]) == list(b["index"])                   # the same split ...
    assert not a["pred_exp"].equals(b["pred_exp"])                # ... another initialisation and data order

    table = pd.read_csv(repo_copy / TABLE)
    mae = table[table.metric == "mae"].set_index("method")
    assert (mae.n_runs == 4).all() and (mae.n_folds == 2).all()
    assert ((mae.ci_low <= mae["mean"]) & (mae["mean"] <= mae.ci_high)).all()
    assert mae.loc["coop", "var_seed"] > 0 and mae.loc["zeroshot", "var_seed"] == 0   # zero-shot has no seed
    assert (mae.device == "cpu").all() and (mae.device_hours > 0).all()
    compared = pd.read_csv(repo_copy / "results/demo_random/table1.comparisons.csv")
    assert set(compared.metric) == {"mae", "acc"} and (compared.n == 4).all() and len(compared) == 4
    assert (compared.p_holm >= compared.p).all() and compared.p_boot.notna().all()
    md = (repo_copy / "results/demo_random/table1.md").read_text()
    assert "over 2 folds × 2 seeds = 4 runs" in md and "## Where the variance comes from" in md
    assert "## Training cost" in md and "CPU-hours (cpu)" in md and "**" in md

    audit = _ordclip(repo_copy, "audit", TABLE, "--params", "params.yaml", "--params", "seeds.yaml")
    assert audit.returncode == 0, audit.stdout + audit.stderr
    assert "3 cell(s), 12 run(s) checked" in audit.stdout
    lineage = _ordclip(repo_copy, "lineage", "results/demo_random/cells/counting/coop.json")
    assert lineage.returncode == 0 and "fold 0, seed 1: results/demo_random/runs/counting/coop/fold0-seed1" in lineage.stdout

    # a third seed plans the new runs only (and the cells and table they feed)
    (repo_copy / "seeds.yaml").write_text(SEEDS.replace("seeds: 2", "seeds: 3"))
    plan = _snakemake(repo_copy, "-n", TABLE, "--configfile", "seeds.yaml")
    assert plan.returncode == 0, plan.stderr[-3000:]
    counts = dict(re.findall(r"^(\w+)\s+(\d+)$", plan.stdout + plan.stderr, flags=re.M))
    assert counts["train"] == "6" and counts["evaluate"] == "6" and counts["cell"] == "3"
    planned = re.findall(r"runs/counting/\w+/(fold\d+[-\w]*)/model.pt", plan.stdout)
    assert planned and set(planned) == {"fold0-seed2", "fold1-seed2"}
