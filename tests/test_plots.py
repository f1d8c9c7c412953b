"""The report figures of a cell, built from run files the tests write."""

import json
from pathlib import Path

import numpy as np
import pytest

from conftest import ROOT
from ordclip import layout, plots
from ordclip.config import load_params
from ordclip.jobs import job_config
from ordclip.errors import DataError
from ordclip.metrics import prototype_ordinality
from ordclip.tables import make_cell

PNG = b"\x89PNG\r\n\x1a\n"
FADING = ["vivid", "slightly faded", "faded", "very faded", "completely faded"]
# Two folds of "fading" (ranks 0..4). Columns: true rank, pred_exp, pred_max.
FOLDS = [
    [(0, 0.2, 0), (0, 1.4, 1), (1, 1.1, 1), (2, 2.6, 3), (3, 3.0, 3), (4, 3.4, 3)],
    [(0, 0.4, 0), (1, 0.6, 1), (2, 2.2, 2), (2, 1.6, 2), (4, 4.0, 4)],
]


@pytest.fixture
def params():
    return load_params([ROOT / "params.yaml"], {"suites": {"demo": {"folds": 2}}})


def _metric(mae: float) -> dict:
    return {"mae": mae, "acc": 0.5, "one_off_acc": 0.9, "qwk": 0.7}


def _log(method: str, fold: int) -> list[dict]:
    """log.jsonl entries as ordclip/train.py writes them: epochs with losses, or fitted candidates."""
    if method == "coop":
        return [{"candidate": i, "name": f"coop epoch {i + 1}", "stage": "coop", "epoch": i + 1, "lr": [0.003],
                 "loss": {"ce": 1.5 - 0.3 * i + 0.1 * fold},
                 "val": {m: _metric(1.2 - 0.2 * i) for m in ("exp", "max")},
                 "test": {m: _metric(1.3 - 0.2 * i + fold) for m in ("exp", "max")}, "seconds": 0.1}
                for i in range(3)]
    names = ["zeroshot"] if method == "zeroshot" else ["C=0.1", "C=1", "C=10"]
    return [{"candidate": i, "name": n, "val": {m: _metric(1.0 + i + fold) for m in ("exp", "max")},
             "test": {m: _metric(2.0 + i) for m in ("exp", "max")}} for i, n in enumerate(names)]


def _prototypes(method: str, fold: int) -> np.ndarray:
    """(candidates, 5, 3) prototypes per fold: the fading ranks on an arc (fold 0), ranks 3 and 4
    swapped (fold 1)."""
    angles = np.radians([0, 20, 40, 60, 80]) if fold == 0 else np.radians([0, 20, 40, 80, 60])
    rows = np.stack([np.cos(angles), np.sin(angles), np.zeros(5)], axis=1)
    return np.stack([rows * (i + 1) for i in range(len(_log(method, fold)))])


def _write_runs(method: str, folds=FOLDS, selected: int = 1) -> None:
    for k, rows in enumerate(folds):
        run = Path(layout.run_dir("demo", "fading", method, k))
        run.mkdir(parents=True)
        lines = ["index,path,label,rank,pred_exp,pred_max"]
        lines += [f"{i},img{i}.png,{r},{r},{e},{m}" for i, (r, e, m) in enumerate(rows)]
        (run / "predictions.csv").write_text("\n".join(lines) + "\n")
        index = min(selected, len(_log(method, k)) - 1)
        # ordinality as evaluate writes it for these prototypes: 1 (fold 0); 7/10 (fold 1: of the 10
        # comparisons S(i,j) > S(i,j+1), j >= i, the three S(i,3) > S(i,4), i = 0..2, fail: rank 4 at 60°
        # is nearer every lower rank than rank 3 at 80°)
        value = prototype_ordinality(_prototypes(method, k)[index])
        metrics = {"select_on": "mae_exp", "report": {"mae": "exp", "acc": "max"},
                   "val_selected": {"candidate": "x", "index": index}, "test": _metric(1.0),
                   "test_selected_test": _metric(1.0),
                   "ordinality": {"unit": "rank", "labels": [0, 1, 2, 3, 4], "without_prototype": [],
                                  "val_selected": value, "test_selected": value}}
        (run / "metrics.json").write_text(json.dumps(metrics))
        np.savez(run / "outputs.npz", candidates=np.array([e["name"] for e in _log(method, k)]),
                 prototypes=_prototypes(method, k).astype(np.float32), prototype_labels=np.arange(5),
                 prototype_unit=np.array("rank"))
        (run / "log.jsonl").write_text("".join(json.dumps(e) + "\n" for e in _log(method, k)))
        (run / "run.json").write_text(json.dumps({"device": "cpu", "wall_seconds": 1.5}))


