"""End to end: a reduced demo suite through Snakemake in a temporary directory."""

import json
import math
import re
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

REDUCED = """
backbones:
  tiny_pretrained: {weights: {pretrain: {steps: 3, batch_size: 16, warmup: 1, corpus: {images: 64}}}}
datasets:
  counting: {per_rank: 8}
  fading: {per_rank: 10}
  blur: {per_rank: 10}
suites:
  demo:
    folds: 2
    ablations: {datasets: [counting], methods: [l2rclip_single_stage, numclip_plain_ce, ordinalclip_m1]}
    fewshot: {datasets: [counting], methods: [linear_probe, coop], shots: [1, 2]}
    tables:
      shift: {methods: [baseline, ordinalclip], shift: {top_classes: [2], keep_percent: [20]}}
      fewshot_levels: {datasets: [fading], methods: [linear_probe, numclip], shots: [1]}
      backbones: {methods: [zeroshot, coop]}
      prompts: {methods: [coop_tune_ctx, ordinalclip_m2_invprop]}
    overrides:
      baseline: {epochs: 2}
      coop_tune_ctx: {epochs: 2}
      ordinalclip_m2_invprop: {epochs: 2}
      coop: {epochs: 2}
      ordinalclip: {epochs: 2}
      ordinalclip_m1: {epochs: 2}
      l2rclip: {stage1: {epochs: 1}, stage2: {epochs: 1}}
      l2rclip_single_stage: {stage1: {epochs: 1}, stage2: {epochs: 1}}
      numclip: {epochs: 2}
      numclip_plain_ce: {epochs: 2}
  demo_random: {folds: 2, overrides: {coop: {epochs: 2}}}
"""
MORE_TABLES = ("shift", "fewshot_levels", "backbones", "ordinality", "prompts")
METHODS = {"zeroshot", "linear_probe", "coop", "ordinalclip", "l2rclip", "numclip"}


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
    assert counts["train"] == "54" and counts["cell"] == "18" and counts["table"] == "1"
    assert counts["default_table"] == "1"
    table3 = _snakemake(repo_copy, "-n", "results/table3.csv")
    counts = dict(re.findall(r"^(\w+)\s+(\d+)$", table3.stdout + table3.stderr, flags=re.M))
    assert counts["cell"] == "12" and counts["table"] == "1"


def test_paper_suite_plans_every_table_without_data(repo_copy):
    """`snakemake -n` plans every table of the paper suite (table1-3 and suites.paper.tables) with
    no data or weights present."""
    from ordclip.config import load_params, n_folds, table_spec

    params = load_params([repo_copy / "params.yaml"], {"suite": "paper"})
    names = ["table1", "table2", "table3", *params["suites"]["paper"]["tables"]]
    cells = {(s, d, m) for name in names for spec in [table_spec(params, "paper", name)]
             for s in spec["suites"] for d in spec["datasets"] for m in spec["methods"]}
    runs = sum(n_folds(params, s, d) for s, d, m in cells)
    proc = _snakemake(repo_copy, "-n", *(f"results/paper/{n}.csv" for n in names), "--config", "suite=paper")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    counts = dict(re.findall(r"^(\w+)\s+(\d+)$", proc.stdout + proc.stderr, flags=re.M))
    assert int(counts["cell"]) == len(cells) and int(counts["train"]) == runs
    assert counts["table"] == str(len(names))


def test_paper_suite_plans_every_cell_without_data(repo_copy):
    """`snakemake -n --config suite=paper` plans table1 and table2 with no data or weights present."""
    from ordclip.config import fewshot_datasets, load_params, n_folds

    params = load_params([repo_copy / "params.yaml"], {"suite": "paper"})
    s = params["suites"]["paper"]
    runs = sum(n_folds(params, "paper", d) for d in s["datasets"]) * len(s["methods"])
    runs += sum(n_folds(params, "paper", d) for d in fewshot_datasets(s)) * len(s["fewshot"]["methods"])
    proc = _snakemake(repo_copy, "-n", "results/table1.csv", "results/table2.csv", "--config", "suite=paper")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    counts = dict(re.findall(r"^(\w+)\s+(\d+)$", proc.stdout + proc.stderr, flags=re.M))
    assert int(counts["train"]) == runs and int(counts["evaluate"]) == runs
    assert int(counts["cell"]) == len(s["datasets"]) * len(s["methods"]) + len(fewshot_datasets(s)) * len(
        s["fewshot"]["methods"])
    assert counts["fetch"] == str(len(s["datasets"])) and counts["backbone"] == "1"
    assert counts["table"] == "2" and counts["default_table"] == "2"


