"""Cells, overall groups and the published numbers beside ours."""

import json
from pathlib import Path

import pandas as pd
import pytest

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
    bad.write_text("- {dataset: d, method: m, metric: rmse, value: 1, source: x, checked: false}\n")
    with pytest.raises(ConfigError, match="entry 0 .*d/m"):
        published(bad)
