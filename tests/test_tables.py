"""Cells, overall groups and the published numbers beside ours."""

import json
from pathlib import Path

import pandas as pd
import pytest

from conftest import ROOT

from ordclip import layout
from ordclip.errors import ConfigError
from ordclip.tables import comparison, published, read_cells


def _cell(suite, dataset, method, mae, acc):
    path = Path(layout.cell_file(suite, dataset, method))
    path.parent.mkdir(parents=True, exist_ok=True)
    metrics = {}
    for name, values in (("mae", mae), ("acc", acc), ("mae_test_selected", mae), ("acc_test_selected", acc)):
        metrics[name] = {"mean": sum(values) / len(values), "std": None, "values": values}
    path.write_text(json.dumps({"n_folds": len(mae), "metrics": metrics}))


def test_overall_is_the_mean_of_the_members_per_fold(in_tmp):
    _cell("s", "a", "m", [1.0, 3.0], [0.5, 0.7])
    _cell("s", "b", "m", [2.0, 6.0], [0.1, 0.3])
    df = read_cells("s", ["a", "b"], ["m"], {"both": ["a", "b"], "absent": ["a", "zzz"]})
    assert set(df.dataset) == {"a", "b", "both"}
    mae = df[(df.dataset == "both") & (df.metric == "mae")].iloc[0]
    # per fold: (1+2)/2 = 1.5 and (3+6)/2 = 4.5 -> mean 3.0, sample std sqrt(((1.5)^2*2)/1) = 2.1213
    assert mae["mean"] == pytest.approx(3.0) and mae["std"] == pytest.approx(2.1213203)


def test_a_missing_cell_names_its_file(in_tmp):
    with pytest.raises(ConfigError, match="results/s/cells/a/m.json: cell not built"):
        read_cells("s", ["a"], ["m"])


def test_published_numbers_beside_ours():
    entries = published()
    assert {(e["dataset"], e["method"], e["metric"]) for e in entries} >= {("morph2", "numclip", "mae")}
    assert all(e["source"] and isinstance(e["checked"], bool) for e in entries)
    df = pd.DataFrame([
        {"dataset": "morph2", "method": "numclip", "metric": "mae", "mean": 2.5},
        {"dataset": "morph2", "method": "numclip", "metric": "mae_test_selected", "mean": 2.4},
        {"dataset": "hci", "method": "numclip", "metric": "acc", "mean": 0.6},
        {"dataset": "hci", "method": "numclip", "metric": "acc_test_selected", "mean": None},
    ])
    md = comparison(df, entries)
    assert "| morph2 | numclip | MAE | 2.08 † | 2.50 | +0.42 | 2.40 |" in md
    assert "| hci | numclip | Acc | 69.61 % † | 60.00 % | -9.61 | – |" in md
    assert "| aesthetics |" not in md                                    # no row without ours
    assert comparison(df.iloc[:0], entries) == ""


def test_a_bad_published_entry_is_named(tmp_path):
    bad = tmp_path / "p.yaml"
    bad.write_text("- {dataset: d, method: m, metric: rmse, value: 1, source: x, status: SEC, checked: false}\n")
    with pytest.raises(ConfigError, match="entry 0 .*d/m"):
        published(bad)
    bad.write_text("- {dataset: d, method: m, metric: mae, value: 1, source: x, status: memory, checked: false}\n")
    with pytest.raises(ConfigError, match="entry 0 .*status not one of"):
        published(bad)


def test_every_published_number_has_a_cell_of_the_paper_suite():
    from ordclip.config import load_params
    from ordclip.config import table_grid

    params = load_params([ROOT / "params.yaml"])
    cells = set()
    for name in ("table1", "table2", "table3", *params["suites"]["paper"]["tables"]):
        datasets, methods = table_grid(params, "paper", name)
        groups = [g for g, ds in params["suites"]["paper"]["overall"].items() if set(ds) <= set(datasets)]
        cells |= {(d, m) for d in [*datasets, *groups] for m in methods}
    entries = published()
    assert len(entries) == 141
    assert [(e["dataset"], e["method"]) for e in entries if (e["dataset"], e["method"]) not in cells] == []
    by_key = {(e["dataset"], e["method"], e["metric"]): e for e in entries}
    ordinalclip = by_key[("morph2", "ordinalclip", "mae")]
    assert ordinalclip["value"] == 2.32 and ordinalclip["checked"] and ordinalclip["status"] == "FT-IMG"
    assert by_key[("adience", "coop", "acc")]["std"] == 5.5
    assert by_key[("aesthetics", "ordinalclip", "acc")]["value"] == 73.05
    assert by_key[("morph2-64shot", "baseline", "mae")]["value"] == 2.84
    assert by_key[("morph2-top20keep10", "ordinalclip", "mae")]["value"] == 3.06  # column "20-90"
    assert by_key[("morph2-top40keep20", "coop", "mae")]["value"] == 2.99  # column "40-80"
    assert by_key[("morph2", "coop_tune_rank_randctx", "mae")]["value"] == 2.58       # §1.5, first column
    assert by_key[("morph2", "ordinalclip_m7_invprop", "mae")]["value"] == 2.35      # §1.6, Inv. Prop, 7
    l2rclip = by_key[("adience", "l2rclip", "acc")]
    assert l2rclip["status"] == "TER" and not l2rclip["checked"]
    assert all("backbone" in e for e in entries)


