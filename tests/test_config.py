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
    (lambda p: p["suites"]["demo"]["overrides"]["coop"].update(epochs=-2),
     r"suites\.demo\.overrides\.coop \(merged over methods\.coop\)\.epochs: -2 is less than the minimum of 1"),
    (lambda p: p["suites"]["demo"].update(dataset_overrides={"blur": {"coop": {"scheduler": {"name": "multistep"}}}}),
     r"suites\.demo\.dataset_overrides\.blur\.coop \(merged over methods\.coop\)\.scheduler: .*milestones"),
    (lambda p: p["methods"]["coop"].update(scheduler={"name": "multistep"}), r"methods\.coop\.scheduler: 'milestones' is a required"),
    (lambda p: p["backbones"]["tiny"].update(resize=24), r"backbones\.tiny\.resize: 24 is below image_size 32"),
    (lambda p: p["datasets"]["counting"]["coarse"].update(starts=[1, 3, 3, 7, 9]),
     r"datasets\.counting\.coarse\.starts: \[1, 3, 3, 7, 9\] must be strictly increasing"),
    (lambda p: p["datasets"]["counting"]["coarse"].update(starts=[1, 3, 5, 7, 11]),
     r"datasets\.counting\.coarse\.starts: .*end at or below the top rank 10"),
    (lambda p: p["suites"]["demo"]["fewshot"]["methods"].append("coop2"),
     r"suites\.demo\.fewshot\.methods\[3\]: unknown method 'coop2'"),
    (lambda p: p["datasets"].update(faces={"kind": "csv", "csv": "x.csv"}), r"datasets\.faces: 'image_root' is a required"),
    (lambda p: p["suites"]["demo"]["tables"]["shift"]["methods"].append("coop3"),
     r"suites\.demo\.tables\.shift\.methods\[3\]: unknown method 'coop3'"),
    (lambda p: p["suites"]["demo"]["tables"]["backbones"]["suites"].append("demo_rnd"),
     r"suites\.demo\.tables\.backbones\.suites\[2\]: unknown suite 'demo_rnd'"),
    (lambda p: p["suites"]["demo"]["tables"]["shift"]["shift"].update(keep_percent=[100]),
     r"suites\.demo\.tables\.shift\.shift\.keep_percent\[0\]: 100 is greater than the maximum of 99"),
    (lambda p: p["suites"]["demo"]["tables"]["shift"].update(shots=[1]),
     r"suites\.demo\.tables\.shift: .* should not be valid"),
    (lambda p: p["suites"]["demo"]["tables"].update(table2={"title": "t", "datasets": ["blur"], "methods": ["coop"]}),
     r"suites\.demo\.tables: 'table2' should not be valid"),
    (lambda p: p["suites"]["demo"]["tables"]["shift"].update(metrics=["mse"]),
     r"suites\.demo\.tables\.shift\.metrics\[0\]: 'mse' is not one of"),
])
def test_bad_params_name_the_key(tmp_path, edit, message):
    with pytest.raises(ConfigError, match=message):
        load_params([_write(tmp_path, edit)])


def test_few_shot_variants_and_dataset_overrides(tmp_path):
    from ordclip.config import dataset_config, split_config

    extra = tmp_path / "extra.yaml"
    extra.write_text("suites: {demo: {dataset_overrides: {counting: {coop: {epochs: 7}}}}}\n")
    params = load_params([ROOT / "params.yaml", extra])
    ds = dataset_config(params, "counting-4shot")
    assert ds["name"] == "counting-4shot" and ds["data"] == "counting" and ds["shots"] == 4
    assert split_config(params, "demo", "counting-4shot")["shots"] == 4
    assert "shots" not in split_config(params, "demo", "counting")
    assert run_config(params, "demo", "counting-4shot", "coop")["method"]["epochs"] == 7   # the base's override
    assert run_config(params, "demo", "blur", "coop")["method"]["epochs"] == 12
    no_fewshot = {**params, "suites": {"demo": {**params["suites"]["demo"], "fewshot": None}}}
    with pytest.raises(ConfigError, match="'counting-4shot' is not in this suite"):
        run_config(no_fewshot, "demo", "counting-4shot", "coop")


