import subprocess
import sys

import pytest
import yaml

from conftest import ROOT
from ordclip.config import load_params, run_config
from ordclip.errors import ConfigError


def _write(tmp_path, edit):
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    edit(params)
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump(params))
    return path


def test_repo_params_are_valid():
    params = load_params([ROOT / "params.yaml"])
    cfg = run_config(params, "demo", "counting", "ordinalclip")
    assert cfg["method"]["epochs"] == 12  # demo override merged over the official 100
    assert params["methods"]["ordinalclip"]["epochs"] == 100


@pytest.mark.parametrize("edit, message", [
    (lambda p: p["methods"]["coop"]["lr"].update(context=-1), r"methods\.coop\.lr\.context: -1 is less than"),
    (lambda p: p["suites"]["demo"].update(fold=3), r"suites\.demo: Additional properties are not allowed \('fold'"),
    (lambda p: p["suites"]["demo"]["datasets"].append("faces"), r"suites\.demo\.datasets\[3\]: unknown dataset 'faces'"),
    (lambda p: p["suites"]["demo"]["overrides"]["coop"].update(epoch=3),
     r"suites\.demo\.overrides\.coop\.epoch: not a parameter of this method"),
    (lambda p: p["suites"]["demo"]["overrides"].update(l2rclp={"n_ctx": 2}),
     r"suites\.demo\.overrides\.l2rclp: unknown method 'l2rclp'"),
    (lambda p: p["suites"]["demo"]["ablations"]["methods"].append("numclip_kl"),
     r"suites\.demo\.ablations\.methods\[12\]: unknown method 'numclip_kl'"),
    (lambda p: p["datasets"]["blur"].update(rank_names=["a", "b"]), r"datasets\.blur\.rank_names: 2 names for 5 ranks"),
    (lambda p: p.update(suite="paperz"), r"suite: unknown suite 'paperz'"),
])
def test_bad_params_name_the_key(tmp_path, edit, message):
    with pytest.raises(ConfigError, match=message):
        load_params([_write(tmp_path, edit)])


def test_later_files_and_set_override(tmp_path):
    extra = tmp_path / "extra.yaml"
    extra.write_text("suites: {demo: {folds: 2}}\n")
    params = load_params([ROOT / "params.yaml", extra], {"seed": 5})
    assert params["suites"]["demo"]["folds"] == 2 and params["seed"] == 5
    assert params["suites"]["demo"]["backbone"] == "tiny"


def test_cli_reports_config_errors_in_one_line(tmp_path):
    path = _write(tmp_path, lambda p: p["methods"]["coop"].update(optimizer="lion"))
    proc = subprocess.run([sys.executable, "-m", "ordclip", "cell", "--params", str(path), "--suite", "demo",
                           "--dataset", "blur", "--method", "coop"], capture_output=True, text=True)
    assert proc.returncode == 2
    assert "methods.coop.optimizer: 'lion' is not one of" in proc.stderr
    assert "Traceback" not in proc.stderr