def test_the_table_note_names_each_methods_rank_space():
    from ordclip.config import load_params
    from ordclip.jobs import job_config
    from ordclip.tables import rank_space_note

    params = load_params([ROOT / "params.yaml"])
    note = rank_space_note(job_config(params, "table", suite="paper", name="table1")["rank_spaces"])
    assert note.startswith("`morph2`: ranks 0..100 (zeroshot, baseline, coop, ordinalclip, numclip); "
                           "16..77 (linear_probe, l2rclip)")
    assert "adience" not in note
    assert "`morph2-4shot`" in rank_space_note(job_config(params, "table", suite="paper", name="table2")["rank_spaces"])


def test_a_table_over_suites_shows_each_suites_cells_side_by_side(in_tmp):
    from ordclip.tables import make_table

    _cell("rand", "a", "m", [2.0, 4.0], [0.25, 0.75])
    _cell("pre", "a", "m", [1.0, 1.0], [0.5, 0.5])
    job = {"suite": "pre", "name": "backbones", "title": "Backbones", "datasets": ["a"], "methods": ["m"],
           "suites": ["rand", "pre"], "metrics": ["mae", "acc"], "backbones": {"pre": "tiny_pre", "rand": "tiny"},
           "overall": {}, "rank_spaces": {}}
    make_table(job)
    md = Path("results/pre/backbones.md").read_text()
    assert md.startswith("# Backbones\n") and "Suites `rand` (backbone `tiny`), `pre` (backbone `tiny_pre`)" in md
    assert "| method | a (rand: tiny) MAE | a (rand: tiny) Acc (%) | a (pre: tiny_pre) MAE | a (pre: tiny_pre) Acc (%) |" in md
    assert "| m | 3.00 | 50.00 | 1.00 | 50.00 |" in md
    assert "Published numbers are not shown" in md
    df = pd.read_csv("results/pre/backbones.csv")
    assert list(dict.fromkeys(df.suite)) == ["rand", "pre"]
    summary = json.loads(Path("results/pre/backbones.metrics.json").read_text())
    assert summary["rand"]["a"]["m"]["mae"] == 3.0 and summary["pre"]["a"]["m"]["mae"] == 1.0
    with pytest.raises(ConfigError, match="cell pre/a/m has no metric 'ordinality'"):
        make_table({**job, "suites": ["pre"], "backbones": {"pre": "tiny_pre"}, "metrics": ["mae", "ordinality"]})


def test_variant_tables_say_what_their_datasets_are(in_tmp):
    from ordclip.tables import make_table

    _cell("s", "morph2-top10keep20", "ordinalclip", [2.5, 2.7], [0.3, 0.3])
    make_table({"suite": "s", "name": "shift", "title": "Shift", "datasets": ["morph2-top10keep20"],
                "methods": ["ordinalclip"], "suites": ["s"], "metrics": ["mae"], "backbones": {"s": "b"},
                "overall": {}, "rank_spaces": {}})
    md = Path("results/s/shift.md").read_text()
    assert "`<dataset>-top<c>keep<p>`: label-distribution shift" in md and "`<dataset>-<k>shot`" not in md
    assert "| method | morph2-top10keep20 MAE |" in md and "| ordinalclip | 2.60 |" in md
    # OrdinalCLIP's published 2.61 for column "10-80" beside ours
    assert "| morph2-top10keep20 | ordinalclip | MAE | 2.61 | 2.60 | -0.01 |" in md
