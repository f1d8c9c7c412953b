"""dvc.yaml is the Snakemake DAG of results/table1.csv; dvc.lock records a run; `ordclip lineage`.

The sync tests compare every job of `snakemake -n --forceall -p results/table1.csv` with the
resolved dvc.yaml stages: same command (the rule's without its `> {log} 2>&1`), outputs and
input files. The slow test runs a reduced demo suite end to end and checks `dvc status`,
`dvc metrics show` and `ordclip lineage`.
"""

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from conftest import ROOT
from ordclip import layout
from ordclip.cli import main
from ordclip.errors import DataError
from ordclip.lineage import DvcCommitError, commit_targets, format_text, lineage, record_dvc, tracked_suite

WORKFLOW_FILES = ("Snakefile", "params.yaml", "dvc.yaml", ".dvcignore", ".gitignore")
GIT = ["git", "-c", "user.name=ordclip-test", "-c", "user.email=test@ordclip.invalid"]


def _env() -> dict:
    return {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
            "DVC_NO_ANALYTICS": "1"}


def _run(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(list(args), cwd=cwd, env=_env(), capture_output=True, text=True)


@pytest.fixture
def dvc_copy(tmp_path: Path) -> Path:
    """A git repository holding this checkout's workflow and DVC files (no data, results or cache)."""
    for name in WORKFLOW_FILES:
        shutil.copy(ROOT / name, tmp_path / name)
    shutil.copytree(ROOT / "workflow", tmp_path / "workflow")
    (tmp_path / ".dvc").mkdir()
    for name in ("config", ".gitignore"):
        shutil.copy(ROOT / ".dvc" / name, tmp_path / ".dvc" / name)
    for cmd in (["git", "init", "-q"], ["git", "add", "-A"], [*GIT, "commit", "-q", "-m", "workflow"]):
        subprocess.run(cmd, cwd=tmp_path, check=True, capture_output=True)
    return tmp_path


# --- the two definitions of the DAG -----------------------------------------------------------

def snakemake_jobs(workdir: Path, target: str = layout.TABLE1_CSV) -> dict[str, dict]:
    """Every job of the dry run, by rule and outputs: command without the log redirection, inputs."""
    proc = _run(workdir, sys.executable, "-m", "snakemake", "-n", "--forceall", "-p", target)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    blocks = re.findall(r"^(?:local)?rule (\w+):\n(.*?)^Shell command: (.*?)$", proc.stdout, flags=re.M | re.S)
    assert blocks, proc.stdout[-3000:]
    jobs = {}
    for rule, body, cmd in blocks:
        fields = dict(re.findall(r"^    (\w+): (.*)$", body, flags=re.M))
        suffix = f" > {fields['log']} 2>&1"
        assert cmd.endswith(suffix), f"rule {rule}: command does not end with the log redirection: {cmd}"
        job = {"name": f"rule {rule}", "cmd": cmd[: -len(suffix)], "outs": sorted(fields["output"].split(", ")),
               "deps": sorted(fields["input"].split(", ")) if "input" in fields else []}
        assert job["cmd"] not in jobs, f"two jobs run {job['cmd']!r}"
        jobs[job["cmd"]] = job
    return jobs


def dvc_stages(workdir: Path) -> dict[str, dict]:
    """Every resolved dvc.yaml stage, by command: outputs, input files, tracked params."""
    from dvc.dependency.param import ParamsDependency
    from dvc.repo import Repo

    stages = {}
    with Repo(str(workdir)) as repo:
        for stage in repo.index.stages:
            params = [p for d in stage.deps if isinstance(d, ParamsDependency) for p in d.params]
            deps = sorted(d.def_path for d in stage.deps if not isinstance(d, ParamsDependency))
            assert stage.cmd not in stages, f"two stages run {stage.cmd!r}"
            stages[stage.cmd] = {"name": f"stage {stage.name}", "cmd": stage.cmd,
                                 "outs": sorted(o.def_path for o in stage.outs), "deps": deps, "params": params}
    return stages


def _differences(smk: dict, dvc: dict) -> list[str]:
    problems = []
    for key in sorted(set(smk) | set(dvc)):
        a, b = smk.get(key), dvc.get(key)
        if b is None:
            problems.append(f"{a['name']}: no dvc.yaml stage runs {key!r} (outputs {a['outs']})")
        elif a is None:
            problems.append(f"{b['name']}: no Snakemake job runs {key!r} (outputs {b['outs']})")
        else:
            for field in ("outs", "deps"):
                if a[field] != b[field]:
                    only_smk = sorted(set(a[field]) - set(b[field]))
                    only_dvc = sorted(set(b[field]) - set(a[field]))
                    problems.append(f"{a['name']} / {b['name']}: {field} differ: only in the rule {only_smk}, "
                                    f"only in dvc.yaml {only_dvc}")
    return problems


def test_dvc_yaml_stages_equal_the_snakemake_jobs(dvc_copy):
    smk, dvc = snakemake_jobs(dvc_copy), dvc_stages(dvc_copy)
    problems = _differences(smk, dvc)
    assert not problems, (f"dvc.yaml and the Snakemake DAG of {layout.TABLE1_CSV} differ ({len(problems)}; "
                          f"edit dvc.yaml):\n  " + "\n  ".join(problems[:25]))
    assert len(dvc) == len(smk) > 100


def _exists(params: dict, key: str) -> bool:
    node = params
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return False
        node = node[part]
    return True


def _covered(key: str, tracked: list[str]) -> bool:
    return any(key == t or key.startswith(t + ".") for t in tracked)


def test_train_and_evaluate_stages_track_every_parameter_their_run_reads(dvc_copy):
    """`dvc params diff` explains a changed cell: each train stage tracks every params.yaml key
    that ordclip.config.run_config reads for its run (and evaluate those of its selection), and
    every tracked key exists."""
    params = yaml.safe_load((dvc_copy / "params.yaml").read_text())
    suite = tracked_suite(dvc_copy / "dvc.yaml")
    s = f"suites.{suite}"
    problems = []
    for stage in dvc_stages(dvc_copy).values():
        problems += [f"{stage['name']}: tracks {k}, which params.yaml lacks" for k in stage["params"]
                     if not _exists(params, k)]
        name = stage["name"].removeprefix("stage ")
        group, _, item = name.partition("@")
        if group in ("train", "train_features"):
            dataset, method, _fold = item.rsplit("-", 2)
            bb = params["suites"][suite]["backbone"]
            reads = ["seed", f"{s}.device", f"{s}.precision", f"{s}.backbone", f"{s}.overrides.{method}",
                     f"{s}.dataset_overrides.{dataset}.{method}", f"backbones.{bb}", f"datasets.{dataset}",
                     f"methods.{method}"]
        elif group == "evaluate":
            dataset, method, _fold = item.rsplit("-", 2)
            reads = [f"{prefix}.{key}" for key in ("select_on", "report")
                     for prefix in (f"methods.{method}", f"{s}.overrides.{method}",
                                    f"{s}.dataset_overrides.{dataset}.{method}")]
        else:
            continue
        problems += [f"{name}: does not track {k}" for k in reads
                     if _exists(params, k) and not _covered(k, stage["params"])]
    assert not problems, "edit the params of dvc.yaml:\n  " + "\n  ".join(problems[:25])


def test_the_run_files_are_outputs_of_the_train_rule_and_stage(dvc_copy):
    stages = dvc_stages(dvc_copy)
    run = layout.run_dir(tracked_suite(dvc_copy / "dvc.yaml"), "counting", "coop", 0)
    train = [s for s in stages.values() if f"{run}/model.pt" in s["outs"]]
    assert [s["name"] for s in train] == ["stage train@counting-coop-0"]
    assert train and set(train[0]["outs"]) == {f"{run}/{name}" for name in layout.RUN_TRAIN_FILES}
    assert "run.json" in layout.RUN_TRAIN_FILES


# --- recording: dvc commit after a run -----------------------------------------------------------

def test_commit_targets_name_whole_groups_only_when_complete():
    ready = ["backbone", "split@a-0", "split@a-1", "train@a-m-0"]
    other = ["train@a-m-1", "table"]
    assert commit_targets(ready, other) == ["backbone", "split", "train@a-m-0"]
    assert commit_targets(ready, []) == []


def test_no_dvc_folder_skips_with_a_message(repo_copy, capsys):
    config = yaml.safe_load((repo_copy / "params.yaml").read_text())
    assert record_dvc(config, [], root=repo_copy) is False
    assert "has no .dvc/ or dvc.yaml" in capsys.readouterr().err


def test_other_parameters_skip_with_one_line(dvc_copy, capsys):
    config = yaml.safe_load((dvc_copy / "params.yaml").read_text())
    config["suite"] = "paper"
    assert record_dvc(config, [], root=dvc_copy) is False
    err = capsys.readouterr().err
    assert "only recorded for the default suite" in err and len(err.strip().splitlines()) == 1
    config = yaml.safe_load((dvc_copy / "params.yaml").read_text())
    config["seed"] = 7
    assert record_dvc(config, [], root=dvc_copy) is False


MINI_DVC = """
vars:
  - tracked_suite: s
stages:
  make:
    matrix:
      n: [1, 2]
    cmd: echo ${item.n} > out${item.n}.txt
    params: [seed]
    outs:
      - out${item.n}.txt
  total:
    cmd: cat out1.txt out2.txt > total.json
    deps: [out1.txt, out2.txt]
    metrics:
      - total.json: {cache: false}
"""


@pytest.fixture
def mini_dvc(tmp_path: Path) -> Path:
    (tmp_path / "params.yaml").write_text("suite: s\nseed: 0\n")
    (tmp_path / "dvc.yaml").write_text(MINI_DVC)
    for cmd in (["git", "init", "-q"], [sys.executable, "-m", "dvc", "init", "-q"],
                [sys.executable, "-m", "dvc", "config", "core.analytics", "false"]):
        subprocess.run(cmd, cwd=tmp_path, check=True, capture_output=True, env=_env())
    return tmp_path


def test_record_commits_the_built_stages_only(mini_dvc, capsys):
    (mini_dvc / "out1.txt").write_text("1\n")
    (mini_dvc / "out2.txt").write_text("2\n")
    (mini_dvc / "total.json").write_text("3\n")
    assert record_dvc({"suite": "s", "seed": 0}, ["out1.txt", "./out2.txt"], root=mini_dvc)
    assert "dvc.lock records 2 stages (1 not built by this run)" in capsys.readouterr().err
    lock = yaml.safe_load((mini_dvc / "dvc.lock").read_text())
    assert set(lock["stages"]) == {"make@1", "make@2"}
    status = _run(mini_dvc, sys.executable, "-m", "dvc", "status", "make")
    assert "up to date" in status.stdout, status.stdout + status.stderr


def test_a_failing_dvc_is_loud_and_deletes_nothing(mini_dvc):
    (mini_dvc / "out1.txt").write_text("1\n")
    (mini_dvc / "dvc.lock").write_text("stages: [unclosed\n")
    with pytest.raises(DvcCommitError, match="DVC LINEAGE NOT RECORDED"):
        record_dvc({"suite": "s", "seed": 0}, ["out1.txt"], root=mini_dvc)
    assert (mini_dvc / "out1.txt").read_text() == "1\n"


# --- reading: ordclip lineage -------------------------------------------------------------------

def _md5(path: Path) -> str:
    import hashlib

    return hashlib.md5(path.read_bytes()).hexdigest()


def _fake_results(suite="s", dataset="d", method="m", folds=2, commit="c0ffee" * 6 + "abcd") -> dict:
    """A cell with its runs' files, a table holding it and an overall group, and a dvc.lock."""
    from ordclip.io import sha256_file

    lock = {"schema": "2.0", "stages": {}}
    for k in range(folds):
        run = Path(layout.run_dir(suite, dataset, method, k))
        run.mkdir(parents=True)
        for name in ("model.pt", "outputs.npz", "log.jsonl", "predictions.csv"):
            (run / name).write_text(f"{name} {k}\n")
        (run / "metrics.json").write_text(json.dumps({"test": {"mae": 1.0 + k, "acc": 0.5}}))
        (run / "run.json").write_text(json.dumps({
            "suite": suite, "dataset": dataset, "method": method, "fold": k, "seed": 0,
            "git": {"commit": commit, "dirty": False, "root": "/repo"}, "config_sha256": "f" * 64,
            "inputs": {"index": {"path": "i.csv", "sha256": "1" * 64}, "split": {"path": "s.csv", "sha256": "2" * 64},
                       "weights": {"path": "w.pt", "sha256": "3" * 64}, "images": {"path": "x.npy", "bytes": 9}},
            "outputs": {"model": {"path": str(run / "model.pt"), "sha256": sha256_file(run / "model.pt")}},
            "versions": {"torch": "2.x", "dvc": "3.x"}, "device": "cpu", "wall_seconds": 1.5,
        }))
        lock["stages"][f"train@{dataset}-{method}-{k}"] = {"cmd": "x", "outs": [
            {"path": str(run / n), "md5": _md5(run / n)} for n in ("model.pt", "outputs.npz", "log.jsonl", "run.json")]}
        lock["stages"][f"evaluate@{dataset}-{method}-{k}"] = {"cmd": "x", "outs": [
            {"path": str(run / n), "md5": _md5(run / n)} for n in ("metrics.json", "predictions.csv")]}
    cell = Path(layout.cell_file(suite, dataset, method))
    cell.parent.mkdir(parents=True)
    cell.write_text(json.dumps({"suite": suite, "dataset": dataset, "method": method, "folds": list(range(folds)),
                                "n_folds": folds, "metrics": {"mae": {"mean": 1.5, "std": 0.7, "values": [1, 2]}}}))
    lock["stages"][f"cell@{dataset}-{method}"] = {"cmd": "x", "outs": [{"path": str(cell), "md5": _md5(cell)}]}
    table = Path(layout.table_file("table1", "csv"))
    table.write_text("suite,dataset,method,metric,mean,std,n_folds\n"
                     f"{suite},{dataset},{method},mae,1.5,0.7,{folds}\n{suite},all,{method},mae,1.5,0.7,{folds}\n")
    Path("dvc.lock").write_text(yaml.safe_dump(lock))
    return {"suites": {suite: {"overall": {"all": [dataset]}}}}


def test_lineage_of_a_table_names_the_commit_of_every_run(in_tmp):
    params = _fake_results()
    result = lineage("results/table1.csv", params)
    assert [c["cell"] for c in result["cells"]] == ["results/s/cells/d/m.json"]
    runs = result["cells"][0]["runs"]
    assert [r["git"]["commit"] for r in runs] == ["c0ffee" * 6 + "abcd"] * 2
    assert all(c["status"] == "matches" for r in runs for c in r["dvc"]) and all(r["checkpoint"]["matches_file"]
                                                                                for r in runs)
    assert result["table"]["dvc"][0]["status"] == "not in dvc.lock"
    text = format_text(result)
    assert "code commits: " + "c0ffee" * 6 + "abcd: 2 run(s)" in text
    assert "fold 1: results/s/runs/d/m/fold1" in text and "mae 2  acc 0.5" in text and "(matches the file)" in text
    assert "train@d-m-0: model.pt matches" in text and "DIFFERS" not in text and "differs" not in text


def test_lineage_shows_a_file_changed_since_it_was_recorded(in_tmp):
    _fake_results()
    Path(layout.run_file("s", "d", "m", 1, "model.pt")).write_text("retrained\n")
    result = lineage(layout.cell_file("s", "d", "m"), None)
    run = result["cells"][0]["runs"][1]
    assert {c["path"].rsplit("/", 1)[1]: c["status"] for c in run["dvc"]}["model.pt"] == "differs"
    assert run["checkpoint"]["matches_file"] is False
    assert "model.pt sha256" in format_text(result) and "DIFFERS from the file" in format_text(result)


def test_lineage_without_dvc_lock_and_of_a_run_folder(in_tmp):
    _fake_results()
    Path("dvc.lock").unlink()
    result = lineage(layout.run_dir("s", "d", "m", 0), None)
    assert result["dvc_lock"] is None and result["runs"][0]["dvc"][0]["status"] == "no dvc.lock"
    assert "dvc.lock: none in this folder" in format_text(result)


def test_a_missing_file_is_named(in_tmp):
    _fake_results()
    Path(layout.run_file("s", "d", "m", 1, "run.json")).unlink()
    with pytest.raises(DataError, match=r"results/s/runs/d/m/fold1/run.json: not found \(the run was never trained\)"):
        lineage(layout.cell_file("s", "d", "m"), None)
    with pytest.raises(DataError, match="results/s/cells/d/zz.json: not found"):
        lineage("results/s/cells/d/zz.json", None)
    with pytest.raises(DataError, match="results/nope: not found"):
        lineage("results/nope", None)


def test_cli_prints_json(in_tmp, capsys):
    _fake_results()
    assert main(["lineage", "--json", layout.cell_file("s", "d", "m")]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["cells"][0]["runs"][0]["config_sha256"] == "f" * 64
    assert main(["lineage", "results/s/cells/d/none.json"]) == 2
    assert "results/s/cells/d/none.json: not found" in capsys.readouterr().err


# --- end to end ----------------------------------------------------------------------------------

REDUCED = {  # the demo grid (dvc.yaml's), tiny data and one epoch per stage
    "datasets": {"counting": {"per_rank": 8}, "fading": {"per_rank": 8}, "blur": {"per_rank": 8}},
    "suites": {"demo": {"overrides": {"coop": {"epochs": 1}, "ordinalclip": {"epochs": 1},
                                      "l2rclip": {"stage1": {"epochs": 1}, "stage2": {"epochs": 1}},
                                      "numclip": {"epochs": 1}}}},
}


@pytest.mark.slow
def test_a_run_leaves_dvc_clean_and_lineage_names_the_commit(dvc_copy):
    from ordclip.config import deep_merge
    from ordclip.runs import git_state

    params = yaml.safe_load((dvc_copy / "params.yaml").read_text())
    (dvc_copy / "params.yaml").write_text(yaml.safe_dump(deep_merge(params, REDUCED), sort_keys=False))
    subprocess.run([*GIT, "commit", "-q", "-am", "reduced demo"], cwd=dvc_copy, check=True)
    commit = git_state(dvc_copy)["commit"]
    code_commit = git_state(ROOT / "ordclip")["commit"]
    snakemake = [sys.executable, "-m", "snakemake", "--cores", "2"]

    cell = layout.cell_file("demo", "counting", "coop")          # one cell first: only its stages
    proc = _run(dvc_copy, *snakemake, cell)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "dvc lineage: dvc.lock records" in proc.stderr
    status = _run(dvc_copy, sys.executable, "-m", "dvc", "status", "--with-deps", "cell@counting-coop")
    assert "up to date" in status.stdout, status.stdout + status.stderr

    proc = _run(dvc_copy, *snakemake, layout.TABLE1_CSV)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    print(re.findall(r"^dvc lineage: .*$", proc.stderr, flags=re.M))
    t0 = time.time()
    status = _run(dvc_copy, sys.executable, "-m", "dvc", "status")
    print(f"dvc status: {time.time() - t0:.1f} s")
    assert status.returncode == 0 and "Data and pipelines are up to date." in status.stdout, status.stdout[-3000:]
    metrics = _run(dvc_copy, sys.executable, "-m", "dvc", "metrics", "show")
    assert metrics.returncode == 0 and cell in metrics.stdout, metrics.stdout[-3000:] + metrics.stderr

    proc = _run(dvc_copy, sys.executable, "-m", "ordclip", "lineage", layout.TABLE1_CSV)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count("\ncell demo/") == 18 and proc.stdout.count("  fold ") == 54
    assert len(re.findall(r"^    code       commit [0-9a-f]{40}", proc.stdout, flags=re.M)) == 54
    assert code_commit in proc.stdout  # the code's commit at the start (the checkout may move on during the run)
    assert proc.stdout.count(f"workdir    commit {commit}") == 54
    assert "differs" not in proc.stdout and "not in dvc.lock" not in proc.stdout