def _png_size(path: str) -> tuple[int, int]:
    data = Path(path).read_bytes()
    assert data[:8] == PNG, f"{path}: not a PNG"
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


def test_counts_and_mae_per_rank_by_hand():
    y = np.array([0, 0, 1, 2, 2, 2])
    pred = np.array([0.4, 1.6, 1.0, 2.5, 3.0, 0.2])
    counts = plots.confusion_counts(y, plots.hard_ranks(pred, 4), 4)
    # rint: 0.4->0, 1.6->2, 1.0->1, 2.5->2 (half to even), 3.0->3, 0.2->0
    assert counts.tolist() == [[1, 0, 1, 0], [0, 1, 0, 0], [1, 0, 1, 1], [0, 0, 0, 0]]
    mae, n = plots.mae_per_rank(y, pred, 4)
    assert n.tolist() == [2, 1, 3, 0]
    assert mae[:3] == pytest.approx([(0.4 + 1.6) / 2, 0.0, (0.5 + 1.0 + 1.8) / 3]) and np.isnan(mae[3])
    assert plots.hard_ranks(np.array([-0.7, 4.6]), 4).tolist() == [0, 3]       # clipped to the scale


def test_rank_labels_are_names_or_label_values():
    labels, ranks = np.array([16, 18, 20]), np.array([0, 2, 4])
    assert plots.rank_labels({"ranks": [16, 21]}, labels, ranks, ranks, "p") == ["16", "17", "18", "19", "20", "21"]
    assert plots.rank_labels({}, labels, ranks, np.array([0, 5]), "p") == [str(v) for v in range(16, 22)]
    assert plots.rank_labels({"ranks": [0, 1], "rank_names": ["low", "high"]}, ranks, ranks, ranks, "p") == \
        ["low", "high"]
    with pytest.raises(DataError, match="p: label − rank is not the same"):
        plots.rank_labels({}, np.array([1, 5]), np.array([0, 1]), np.array([0, 1]), "p")


def test_make_cell_writes_the_json_and_its_figures(in_tmp, params):
    _write_runs("coop")
    make_cell(job_config(params, "cell", suite="demo", dataset="fading", method="coop"))
    cell = json.loads(Path(layout.cell_file("demo", "fading", "coop")).read_text())
    assert cell["n_folds"] == 2 and cell["n_runs"] == 2 and cell["runs"] == [[0, 0], [1, 0]]
    assert cell["cost"] == {"devices": ["cpu"], "seconds": 3.0}
    assert cell["metrics"]["ordinality"]["values"] == [1.0, pytest.approx(0.7)]
    assert cell["metrics"]["ordinality"]["mean"] == pytest.approx(0.85)
    assert len(layout.CELL_FIGURES) == 5 and "prototype_similarity" in layout.CELL_FIGURES
    for name in layout.CELL_FIGURES:
        path = layout.cell_figure("demo", "fading", "coop", name)
        assert _png_size(path) == (500, 400), name
        assert Path(path).stat().st_size < 100_000
    assert not list(Path(layout.cell_figure("demo", "fading", "coop", "x")).parent.glob(".*"))  # no temp left


