"""The statistics of issue 21 on hand-made runs with known answers: intervals, paired tests, Holm,
the paired bootstrap, the split/seed variance shares, consistency with a published number, and
the comparisons and bold marks of a table."""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ordclip import layout
from ordclip import stats as S
from ordclip.tables import cell_metrics, comparisons, marks, markdown, read_cells


def test_t_interval_of_one_two_three():
    # mean 2, s/√n = 1/√3, t_{0.975, 2} = 4.302652729749464
    low, high = S.t_interval([1.0, 2.0, 3.0])
    assert (low, high) == pytest.approx((2 - 4.302652729749464 / 3 ** 0.5, 2 + 4.302652729749464 / 3 ** 0.5))
    assert S.t_interval([5.0]) is None and S.t_interval([2.0, 2.0]) == (2.0, 2.0)


def test_paired_t_of_known_differences():
    # d = 1, 2, 3, 4: mean 2.5, s = 1.290994, t = 2.5 / (1.290994 / 2) = 3.872983, df 3, two-sided p = 0.030466
    got = S.paired_t([2.0, 4.0, 6.0, 8.0], [1.0, 2.0, 3.0, 4.0])
    assert got["diff"] == pytest.approx(2.5) and got["n"] == 4
    assert got["p"] == pytest.approx(0.030466, abs=1e-6)
    assert got["ci_low"] == pytest.approx(2.5 - 3.182446305284263 * 1.2909944487358056 / 2)
    assert S.paired_t([1.0], [0.0]) is None
    assert S.paired_t([1.0, 2.0], [0.5, 1.5])["p"] == 0.0          # equal non-zero differences: certain
    assert S.paired_t([1.0, 2.0], [1.0, 2.0])["p"] == 1.0          # no difference at all


def test_wilcoxon_cannot_reject_with_three_runs():
    assert S.wilcoxon_p([1.0, 2.0, 3.0], [0.0, 0.0, 0.0]) == pytest.approx(0.25)      # 2 / 2**3, exact
    assert S.wilcoxon_p([1.0, 2.0, 3.0, 4.0, 5.0], [0.0] * 5) == pytest.approx(0.0625)
    assert S.wilcoxon_p([1.0, 1.0], [1.0, 1.0]) is None


def test_holm_step_down():
    # sorted 0.005, 0.01, 0.03, 0.04 times 4, 3, 2, 1 = 0.02, 0.03, 0.06, 0.04 -> running max 0.02, 0.03, 0.06, 0.06
    assert S.holm([0.01, 0.04, 0.03, None, 0.005]) == pytest.approx([0.03, 0.06, 0.06, None, 0.02])
    assert S.holm([0.5, 0.9]) == [1.0, 1.0] and S.holm([None]) == [None]


def test_paired_bootstrap_over_images():
    rng = np.random.default_rng(3)
    a = [rng.random(40), rng.random(60)]
    shifted = S.paired_bootstrap(a, [x - 0.2 for x in a])         # every image 0.2 worse: certain
    assert shifted["diff"] == pytest.approx(0.2) and shifted["p"] == 0.0
    assert shifted["ci_low"] == pytest.approx(0.2) and shifted["ci_high"] == pytest.approx(0.2)
    noise = [rng.normal(0, 1, 50), rng.normal(0, 1, 50)]
    same = S.paired_bootstrap(noise, [np.zeros(50), np.zeros(50)])
    assert same["ci_low"] < same["diff"] < same["ci_high"]
    assert same == S.paired_bootstrap(noise, [np.zeros(50), np.zeros(50)])      # seeded: reproducible
    # the mean over runs of each run's mean: (mean of run 0 + mean of run 1) / 2, not the pooled mean
    assert same["diff"] == pytest.approx((noise[0].mean() + noise[1].mean()) / 2)
    with pytest.raises(ValueError, match="different numbers of test images"):
        S.paired_bootstrap([np.zeros(3)], [np.zeros(4)])


