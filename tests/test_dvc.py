"""Lineage you can trust: code- and content-aware staleness, suites side by side, DVC's record of
every run (dvc.yaml + dvc.lock at the root, generated from the Snakemake DAG), `ordclip lineage` and
`ordclip audit`, and the record's resistance to DVC's own commands, kills and missing files.

One small suite is built once in a git + DVC repository that holds its own copy of the ordclip
package (PYTHONPATH), so a test can edit the code the jobs run without touching this checkout.
"""

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from conftest import ROOT
from ordclip.config import load_params
from ordclip.dvcstages import DvcCommitError, build_stages, clear_torn_rwlock, merge, record
from ordclip.jobs import code_files, code_hash, job_config, job_json

GIT = ["git", "-c", "user.name=ordclip-test", "-c", "user.email=test@ordclip.invalid"]
SMALL = """
datasets:
  fading: {per_rank: 8}
suites:
  demo:
    backbone: tiny          # the random backbone: no pretraining in these tests
    datasets: [fading]
    methods: [zeroshot, coop]
    folds: 2
    overrides:
      coop: {epochs: 1, batch_size: 4}  # 6 steps: the official RAdam skips the first 5
"""
MINE = """
suites:
  mine: {datasets: [fading], methods: [zeroshot, coop], folds: 2, backbone: tiny,
         overrides: {coop: {epochs: 1, batch_size: 4}}}
"""
TABLE = "results/table1.csv"


def _env(root: Path) -> dict:
    return {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
            "PYTHONPATH": str(root), "DVC_NO_ANALYTICS": "1"}