def test_figure_numbers_equal_a_hand_count(in_tmp, params):
    _write_runs("coop")
    runs = plots.load_cell_runs(job_config(params, "cell", suite="demo", dataset="fading", method="coop"))
    assert runs.rank_labels == FADING and runs.report == {"mae": "exp", "acc": "max"}
    hand = np.zeros((5, 5), dtype=int)
    for rows in FOLDS:
        for r, _, m in rows:
            hand[r, m] += 1
    assert (plots.plot_confusion(runs, in_tmp / "c.png") == hand).all()
    mae, counts = plots.plot_mae_per_rank(runs, in_tmp / "m.png")
    assert counts.tolist() == [3, 2, 3, 1, 2]
    assert mae[0] == pytest.approx((0.2 + 1.4 + 0.4) / 3)       # the MAE figure uses pred_exp (report.mae)
    assert mae[4] == pytest.approx((0.6 + 0.0) / 2)
    scatter = plots.plot_pred_vs_true(runs, in_tmp / "p.png")
    assert scatter["n"] == 11 and scatter["mean_prediction"][2] == pytest.approx((2.6 + 2.2 + 1.6) / 3)
    sim = plots.plot_prototype_similarity(runs, in_tmp / "s.png")   # fold 0's selected candidate
    assert sim.shape == (5, 5) and sim[0, 4] == pytest.approx(np.cos(np.radians(80)))
    assert runs.prototypes.labels == FADING and runs.prototypes.ordinality == [1.0, pytest.approx(0.7)]
    curves = plots.plot_curves(runs, in_tmp / "t.png")
    assert curves["kind"] == "epochs" and curves["x"] == ["coop epoch 1", "coop epoch 2", "coop epoch 3"]
    assert curves["loss"]["ce"][1] == pytest.approx([1.6, 1.3, 1.0])
    assert curves["val_mae"][0] == pytest.approx([1.2, 1.0, 0.8])
    for name in ("c", "m", "p", "s", "t"):
        _png_size(in_tmp / f"{name}.png")


def test_feature_methods_draw_candidates_or_say_nothing_is_trained(in_tmp, params):
    _write_runs("linear_probe")
    _write_runs("zeroshot")
    probe = plots.plot_curves(plots.load_cell_runs(job_config(params, "cell", suite="demo", dataset="fading", method="linear_probe")), in_tmp / "lp.png")
    assert probe["kind"] == "candidates" and probe["x"] == ["C=0.1", "C=1", "C=10"] and probe["loss"] == {}
    assert probe["test_mae"][1] == pytest.approx([2.0, 3.0, 4.0])
    zero = plots.plot_curves(plots.load_cell_runs(job_config(params, "cell", suite="demo", dataset="fading", method="zeroshot")), in_tmp / "zs.png")
    assert zero["kind"] == "single" and zero["val_mae"] == [[1.0], [2.0]]
    assert _png_size(in_tmp / "lp.png") == _png_size(in_tmp / "zs.png") == (500, 400)


def test_bad_run_files_are_named(in_tmp, params):
    _write_runs("coop")
    path = Path(layout.run_file("demo", "fading", "coop", 1, "predictions.csv"))
    path.write_text("index,path,label,rank,pred_max\n0,a.png,1,1,1\n")
    with pytest.raises(DataError, match=r"fold1/predictions.csv: missing column\(s\) \['pred_exp'\]"):
        plots.load_cell_runs(job_config(params, "cell", suite="demo", dataset="fading", method="coop"))
    path.unlink()
    with pytest.raises(DataError, match="fold1/predictions.csv: not found"):
        make_cell(job_config(params, "cell", suite="demo", dataset="fading", method="coop"))
    Path(layout.run_file("demo", "fading", "coop", 0, "log.jsonl")).write_text("")
    with pytest.raises(DataError, match="fold0/log.jsonl: no entries"):
        plots.load_cell_runs(job_config(params, "cell", suite="demo", dataset="fading", method="coop"))