def test_variance_shares_of_a_known_grid():
    # folds × seeds [[1, 3], [5, 7]]: within each fold var 2 -> σ²_seed 2; fold means 2, 6: MS_between = 2 · 8 = 16,
    # σ²_fold = (16 − 2) / 2 = 7; share 7 / 9
    got = S.variance_shares(np.array([[1.0, 3.0], [5.0, 7.0]]))
    assert got == pytest.approx({"var_fold": 7.0, "var_seed": 2.0, "fold_share": 7 / 9})
    assert S.variance_shares(np.array([[1.0], [2.0]])) is None                  # one seed
    assert S.variance_shares(np.array([[1.0, 3.0]]))["var_fold"] is None       # one fold
    assert S.variance_shares(np.array([[1.0, 1.2], [1.1, 1.3]]))["var_fold"] == 0.0  # clipped at 0


def test_consistency_with_a_published_mean():
    ours = [2.3, 2.4, 2.5]
    inside = S.consistent_with_published(ours, 2.32)
    assert inside == {"test": "interval", "p": None, "inside": True, "consistent": True}
    assert not S.consistent_with_published(ours, 3.0)["consistent"]
    # Welch from summary statistics equals Welch on samples with those statistics
    theirs = [2.1, 2.2, 2.3, 2.4, 2.5]
    welch = S.consistent_with_published(ours, float(np.mean(theirs)), float(np.std(theirs, ddof=1)), 5)
    from scipy import stats
    assert welch["test"] == "welch" and welch["p"] == pytest.approx(stats.ttest_ind(ours, theirs, equal_var=False).pvalue)


def _write_cell(suite, dataset, method, runs, mae, acc):
    path = Path(layout.cell_file(suite, dataset, method))
    path.parent.mkdir(parents=True, exist_ok=True)
    metrics = [{"test": {"mae": m, "acc": a, "one_off_acc": a, "qwk": None}, "test_selected_test": {"mae": m, "acc": a},
                "val_selected": {"test": {}}, "test_selected": {"test": {}}, "ordinality": {"val_selected": None}}
               for m, a in zip(mae, acc)]
    path.write_text(json.dumps({"suite": suite, "dataset": dataset, "method": method,
                                "folds": sorted({k for k, _ in runs}), "n_folds": len({k for k, _ in runs}),
                                "runs": [list(r) for r in runs], "metrics": cell_metrics(metrics, runs),
                                "cost": {"devices": ["cpu"], "seconds": 360.0}}))
    for (k, j), m in zip(runs, mae):  # predictions whose absolute errors average to the run's MAE
        run = Path(layout.run_file(suite, dataset, method, k, "predictions.csv", j))
        run.parent.mkdir(parents=True, exist_ok=True)
        ranks = np.arange(10) % 5
        pd.DataFrame({"index": range(10), "path": "x", "label": ranks, "rank": ranks,
                      "pred_exp": ranks + m}).to_csv(run, index=False)
        run.with_name("metrics.json").write_text(json.dumps({"report": {"mae": "exp", "acc": "exp"}}))


def test_cell_metrics_over_folds_and_seeds():
    runs = [(0, 0), (0, 1), (1, 0), (1, 1)]
    ms = [{"test": {"mae": v, "acc": 0.5, "one_off_acc": 1.0, "qwk": None}, "test_selected_test": {"mae": v, "acc": 0.5},
           "val_selected": {"test": {}}, "test_selected": {"test": {}}, "ordinality": {"val_selected": None}}
          for v in (1.0, 3.0, 5.0, 7.0)]
    got = cell_metrics(ms, runs)["mae"]
    assert got["mean"] == 4.0 and got["n"] == 4 and got["values"] == [1.0, 3.0, 5.0, 7.0]
    assert (got["ci_low"], got["ci_high"]) == pytest.approx(S.t_interval([1.0, 3.0, 5.0, 7.0]))
    assert (got["var_fold"], got["var_seed"]) == pytest.approx((7.0, 2.0))
    assert "var_fold" not in cell_metrics(ms[:2], [(0, 0), (1, 0)])["mae"]   # one seed: no decomposition