@pytest.mark.slow
def test_reduced_demo_suite(repo_copy):
    (repo_copy / "reduced.yaml").write_text(REDUCED)
    args = ("results/table1.csv", "results/table2.csv", "results/table3.csv",
            *(f"results/demo/{name}.csv" for name in MORE_TABLES), "--cores", "2",
            "--configfile", "reduced.yaml")  # --configfile takes several values: targets first
    proc = _snakemake(repo_copy, *args)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    for name in ("table1", "table2", "table3"):  # the default suite's tables, copied to results/
        for ext in ("csv", "md"):
            assert (repo_copy / f"results/{name}.{ext}").read_bytes() == (
                repo_copy / f"results/demo/{name}.{ext}").read_bytes()
    assert json.loads((repo_copy / "results/demo/table1.metrics.json").read_text())["fading"]["coop"]["mae"] > 0
    curves = pd.read_csv(repo_copy / "results/demo/runs/blur/coop/fold1/curves.csv")
    assert list(curves.candidate) == [0, 1] and curves.val_mae.notna().all()
    table = pd.read_csv(repo_copy / "results/table1.csv")
    assert list(table.columns) == ["suite", "dataset", "method", "metric", "mean", "std", "n_folds", "n_runs",
                                   "ci_low", "ci_high", "var_fold", "var_seed", "device", "device_hours"]
    assert (repo_copy / "results/demo/table1.comparisons.csv").is_file()
    for metric in ("mae", "acc"):
        rows = table[table.metric == metric]
        assert len(rows) == 18 and set(rows.dataset) == {"counting", "fading", "blur"}
        assert set(rows.method) == METHODS
        assert all(math.isfinite(v) for v in rows["mean"]) and all(math.isfinite(v) for v in rows["std"])
    assert (table.n_folds == 2).all() and (table.suite == "demo").all()
    md = (repo_copy / "results/table1.md").read_text()
    assert "| ordinalclip |" in md and "counting MAE" in md

    log = (repo_copy / "logs/demo/train/blur/coop/fold1.log").read_text()
    assert "epoch 2/2" in log
    assert "image epoch 1/1" in (repo_copy / "logs/demo/train/blur/l2rclip/fold0.log").read_text()
    table3 = pd.read_csv(repo_copy / "results/table3.csv")
    assert set(table3.method) == {"l2rclip_single_stage", "numclip_plain_ce", "ordinalclip_m1"}
    assert table3[table3.metric == "mae"]["mean"].map(math.isfinite).all()
    assert "| numclip_plain_ce |" in (repo_copy / "results/table3.md").read_text()
    table2 = pd.read_csv(repo_copy / "results/table2.csv")
    assert set(table2.dataset) == {"counting-1shot", "counting-2shot"} and set(table2.method) == {"linear_probe", "coop"}
    split = pd.read_csv(repo_copy / "results/demo/splits/counting-2shot/fold1.csv")
    assert (split.split == "train").sum() == 2 * 10 and (split.split == "test").sum() == 10 * 2
    shift = pd.read_csv(repo_copy / "results/demo/shift.csv")
    assert set(shift.dataset) == {"counting-top2keep20"} and set(shift.method) == {"baseline", "ordinalclip"}
    split = pd.read_csv(repo_copy / "results/demo/splits/counting-top2keep20/fold0.csv")
    labels = pd.read_csv(repo_copy / "data/prepared/counting/36px/index.csv")
    train = labels.loc[split[split.split == "train"]["index"], "label"].value_counts().sort_index()
    full = pd.read_csv(repo_copy / "results/demo/splits/counting/fold0.csv")
    assert len(split[split.split == "test"]) == len(full[full.split == "test"])
    # 8 images per rank, 60 % train: 5 per rank; ranks 1 and 2 (a tie: the lowest) keep max(int(5 * 0.2), 1) = 1
    assert list(train) == [1, 1] + [5] * 8
    levels = pd.read_csv(repo_copy / "results/demo/fewshot_levels.csv")
    assert set(levels.dataset) == {"fading-1shot"} and levels[levels.metric == "mae"]["mean"].map(math.isfinite).all()
    study = pd.read_csv(repo_copy / "results/demo/backbones.csv")
    assert list(dict.fromkeys(study.suite)) == ["demo_random", "demo"] and set(study.dataset) == {"counting"}
    assert "(demo_random: tiny) MAE" in (repo_copy / "results/demo/backbones.md").read_text()
    assert "epoch 2/2" in (repo_copy / "logs/demo_random/train/counting/coop/fold1.log").read_text()
    ordinality = pd.read_csv(repo_copy / "results/demo/ordinality.csv")
    values = ordinality[ordinality.metric == "ordinality"].set_index("method")["mean"]
    assert set(values.index) == METHODS and values.between(0, 1).all()
    assert "counting Ordinality (%)" in (repo_copy / "results/demo/ordinality.md").read_text()
    prompts = pd.read_csv(repo_copy / "results/demo/prompts.csv")
    assert set(prompts.method) == {"coop_tune_ctx", "ordinalclip_m2_invprop"}
    assert "epoch 2/2" in (repo_copy / "logs/demo/train/counting/coop_tune_ctx/fold0.log").read_text()
    again = _snakemake(repo_copy, *args)
    assert again.returncode == 0 and "Nothing to be done" in again.stdout + again.stderr
    report = _snakemake(repo_copy, "results/table1.csv", "--report", "results/report.html",
                        "--configfile", "reduced.yaml")
    assert report.returncode == 0, report.stdout[-3000:] + report.stderr[-3000:]
    html = (repo_copy / "results/report.html").read_text()
    for figure in ("confusion", "mae_per_rank", "pred_vs_true", "curves", "prototype_similarity"):
        assert html.count(f"results/demo/cells/fading/numclip/{figure}.png") >= 1
        assert (repo_copy / f"results/demo/cells/blur/zeroshot/{figure}.png").read_bytes()[:4] == b"\x89PNG"
    assert html.count("Confusion matrix of <strong>coop</strong> on <strong>counting</strong>") == 1
    assert "Training curves of <strong>zeroshot</strong>" in html and "table1.md" in html
    for figure in ("samples", "curve"):  # the pretrained backbone's figures
        assert f"data/pretrain/tiny_pretrained/{figure}.png" in html


