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
    path.write_text(json.dumps({"folds": list(range(len(mae))), "n_folds": len(mae), "metrics": metrics}))


def _run_files(suite, dataset, method, fold, pred, ranks, seed=0, mode="exp"):
    """A run's predictions.csv and metrics.json (its report modes), as evaluate writes them."""
    path = Path(layout.run_file(suite, dataset, method, fold, "predictions.csv", seed))
    path.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame({"index": range(len(ranks)), "path": [f"{i}.png" for i in range(len(ranks))], "label": ranks,
                  "rank": ranks, f"pred_{mode}": pred}).to_csv(path, index=False)
    path.with_name("metrics.json").write_text(json.dumps({"report": {"mae": mode, "acc": mode}}))


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
    assert "| morph2 | numclip | MAE | 2.08 † | 2.50 | +0.42 | – | 2.40 |" in md
    assert "| hci | numclip | Acc | 69.61 % † | 60.00 % | -9.61 | – | – |" in md
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
    assert "Published numbers" not in md                  # no published row for dataset "a"
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
    # OrdinalCLIP's published 2.61 for column "10-80" beside ours: its MORPH rows are VGG-16's (like.backbone)
    assert ("| morph2-top10keep20 | ordinalclip | MAE | 2.61 | 2.60 | not comparable: the paper's row used VGG-16 "
            "initialised on IMDB-WIKI, this suite `b` |") in md


def test_published_numbers_are_compared_only_with_their_like():
    """Issue 20, item 9: a row made with another backbone (OrdinalCLIP's MORPH comparison: VGG-16 on
    IMDB-WIKI) or on other lists (L2RCLIP's Adience: simplified_adience) gets "not comparable" and no
    difference; a row whose backbone the paper does not state keeps its difference."""
    entries = published()
    df = pd.DataFrame([
        {"dataset": "morph2", "method": "ordinalclip", "metric": "mae", "mean": 2.5},
        {"dataset": "morph2", "method": "numclip", "metric": "mae", "mean": 2.5},
        {"dataset": "adience", "method": "l2rclip", "metric": "acc", "mean": 0.6},
        {"dataset": "hci", "method": "ordinalclip", "metric": "mae", "mean": 0.7},
    ])
    md = comparison(df, entries, "vitb16_openai", {"adience": {"lists": "official"}, "morph2": {}, "hci": {}})
    assert ("| morph2 | ordinalclip | MAE | 2.32 | 2.50 | not comparable: the paper's row used VGG-16 initialised "
            "on IMDB-WIKI, this suite `vitb16_openai` |") in md
    assert "| morph2 | numclip | MAE | 2.08 † | 2.50 | +0.42 |" in md
    assert ("| adience | l2rclip | Acc | 66.20 % † | 60.00 % | not comparable: L2RCLIP's Adience figures use its "
            "simplified_adience_{0-4} lists (datalist/adience), not the official fold lists; this cell has lists: "
            "'official' (the row's 'l2rclip') |") in md
    assert "| hci | ordinalclip | MAE | 0.67 ± 0.03 | 0.70 | +0.03 |" in md          # backbone not stated
    on_its_lists = comparison(df, entries, "vitb16_openai", {"adience": {"lists": "l2rclip"}})
    assert "| adience | l2rclip | Acc | 66.20 % † | 60.00 % | -6.20 |" in on_its_lists
    assert "| morph2 | numclip | MAE | 2.08 † | 2.50 | not comparable: the paper's row used vitb16_openai, this " \
           "suite `rn50_openai` |" in comparison(df, entries, "rn50_openai")


def test_a_table_over_suites_compares_each_suites_cells_and_says_which_mae(in_tmp):
    """Issue 20, items 3 and 9: a backbone study shows each suite's published comparison under its own
    backbone, and the note says which of our MAEs (each method's report.mae) the paper's MAE meets."""
    from ordclip.tables import make_table

    for s in ("paper", "paper_rn50"):
        _cell(s, "morph2", "numclip", [2.4, 2.6], [0.5, 0.5])
        _cell(s, "morph2", "coop", [2.4, 2.6], [0.5, 0.5])
        for m in ("numclip", "coop"):
            for k in (0, 1):
                _run_files(s, "morph2", m, k, [20.0 + k, 30.0], [22, 33])
    job = {"suite": "paper", "name": "backbones", "title": "Backbones", "datasets": ["morph2"],
           "methods": ["coop", "numclip"], "suites": ["paper_rn50", "paper"], "metrics": ["mae"],
           "backbones": {"paper_rn50": "rn50_openai", "paper": "vitb16_openai"}, "overall": {}, "rank_spaces": {},
           "protocols": {"morph2": {"lists": None}}, "reports": {"morph2": {"coop": "exp", "numclip": "value"}}}
    make_table(job)
    md = Path("results/paper/backbones.md").read_text()
    rn50 = md.index("### Suite `paper_rn50` (backbone `rn50_openai`)")
    vitb16 = md.index("### Suite `paper` (backbone `vitb16_openai`)")
    assert rn50 < vitb16
    assert "| morph2 | numclip | MAE | 2.08 † | 2.50 | not comparable: the paper's row used vitb16_openai" in md[rn50:vitb16]
    assert "| morph2 | numclip | MAE | 2.08 † | 2.50 | +0.42 |" in md[vitb16:]
    assert ("compared with our `mae`, each method's `report.mae`: the expectation over the rank softmax (`exp`): "
            "coop; the regressed value (`value`): numclip.") in md


def test_cells_carry_the_argmax_mae_beside_the_reported_one():
    """Issue 20, item 3: the long form has `mae` (report.mae's mode) and `mae_max` (the argmax's), also
    test-selected; a run without rank logits (NumCLIP regressing age) has no mae_max."""
    from ordclip.tables import cell_metrics

    def run(exp, mx, with_max=True):
        modes = {"exp": {"mae": exp}, **({"max": {"mae": mx}} if with_max else {})}
        headline = {"mae": exp, "acc": 0.5, "one_off_acc": 0.9, "qwk": 0.1}
        return {"test": headline, "test_selected_test": headline, "val_selected": {"test": modes},
                "test_selected": {"test": modes}, "ordinality": {"val_selected": 1.0}}

    got = cell_metrics([run(1.0, 2.0), run(3.0, 4.0)])
    assert got["mae"]["mean"] == 2.0 and got["mae_max"]["mean"] == 3.0 and got["mae_max_test_selected"]["values"] == [2.0, 4.0]
    regressor = cell_metrics([run(1.0, None, with_max=False)])
    assert regressor["mae_max"]["mean"] is None and regressor["mae_max"]["std"] is None
    assert regressor["mae_max"]["values"] == [None] and regressor["mae_max"]["ci_low"] is None
    with pytest.raises(KeyError):
        cell_metrics([{"test_selected_test": {}}])          # a headline metric missing is no silent None