def test_comparisons_and_bold_marks(in_tmp):
    runs = [(0, 0), (0, 1), (1, 0), (1, 1)]
    _write_cell("s", "d", "good", runs, [1.0, 1.1, 1.2, 1.3], [0.9, 0.9, 0.8, 0.8])
    _write_cell("s", "d", "close", runs, [1.05, 1.05, 1.3, 1.25], [0.9, 0.8, 0.8, 0.9])
    _write_cell("s", "d", "bad", runs, [2.0, 2.1, 2.2, 2.3], [0.2, 0.3, 0.2, 0.3])
    cells = {("s", "d", m): json.loads(Path(layout.cell_file("s", "d", m)).read_text()) for m in ("good", "close", "bad")}
    df = comparisons(cells, ["mae", "acc"])
    mae = df[df.metric == "mae"].set_index("method")
    assert set(mae.against) == {"good"} and set(mae.index) == {"close", "bad"}
    assert mae.loc["bad", "mean_diff"] == pytest.approx(1.0) and mae.loc["bad", "n"] == 4
    assert mae.loc["bad", "p"] == 0.0 and bool(mae.loc["bad", "worse"])            # 1.0 worse in every run
    assert not mae.loc["close", "worse"] and mae.loc["close", "p_holm"] >= mae.loc["close", "p"]
    # the bootstrap's per-image errors are each run's MAE exactly: the same mean difference
    assert mae.loc["bad", "boot_diff"] == pytest.approx(1.0) and mae.loc["bad", "p_boot"] == 0.0
    assert bool(mae.loc["bad", "boot_agrees"])
    p = df["p"].to_numpy()
    assert df["p_holm"].to_numpy() == pytest.approx(S.holm(list(p)))                 # over the whole table
    bold = marks(cells, df, ["mae", "acc"])
    assert {("s", "d", "good", "mae"), ("s", "d", "close", "mae")} <= bold and ("s", "d", "bad", "mae") not in bold
    table = read_cells("s", ["d"], ["good", "close", "bad"], cells=cells)
    md = markdown(table, ["good", "close", "bad"], ["d"], ["mae", "acc"], bold=bold)
    half = (S.t_interval([1.0, 1.1, 1.2, 1.3])[1] - S.t_interval([1.0, 1.1, 1.2, 1.3])[0]) / 2
    assert f"| good | **1.15 ± {half:.2f}** |" in md and "| bad | 2.15 ± " in md
    assert (table[table.metric == "mae"].n_runs == 4).all() and (table.device_hours == 0.1).all() and (table.device == "cpu").all()


def test_no_marks_where_a_method_has_one_run(in_tmp):
    _write_cell("s", "d", "a", [(0, 0)], [1.0], [0.5])
    _write_cell("s", "d", "b", [(0, 0)], [2.0], [0.5])
    cells = {("s", "d", m): json.loads(Path(layout.cell_file("s", "d", m)).read_text()) for m in ("a", "b")}
    df = comparisons(cells, ["mae"])
    assert df["p"].isna().all() and marks(cells, df, ["mae"]) == set()
    assert df["p_boot"].iloc[0] == 0.0                    # the image bootstrap still answers with one run


def test_a_wider_value_rewrites_only_its_own_line_of_the_markdown_table(in_tmp):
    """Why the .md is not DataFrame.to_markdown (tabulate pads each column to its widest cell): a
    value that grows a digit changes its own row, and the diff of a table kept in git stays one line."""
    runs = [(0, 0), (1, 0)]
    _write_cell("s", "d", "a", runs, [1.0, 1.2], [0.9, 0.8])
    _write_cell("s", "d", "b", runs, [2.0, 2.2], [0.5, 0.6])
    cells = {("s", "d", m): json.loads(Path(layout.cell_file("s", "d", m)).read_text()) for m in ("a", "b")}
    before = markdown(read_cells("s", ["d"], ["a", "b"], cells=cells), ["a", "b"], ["d"], ["mae"]).splitlines()
    _write_cell("s", "d", "b", runs, [20.0, 22.0], [0.5, 0.6])
    cells[("s", "d", "b")] = json.loads(Path(layout.cell_file("s", "d", "b")).read_text())
    after = markdown(read_cells("s", ["d"], ["a", "b"], cells=cells), ["a", "b"], ["d"], ["mae"]).splitlines()
    changed = [(x, y) for x, y in zip(before, after) if x != y]
    assert len(before) == len(after) and len(changed) == 1 and changed[0][1].startswith("| b | 21.00 ± "), changed