def _run(root: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(list(args), cwd=root, env=_env(root), capture_output=True, text=True)


def _snakemake(root: Path, *args: str) -> subprocess.CompletedProcess:
    return _run(root, sys.executable, "-m", "snakemake", *args)


def _dvc(root: Path, *args: str) -> subprocess.CompletedProcess:
    return _run(root, sys.executable, "-m", "dvc", *args)


def _planned(proc: subprocess.CompletedProcess) -> dict[str, int]:
    """Job counts per rule of a dry run ({} when there is nothing to do)."""
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return {k: int(v) for k, v in re.findall(r"^(\w+)\s+(\d+)$", proc.stdout + proc.stderr, flags=re.M)
            if k != "total"}


def _mtimes(root: Path, folder: str) -> dict[str, int]:
    return {str(p): p.stat().st_mtime_ns for p in sorted((root / folder).rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Path:
    """A git + DVC repository (workflow, params, its own ordclip package) with the small demo suite built."""
    root = tmp_path_factory.mktemp("lineage")
    for name in ("Snakefile", "params.yaml", ".dvcignore", ".gitignore"):
        shutil.copy(ROOT / name, root / name)
    for name in ("workflow", "ordclip", "profiles"):
        shutil.copytree(ROOT / name, root / name, ignore=shutil.ignore_patterns("__pycache__"))
    (root / ".dvc").mkdir()
    shutil.copy(ROOT / ".dvc" / "config", root / ".dvc" / "config")
    (root / "small.yaml").write_text(SMALL)
    for cmd in (["git", "init", "-q"], ["git", "add", "-A"], [*GIT, "commit", "-q", "-m", "workflow"]):
        subprocess.run(cmd, cwd=root, check=True, capture_output=True)
    proc = _snakemake(root, TABLE, "--cores", "2", "--configfile", "small.yaml")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "dvc lineage: recorded" in proc.stderr
    return root


def test_jobs_depend_on_content_not_on_files(tmp_path):
    """The same values from other files, in another order, give the same job; a value a job does not
    read leaves it alone; a value it reads changes it."""
    base = load_params([ROOT / "params.yaml"])
    keys = dict(suite="demo", dataset="fading", method="coop", fold=1)
    (tmp_path / "same.yaml").write_text("methods:\n  coop: {epochs: %d}\n" % base["methods"]["coop"]["epochs"])
    (tmp_path / "other.yaml").write_text("methods:\n  ordinalclip: {epochs: 99}\n")
    (tmp_path / "mine.yaml").write_text(MINE)
    job = job_json(job_config(base, "train", **keys))
    for files in (["same.yaml"], ["other.yaml", "mine.yaml"]):
        params = load_params([ROOT / "params.yaml", *(tmp_path / f for f in files)])
        assert job_json(job_config(params, "train", **keys)) == job
    (tmp_path / "lr.yaml").write_text("methods:\n  coop: {batch_size: 7}\n")
    assert job_json(job_config(load_params([ROOT / "params.yaml", tmp_path / "lr.yaml"]), "train", **keys)) != job


def test_the_code_of_a_job_is_what_its_verb_imports():
    params = load_params([ROOT / "params.yaml"])
    names = lambda verb, **k: {p.name for p in code_files(verb, job_config(params, verb, **k))}  # noqa: E731
    coop = names("train", suite="demo", dataset="fading", method="coop", fold=0)
    zeroshot = names("train", suite="demo", dataset="fading", method="zeroshot", fold=0)
    assert {"train.py", "coop.py", "losses.py", "ordclip-tiny.json"} <= coop and "zeroshot.py" not in coop
    assert "zeroshot.py" in zeroshot and "losses.py" not in zeroshot
    assert "published.yaml" in names("table", suite="demo", name="table1")
    assert "train.py" not in names("evaluate", suite="demo", dataset="fading", method="coop", fold=0)
    job = job_config(params, "split", suite="demo", dataset="fading", fold=0)
    assert code_hash("split", job) == code_hash("split", json.loads(job_json(job)))


def _stages(root: Path) -> dict:
    return yaml.safe_load((root / "dvc.yaml").read_text())["stages"]


def test_a_run_is_recorded_and_plans_nothing_more(built):
    assert _planned(_snakemake(built, "-n", TABLE, "--configfile", "small.yaml")) == {}
    status = _dvc(built, "status")
    assert "up to date" in status.stdout, status.stdout + status.stderr
    stages = _stages(built)
    cell = stages["cell-demo-fading-coop"]
    assert cell["cmd"] == "snakemake --cores all results/demo/cells/fading/coop.json --configfile small.yaml"
    assert {"lineage/code/train-coop.json", "lineage/code/evaluate.json", "lineage/code/cell.json",
            "results/demo/splits/fading", "data/weights/tiny.pt"} <= set(cell["deps"])
    assert cell["outs"] == ["results/demo/cells/fading/coop", "results/demo/runs/fading/coop"]
    assert cell["metrics"] == ["results/demo/cells/fading/coop.json"]
    assert {"methods.coop", "suites.demo.overrides.coop", "seed"} <= {p for p in cell["params"] if isinstance(p, str)}
    assert {"small.yaml": ["datasets.fading", "suites.demo.backbone", "suites.demo.folds",
                           "suites.demo.overrides.coop"]} in cell["params"]
    assert "ordclip/losses.py" in stages["code-train-coop"]["deps"]
    assert {"generate-fading", "prepare-fading-36", "backbone-tiny", "split-demo-fading", "embed-demo-fading",
            "cell-demo-fading-zeroshot", "table-demo-table1", "results-table1"} <= set(stages)
    # DVC's commands from the root, as its docs show them
    listed = _dvc(built, "stage", "list", "--name-only")
    assert listed.returncode == 0 and "cell-demo-fading-coop" in listed.stdout.split(), listed.stdout + listed.stderr
    metrics = _dvc(built, "metrics", "show", "--json")
    assert "results/demo/cells/fading/coop.json" in metrics.stdout, metrics.stdout + metrics.stderr
    # A table's summary is a metric of its stage: one readable row per table.
    assert stages["table-demo-table1"]["metrics"] == ["results/demo/table1.metrics.json"]
    table = _dvc(built, "metrics", "show", "--json", "results/demo/table1.metrics.json")
    (workspace,) = json.loads(table.stdout).values()
    assert list(workspace["data"]) == ["results/demo/table1.metrics.json"], table.stdout + table.stderr
    assert workspace["data"]["results/demo/table1.metrics.json"]["data"], table.stdout
    for cmd in (["dag"], ["params", "diff"], ["plots", "show", "-o", "plots"], ["repro", "cell-demo-fading-coop"]):
        proc = _dvc(built, *cmd)
        assert proc.returncode == 0, (cmd, proc.stdout[-2000:], proc.stderr[-2000:])
    assert "cell-demo-fading-coop" in _dvc(built, "dag").stdout
    assert "didn't change, skipping" in _dvc(built, "repro", "cell-demo-fading-coop").stdout
    assert (built / "dvc.yaml").stat().st_size + (built / "dvc.lock").stat().st_size < 100_000
    # a params file that changes nothing a job reads, with an unrelated suite, plans nothing
    (built / "same.yaml").write_text("suites:\n  demo: {overrides: {coop: {epochs: 1, batch_size: 4}}}\n" + MINE)
    assert _planned(_snakemake(built, "-n", TABLE, "--configfile", "small.yaml", "same.yaml")) == {}
    # a value a job reads plans exactly its jobs and what follows from them
    (built / "lr.yaml").write_text("suites:\n  demo: {overrides: {coop: {lr: {context: 0.01}}}}\n")
    planned = _planned(_snakemake(built, "-n", TABLE, "--configfile", "small.yaml", "lr.yaml"))
    assert planned == {"train": 2, "evaluate": 2, "cell": 1, "table": 1, "default_table": 1}


def test_a_code_edit_marks_exactly_its_runs_stale_and_undoing_it_restores_them(built):
    losses = built / "ordclip" / "losses.py"
    original = losses.read_bytes()
    try:
        losses.write_bytes(original + b"\n# an edit\n")
        planned = _planned(_snakemake(built, "-n", TABLE, "--configfile", "small.yaml"))
        assert planned == {"train": 2, "evaluate": 2, "cell": 1, "table": 1, "default_table": 1}
        status = _dvc(built, "status", "--json")
        changed = json.loads(status.stdout)
        assert list(changed) == ["code-train-coop"], status.stdout
        assert changed["code-train-coop"] == [{"changed deps": {"ordclip/losses.py": "modified"}}]
    finally:
        losses.write_bytes(original)
    assert _planned(_snakemake(built, "-n", TABLE, "--configfile", "small.yaml")) == {}
    assert "up to date" in _dvc(built, "status").stdout


def test_dvc_commit_and_checkout_plan_nothing(built):
    """DVC rewrites files it checks out (and, with -f, every output it commits): with the same
    content Snakemake plans nothing (its recorded checksums; profiles max-checksum-file-size)."""
    assert _dvc(built, "commit", "-f", "-q").returncode == 0
    assert _planned(_snakemake(built, "-n", TABLE, "--configfile", "small.yaml")) == {}
    for rel in ("results/demo/runs/fading/coop/fold0/model.pt", "data/prepared/fading/36px/images.npy",
                "results/demo/cells/fading/coop.json"):
        (built / rel).unlink()
    proc = _dvc(built, "checkout")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert _planned(_snakemake(built, "-n", TABLE, "--configfile", "small.yaml")) == {}
    assert "up to date" in _dvc(built, "status").stdout


def test_a_second_suite_builds_beside_the_demo_without_touching_it(built):
    (built / "mine.yaml").write_text(MINE)
    before = {**_mtimes(built, "results/demo"), **_mtimes(built, "data")}
    table = (built / TABLE).read_bytes()
    lock_before = yaml.safe_load((built / "dvc.lock").read_text())["stages"]
    demo_before = {k: v for k, v in _stages(built).items() if "-demo-" in k}
    proc = _snakemake(built, "results/mine/table1.csv", "--cores", "2", "--configfile", "small.yaml", "mine.yaml")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "suite=demo" not in proc.stdout + proc.stderr
    assert {**_mtimes(built, "results/demo"), **_mtimes(built, "data")} == before
    assert (built / TABLE).read_bytes() == table
    assert (built / "results/mine/table1.csv").is_file()
    status = _dvc(built, "status")
    assert "up to date" in status.stdout, status.stdout + status.stderr
    assert {k: v for k, v in _stages(built).items() if "-demo-" in k} == demo_before
    lock = yaml.safe_load((built / "dvc.lock").read_text())["stages"]
    assert {k: lock[k] for k in demo_before} == {k: lock_before[k] for k in demo_before}
    assert "cell-mine-fading-coop" in lock
    shown = _dvc(built, "metrics", "show", "--json").stdout
    assert "results/demo/cells/fading/coop.json" in shown and "results/mine/cells/fading/coop.json" in shown
    # the demo, planned again with its own parameters, is still current
    assert _planned(_snakemake(built, "-n", TABLE, "--configfile", "small.yaml")) == {}


def test_lineage_and_audit(built):
    lin = _run(built, sys.executable, "-m", "ordclip", "lineage", TABLE, "--params", "params.yaml",
               "--params", "small.yaml")
    assert lin.returncode == 0, lin.stderr
    assert lin.stdout.count("ordclip code sha256 ") == 4 and "dvc.lock: cell-demo-fading-coop: model.pt matches" in lin.stdout
    audit = ("audit", "results/demo/table1.csv", "--params", "params.yaml", "--params", "small.yaml")
    ok = _run(built, sys.executable, "-m", "ordclip", *audit)
    assert ok.returncode == 0 and "audit: OK" in ok.stdout, ok.stdout + ok.stderr
    run0, run1 = (built / f"results/demo/runs/fading/coop/fold{k}" for k in (0, 1))

    def tampered(path: Path, change) -> str:
        saved = path.read_bytes()
        try:
            change()
            proc = _run(built, sys.executable, "-m", "ordclip", *audit)
            assert proc.returncode == 1, proc.stdout + proc.stderr
            return proc.stdout
        finally:
            path.write_bytes(saved)

    def more_logits():
        arrays = dict(np.load(run0 / "outputs.npz"))
        arrays["test_logits"] = -arrays["test_logits"]  # other predictions (a shift would not change them)
        with open(run0 / "outputs.npz", "wb") as f:
            np.savez(f, **arrays)

    out = tampered(run0 / "outputs.npz", more_logits)
    assert f"MISMATCH {run0.relative_to(built)}/outputs.npz: sha256 differs" in out
    assert f"{run0.relative_to(built)}/metrics.json: differs from the metrics re-derived" in out
    out = tampered(run0 / "model.pt", lambda: shutil.copy(run1 / "model.pt", run0 / "model.pt"))
    assert f"{run0.relative_to(built)}/model.pt: reloaded, it gives other test logits" in out

    def edit_metrics():
        metrics = json.loads((run1 / "metrics.json").read_text())
        metrics["test"]["mae"] += 0.01
        (run1 / "metrics.json").write_text(json.dumps(metrics))

    out = tampered(run1 / "metrics.json", edit_metrics)
    assert f"{run1.relative_to(built)}/metrics.json: differs from the metrics re-derived" in out
    assert "results/demo/cells/fading/coop.json: differs from the statistics of its runs" in out
    assert _run(built, sys.executable, "-m", "ordclip", *audit).returncode == 0


def test_lineage_and_audit_of_a_table_over_suites(built, tmp_path):
    """A table of suite demo that shows suite mine's cells beside its own (a backbone study):
    lineage lists the cells of both, audit re-derives it and names a cell of the other suite.
    On a copy of the module's repository, whose last record the tests after this one replay."""
    shutil.copytree(built, tmp_path / "copy")
    built = tmp_path / "copy"
    (built / "mine.yaml").write_text(MINE)
    (built / "study.yaml").write_text(
        "suites: {demo: {tables: {study: {title: Study, datasets: [fading], methods: [zeroshot, coop], "
        "suites: [mine, demo]}}}}\n")
    files = ("small.yaml", "mine.yaml", "study.yaml")
    proc = _snakemake(built, "results/demo/study.csv", "--cores", "2", "--configfile", *files)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    params = [a for f in ("params.yaml", *files) for a in ("--params", f)]
    lin = _run(built, sys.executable, "-m", "ordclip", "lineage", "results/demo/study.csv", *params)
    assert lin.returncode == 0, lin.stderr
    assert "results/mine/cells/fading/coop.json" in lin.stdout and "results/demo/cells/fading/coop.json" in lin.stdout
    audit = ("audit", "results/demo/study.csv", *params)
    ok = _run(built, sys.executable, "-m", "ordclip", *audit)
    assert ok.returncode == 0 and "4 cell(s)" in ok.stdout and "audit: OK" in ok.stdout, ok.stdout + ok.stderr
    cell = built / "results/mine/cells/fading/coop.json"
    saved = cell.read_bytes()
    try:
        data = json.loads(saved)
        data["metrics"]["mae"]["mean"] += 0.01
        cell.write_text(json.dumps(data))
        bad = _run(built, sys.executable, "-m", "ordclip", *audit)
        assert bad.returncode == 1 and "results/mine/cells/fading/coop.json: differs from the statistics of its runs" in bad.stdout
        assert "results/demo/study.csv: differs from the table rebuilt from its cells" in bad.stdout
    finally:
        cell.write_bytes(saved)


def test_push_then_pull_elsewhere_rebuilds_a_suite_without_training(built, tmp_path):
    """For the non-default suite `mine` (built by the test above, or here)."""
    (built / "mine.yaml").write_text(MINE)
    target = ("results/mine/table1.csv", "--configfile", "small.yaml", "mine.yaml")
    assert _snakemake(built, *target, "--cores", "2").returncode == 0
    remote = tmp_path / "remote"
    for cmd in (["remote", "add", "-d", "shared", str(remote)], ["push", "-q"]):
        proc = _dvc(built, *cmd)
        assert proc.returncode == 0, proc.stdout + proc.stderr
    for cmd in (["git", "add", "-A"], [*GIT, "commit", "-q", "-m", "results of mine"]):
        subprocess.run(cmd, cwd=built, check=True, capture_output=True)
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(built), str(clone)], check=True, capture_output=True)
    pulled = _dvc(clone, "pull", "-q")
    assert pulled.returncode == 0, pulled.stdout + pulled.stderr
    assert (clone / "results/mine/runs/fading/coop/fold1/model.pt").is_file()
    touch = _snakemake(clone, *target, "--touch", "--cores", "1")
    assert touch.returncode == 0, touch.stdout[-3000:] + touch.stderr[-3000:]
    assert _planned(_snakemake(clone, "-n", *target)) == {}
    for name in ("table1.csv", "table1.md", "table1.metrics.json"):
        (clone / "results/mine" / name).unlink()
    shutil.rmtree(clone / "results/mine/cells")
    proc = _snakemake(clone, *target, "--cores", "2")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    rules = set(re.findall(r"^(?:local)?rule (\w+):", proc.stdout + proc.stderr, flags=re.M))
    assert rules == {"cell", "table"}, proc.stdout + proc.stderr
    assert (clone / "results/mine/table1.csv").read_bytes() == (built / "results/mine/table1.csv").read_bytes()
    assert "up to date" in _dvc(clone, "status").stdout


def test_no_dvc_folder_skips_with_a_message(tmp_path, capsys):
    assert not record([{"rule": "train"}], root=tmp_path)
    assert "has no .dvc/" in capsys.readouterr().err


def test_a_failing_record_is_loud_deletes_nothing_and_keeps_the_old_record(built, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(built, copy, ignore=shutil.ignore_patterns("cache"))
    (copy / "dvc.lock").write_text("stages: [unclosed\n")
    jobs = [{"rule": "table", "wildcards": {"suite": "demo", "name": "table1"},
             "input": [], "output": ["results/demo/table1.csv"],
             "params": {"job": job_json({"suite": "demo", "name": "table1", "backbone": "tiny", "datasets": [],
                                         "methods": [], "overall": {}}), "code": "x"}}]
    before = (copy / "results/demo/table1.csv").read_bytes()
    dvc_yaml = (copy / "dvc.yaml").read_bytes()
    with pytest.raises(DvcCommitError, match="DVC LINEAGE NOT RECORDED"):
        record(jobs, root=copy, configfiles=["params.yaml", "small.yaml"])
    assert (copy / "results/demo/table1.csv").read_bytes() == before
    assert (copy / "dvc.yaml").read_bytes() == dvc_yaml


def test_a_missing_or_damaged_file_is_rebuilt_by_the_same_command(built, tmp_path):
    """Snakemake alone leaves a deleted intermediate deleted while the table is up to date; the
    repair count in each job's params (ordclip/repair.py) makes the README's command rebuild it.
    On a copy of the module's repository: the retrain changes the cell's training cost, which the
    tests after this one must not see."""
    shutil.copytree(built, tmp_path / "copy")
    built = tmp_path / "copy"
    run0, run1 = (built / f"results/demo/runs/fading/coop/fold{k}" for k in (0, 1))
    cell = built / "results/demo/cells/fading/zeroshot.json"
    model, metrics = (run0 / "model.pt").read_bytes(), (run1 / "metrics.json").read_bytes()
    (run0 / "model.pt").unlink()
    (run1 / "metrics.json").unlink()
    cell.unlink()
    with open(run1 / "outputs.npz", "r+b") as f:
        f.truncate(100)
    proc = _snakemake(built, TABLE, "--cores", "2", "--configfile", "small.yaml")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    err = proc.stdout + proc.stderr
    assert f"{run0.relative_to(built)}/model.pt (missing): the job runs again" in err
    assert f"{run1.relative_to(built)}/outputs.npz (size 100, recorded" in err
    assert (run0 / "model.pt").read_bytes() == model and (run1 / "metrics.json").read_bytes() == metrics
    assert cell.is_file()
    assert _planned(_snakemake(built, "-n", TABLE, "--configfile", "small.yaml")) == {}
    assert "up to date" in _dvc(built, "status").stdout


def test_an_edited_table_value_is_named_by_the_audit(built):
    audit = ("audit", TABLE, "--params", "params.yaml", "--params", "small.yaml", "--sample", "0")
    table = built / TABLE
    saved = table.read_bytes()
    try:
        df = __import__("pandas").read_csv(table)
        df.loc[(df.method == "coop") & (df.metric == "mae"), "mean"] += 0.5
        df.to_csv(table, index=False)
        proc = _run(built, sys.executable, "-m", "ordclip", *audit)
        assert proc.returncode == 1
        assert ("differs from the table rebuilt from its cells: mean of (suite demo, dataset fading, method coop, "
                "metric mae)") in proc.stdout, proc.stdout
    finally:
        table.write_bytes(saved)
    md = built / "results/demo/table1.md"
    saved = md.read_bytes()
    try:
        md.write_text(saved.decode().replace("coop", "CoOp", 1))
        proc = _run(built, sys.executable, "-m", "ordclip", *audit)
        assert "results/demo/table1.md: differs from the md rebuilt from its cells (first at line" in proc.stdout
        assert "results/table1.md: is not a copy of results/demo/table1.md" in proc.stdout, proc.stdout
    finally:
        md.write_bytes(saved)
    assert _run(built, sys.executable, "-m", "ordclip", *audit).returncode == 0


@pytest.mark.faults
@pytest.mark.slow
def test_a_kill_during_the_record_keeps_a_valid_record_and_the_next_run_records(built, tmp_path):
    """kill -9 at seeded random points of a record: dvc.yaml/dvc.lock are the old pair or the new
    one, no temporary is left beside them or in results/, and the next snakemake (here a dry run)
    completes the record."""
    import random
    import time

    copy = tmp_path / "copy"
    shutil.copytree(built, copy)
    # the demo table's record is the last one (other tests of the module record other suites' tables)
    again = _snakemake(copy, TABLE, "--cores", "2", "--configfile", "small.yaml", "--forcerun", "table")
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    last = copy / ".dvc/tmp/ordclip/last.json"
    saved = json.loads(last.read_text())
    (copy / "same.yaml").write_text("seed: 0\n")
    script = ("import json, sys; from ordclip.dvcstages import record; s = json.load(open(sys.argv[1])); "
              "record(s['jobs'], '.', ['params.yaml', 'small.yaml', 'same.yaml'], s['config'])")
    (copy / "saved.json").write_text(json.dumps(saved))
    old = {n: (copy / n).read_bytes() for n in ("dvc.yaml", "dvc.lock")}

    def workspace():
        return sorted(str(p.relative_to(copy)) for p in copy.rglob("*")
                      if ".dvc" not in p.parts and ".snakemake" not in p.parts and ".git" not in p.parts)

    files = workspace()
    t0 = time.time()
    full = _run(copy, sys.executable, "-c", script, "saved.json")
    took = time.time() - t0
    assert full.returncode == 0, full.stderr
    new = {n: (copy / n).read_bytes() for n in ("dvc.yaml", "dvc.lock")}
    assert new != old
    rng = random.Random(0)
    for _ in range(6):
        for n, data in old.items():
            (copy / n).write_bytes(data)
        proc = subprocess.Popen([sys.executable, "-c", script, "saved.json"], cwd=copy, env=_env(copy),
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(rng.uniform(0.1, took))
        proc.kill()
        proc.wait()
        now = {n: (copy / n).read_bytes() for n in ("dvc.yaml", "dvc.lock")}
        assert now in (old, new)
        assert workspace() == files
        plan = _snakemake(copy, "-n", TABLE, "--configfile", "small.yaml", "same.yaml")
        assert plan.returncode == 0, plan.stderr[-3000:]
        assert {n: (copy / n).read_bytes() for n in ("dvc.yaml", "dvc.lock")} in (old, new)
        assert not (copy / ".dvc/tmp/ordclip/pending.json").exists()
        assert "up to date" in _dvc(copy, "status").stdout


def test_the_audit_compares_a_1_fold_table_and_names_the_value_that_differs():
    import pandas as pd

    from ordclip.audit import _first_difference, _same

    nan = float("nan")
    assert _same(nan, nan) and not _same(nan, 0.1) and _same({"std": nan}, {"std": nan})
    keys = ["suite", "dataset", "method", "metric"]
    table = pd.DataFrame([{"suite": "s", "dataset": "d", "method": "m", "metric": "mae", "mean": 0.5, "std": nan,
                           "n_folds": 1}])
    assert _first_difference(table, table.copy(), keys) is None
    edited = table.copy()
    edited.loc[0, "mean"] = 0.6
    assert _first_difference(table, edited, keys) == ("mean of (suite s, dataset d, method m, metric mae) is 0.6, "
                                                      "rebuilt from the cells: 0.5")


def test_lineage_of_a_missing_or_damaged_file_advises_a_command_that_builds_it(tmp_path):
    from ordclip.errors import DataError
    from ordclip.lineage import cell_lineage, run_lineage

    run = tmp_path / "results/mine/runs/faces/coop/fold0"
    with pytest.raises(DataError, match=r"run.json: not found \(the run was never trained\); build it with "
                                        r"`snakemake --cores all .*run.json`, adding the --configfile options"):
        run_lineage(run, None)
    cell = tmp_path / "coop.json"
    cell.write_text('{"runs": [')
    with pytest.raises(DataError, match=r"coop.json: not valid JSON: .*; delete it and build it again with "
                                        r"`snakemake --cores all .*coop.json`"):
        cell_lineage(cell, None)


def test_stage_names_that_would_stand_for_two_units_are_an_error_and_runs_are_superseded_by_their_own_cell():
    def job(suite, dataset, method, run="fold0"):
        return {"rule": "train", "wildcards": {"suite": suite, "dataset": dataset, "method": method, "run": run},
                "input": [], "output": [f"results/{suite}/runs/{dataset}/{method}/{run}/model.pt"], "params": {}}

    with pytest.raises(DvcCommitError, match=r"DVC stage name 'run-a-b-c-m-0' would stand for both "
                                             r"\('run', 'a-b', 'c', 'm', '0'\) and \('run', 'a', 'b-c', 'm', '0'\)"):
        build_stages([job("a-b", "c", "m"), job("a", "b-c", "m")], {}, {}, "")
    old = {"stages": {"run-demo-d-coop-0": {}, "run-demo-d-coop-1-seed2": {}, "run-demo-d-coop-x-0": {},
                      "run-demo-d-coop-x-1-seed1": {}}}
    assert list(merge(old, {"cell-demo-d-coop": {}}, [])["stages"]) == [
        "run-demo-d-coop-x-0", "run-demo-d-coop-x-1-seed1", "cell-demo-d-coop"]


def test_an_rwlock_cut_by_a_kill_is_removed_and_a_whole_one_kept(tmp_path, capsys):
    """DVC truncates .dvc/tmp/rwlock before it writes it again: a kill of the record in between left it
    empty, and the next run's recovery then failed with DVC's RWLockFileCorruptedError (seen on a
    fresh clone's test run)."""
    rwlock = tmp_path / ".dvc" / "tmp" / "rwlock"
    rwlock.parent.mkdir(parents=True)
    assert not clear_torn_rwlock(tmp_path)
    rwlock.write_text('{"read": {}, "write": {}}')
    assert not clear_torn_rwlock(tmp_path) and rwlock.is_file()
    for torn in ("", '{"read": {"a": [{"pid"'):
        rwlock.write_text(torn)
        assert clear_torn_rwlock(tmp_path) and not rwlock.exists()
    assert "rwlock was cut by the kill of an earlier record" in capsys.readouterr().err