@pytest.mark.slow
def test_age_tables_on_files_laid_out_like_the_real_ones(repo_copy):
    """The paper suite's `morph_settings` (reduced to setting C) and `more_datasets` (CLAP2015,
    FG-NET) tables through Snakemake on the tiny backbone: a placed MORPH II archive with setting-C
    lists and CLAP2015's list downloaded from 127.0.0.1 (sha256-checked), a placed FG-NET zip
    (leave-one-person-out over its 4 subjects)."""
    import hashlib
    import shutil

    import yaml
    from local_http import serve
    from test_datasets import FGNET, clap_list, make_clap, make_fgnet, make_morph, write_setting_cd

    archive, names = make_morph(repo_copy, n=45)
    (repo_copy / "data/archives/morph2").mkdir(parents=True)
    shutil.move(archive, repo_copy / "data/archives/morph2/morph2.zip")
    www = repo_copy / "www"
    www.mkdir()
    write_setting_cd(www, "morph_C_0", [names[9 * k:9 * k + 9] for k in range(5)])
    (www / "total_2015.csv").write_text(clap_list(), newline="")
    make_clap(repo_copy / "data")  # data/archives/clap2015/images, where params.yaml has it
    make_fgnet(repo_copy)

    def sha(name):
        return hashlib.sha256((www / name).read_bytes()).hexdigest()

    with serve(www) as (url, requests):
        lists = {f"morph_C_0{k}": {"url": f"{url}/morph_C_0{k}.txt", "sha256": sha(f"morph_C_0{k}.txt")}
                 for k in range(5)}
        config = {
            "datasets": {
                "morph2_C": {"files": lists, "split": {"val": 0.2}},
                "clap2015": {"files": {"list": {"url": f"{url}/total_2015.csv", "sha256": sha("total_2015.csv")}}},
                "fgnet": {"split": {"folds": 4, "val": 0.5}},
            },
            "suites": {"paper": {"backbone": "tiny", "device": "cpu", "precision": "auto", "tables": {
                "morph_settings": {"datasets": ["morph2_C"], "methods": ["zeroshot", "linear_probe"]},
                "more_datasets": {"methods": ["zeroshot", "linear_probe"]}}}},
        }
        (repo_copy / "ages.yaml").write_text(yaml.safe_dump(config))
        proc = _snakemake(repo_copy, "results/paper/morph_settings.csv", "results/paper/more_datasets.csv",
                          "--cores", "2", "--configfile", "ages.yaml", "--config", "suite=paper")
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        assert sorted(requests) == sorted(["/total_2015.csv", *(f"/morph_C_0{k}.txt" for k in range(5))])
    settings = pd.read_csv(repo_copy / "results/paper/morph_settings.csv")
    assert set(settings.dataset) == {"morph2_C"} and (settings.n_folds == 5).all()
    more = pd.read_csv(repo_copy / "results/paper/more_datasets.csv")
    assert more.groupby("dataset")["n_folds"].max().to_dict() == {"clap2015": 1, "fgnet": 4}
    assert more[more.metric == "mae"]["mean"].map(math.isfinite).all()
    for k, subject in enumerate(sorted(FGNET)):  # leave-one-person-out: fold k tests on the k-th subject
        split = pd.read_csv(repo_copy / f"results/paper/splits/fgnet/fold{k}.csv")
        index = pd.read_csv(repo_copy / "data/prepared/fgnet/36px/index.csv")
        tested = {Path(p).name[:3] for p in index.loc[split[split.split == "test"]["index"], "path"]}
        assert tested == {subject}
    md = (repo_copy / "results/paper/more_datasets.md").read_text()
    assert md.startswith("# Apparent and real age: CLAP2015 and FG-NET") and "| linear_probe |" in md