def test_later_files_and_set_override(tmp_path):
    extra = tmp_path / "extra.yaml"
    extra.write_text("suites: {demo: {folds: 2}}\n")
    params = load_params([ROOT / "params.yaml", extra], {"seed": 5})
    assert params["suites"]["demo"]["folds"] == 2 and params["seed"] == 5
    assert params["suites"]["demo"]["backbone"] == "tiny_pretrained"


def test_cli_reports_config_errors_in_one_line(tmp_path):
    path = _write(tmp_path, lambda p: p["methods"]["coop"].update(optimizer="lion"))
    proc = subprocess.run([sys.executable, "-m", "ordclip", "cell", "--params", str(path), "--suite", "demo",
                           "--dataset", "blur", "--method", "coop"], capture_output=True, text=True)
    assert proc.returncode == 2
    assert "methods.coop.optimizer: 'lion' is not one of" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_table_specs_expand_variants_and_take_cells_from_their_suites():
    from ordclip.config import table_spec

    params = load_params([ROOT / "params.yaml"])
    shift = table_spec(params, "paper", "shift")
    assert shift["datasets"][:3] == ["morph2-top10keep20", "morph2-top10keep10", "morph2-top20keep20"]
    assert len(shift["datasets"]) == 8 and shift["suites"] == ["paper"] and shift["metrics"] == ["mae", "acc"]
    assert run_config(params, "paper", "morph2-top40keep10", "baseline")["dataset"]["shift"] == {
        "top_classes": 40, "keep_percent": 10}
    more = table_spec(params, "paper", "fewshot_more")
    assert "hci-64shot" in more["datasets"] and "aesthetics_urban-1shot" in more["datasets"]
    study = table_spec(params, "demo", "backbones")
    assert study["suites"] == ["demo_random", "demo"]
    assert table_spec(params, "demo", "table2")["datasets"] == ["counting-1shot", "counting-4shot", "counting-16shot"]
    with pytest.raises(ConfigError, match=r"suites\.demo: no table 'shfit' \(table1, table2, table3 or one of "
                                          r"suites\.demo\.tables: \['backbones', "):
        table_spec(params, "demo", "shfit")
    # a suite whose cells a study table of another suite reads runs that table's datasets and methods
    extra = {"suites": {"mine": {"backbone": "tiny", "datasets": ["blur"], "methods": ["zeroshot"], "folds": 2},
                        "demo": {"tables": {"study": {"title": "t", "datasets": ["fading"], "methods": ["coop"],
                                                      "suites": ["mine", "demo"]}}}}}
    from ordclip.config import deep_merge

    mine = load_params([ROOT / "params.yaml"], extra)
    assert run_config(mine, "mine", "fading", "coop")["backbone"]["name"] == "tiny"
    with pytest.raises(ConfigError, match="'fading' is not in this suite"):
        run_config(deep_merge(mine, {"suites": {"demo": {"tables": {"study": {"suites": ["demo"]}}}}}),
                   "mine", "fading", "coop")


def test_config_readme_describes_every_section_of_params_yaml():
    """config/README.md (the workflow catalog's configuration page) has a row per top-level section
    of the schema, and .snakemake-workflow-catalog.yml states a deployment method and the report."""
    import yaml as pyyaml

    readme = (ROOT / "config/README.md").read_text()
    schema = pyyaml.safe_load((ROOT / "workflow/schemas/params.schema.yaml").read_text())
    assert [s for s in schema["properties"] if f"| `{s}` |" not in readme] == []
    catalog = pyyaml.safe_load((ROOT / ".snakemake-workflow-catalog.yml").read_text())["usage"]
    assert any(catalog["software-stack-deployment"].values()) and catalog["report"] is True


def test_rule_inputs_are_named_functions():
    """No rule's input is a lambda: input functions live in workflow/rules/common.smk, by name."""
    import re

    for smk in sorted((ROOT / "workflow/rules").glob("*.smk")):
        blocks = re.findall(r"^    input:\n((?:        .*\n)+)", smk.read_text(), flags=re.M)
        assert not [b for b in blocks if "lambda" in b], smk.name
