import numpy as np
import pytest
import torch
from sklearn.metrics import accuracy_score, cohen_kappa_score, mean_absolute_error

from ordclip.metrics import (counted_prototypes, cosine_similarity, predict, prototype_ordinality, selection_score,
                             summarize)


def test_predict_by_hand():
    logits = np.log(np.array([[0.2, 0.3, 0.5], [0.7, 0.2, 0.1]]))
    assert predict(logits, "exp") == pytest.approx([0.3 + 1.0, 0.2 + 0.2])
    assert predict(logits, "max").tolist() == [2.0, 0.0]


def test_predict_accepts_torch_and_is_shift_invariant():
    logits = torch.randn(5, 7)
    assert predict(logits, "exp") == pytest.approx(predict(logits.double().numpy() + 100.0, "exp"))
    with pytest.raises(ValueError, match="unknown prediction mode"):
        predict(logits, "median")


def test_summarize_matches_sklearn():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 8, size=200)
    pred = np.clip(y + rng.normal(0, 1.5, size=200), 0, 7)
    hard = np.rint(pred).astype(int)
    got = summarize(pred, y)
    assert got["mae"] == pytest.approx(mean_absolute_error(y, pred))
    assert got["acc"] == pytest.approx(accuracy_score(y, hard))
    assert got["qwk"] == pytest.approx(cohen_kappa_score(y, hard, weights="quadratic"))
    assert got["one_off_acc"] == pytest.approx(np.mean(np.abs(hard - y) <= 1))


def test_summarize_by_hand_and_undefined_qwk():
    got = summarize(np.array([0.0, 1.4, 2.6, 3.0]), np.array([0, 1, 1, 0]))
    assert got["mae"] == pytest.approx((0 + 0.4 + 1.6 + 3.0) / 4)
    assert got["acc"] == pytest.approx(0.5)  # rounds to [0, 1, 3, 3]
    assert got["one_off_acc"] == pytest.approx(0.5)
    assert summarize(np.array([2.0, 2.0]), np.array([2, 2]))["qwk"] is None


def test_selection_score_orientation():
    logits = np.log(np.array([[0.9, 0.1], [0.1, 0.9]]))
    y = np.array([0, 1])
    assert selection_score({"logits": logits}, y, "mae_max") == 0.0
    assert selection_score({"logits": logits}, y, "acc_max") == -1.0


def test_numpy_metrics_equal_sklearn_bit_for_bit():
    """ordclip.metrics needs no scikit-learn, yet gives its exact floats (metrics.json unchanged)."""
    rng = np.random.default_rng(1)
    for trial in range(300):
        n, r = int(rng.integers(2, 400)), int(rng.integers(2, 12))
        y = rng.integers(0, r, size=n)
        pred = np.clip(y + rng.normal(0, rng.uniform(0.1, 3), size=n), 0, r - 1)
        if trial % 3 == 0:
            pred = rng.uniform(0, r - 1, size=n)
        hard = np.rint(pred).astype(np.int64)
        got = summarize(pred, y)
        assert got["mae"] == mean_absolute_error(y, pred)
        assert got["acc"] == accuracy_score(y, hard)
        if len(np.unique(np.r_[y, hard])) > 1:
            want = cohen_kappa_score(y, hard, weights="quadratic")
            assert got["qwk"] == want or (got["qwk"] is None and np.isnan(want))


def test_metrics_module_imports_no_sklearn():
    import subprocess
    import sys

    code = "import sys, ordclip.metrics, ordclip.evaluate; print('sklearn' in sys.modules, 'torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]


# --- ordinality of rank prototypes (OrdinalCLIP scripts/vis_ordinality.py) ---------------------

def _arc(degrees):
    """2-D unit prototypes at these angles: similarity = cos(angle difference)."""
    a = np.radians(np.asarray(degrees, dtype=np.float64))
    return np.stack([np.cos(a), np.sin(a)], axis=1)


def test_ordered_prototypes_obey_every_comparison():
    ordered = _arc(np.linspace(0, 150, 12))
    for span in (None, 1, 2, 4, 8, 11):
        assert prototype_ordinality(ordered, span) == 1.0
    assert prototype_ordinality(ordered[::-1]) == 1.0                 # reversed: still ordered
    assert prototype_ordinality(torch.tensor(ordered * 3.0)) == 1.0    # the norm does not matter


def test_a_swap_by_hand():
    # ranks at 0°, 40°, 20°, 70° (the middle two swapped); C = 3, comparisons (i, j), i <= j <= 2:
    # i=0: 0<40 yes, cos40 > cos20 no, 20<70 yes; i=1 (40°): 0<20 yes, 20<30 yes; i=2 (20°): 0<50 yes
    swapped = _arc([0, 40, 20, 70])
    assert prototype_ordinality(swapped) == pytest.approx(5 / 6)
    assert prototype_ordinality(swapped, span=1) == 1.0                # j = i only
    assert prototype_ordinality(swapped, span=2) == pytest.approx(4 / 5)


def test_ties_and_a_return_count_as_violations():
    e = np.eye(3)
    # rank 2 points where rank 0 does: S = [[1,0,1],[0,1,0],[1,0,1]]; (0,0) 1>0, (0,1) 0>1 no, (1,1) 1>0
    assert prototype_ordinality(np.stack([e[0], e[1], e[0]])) == pytest.approx(2 / 3)
    # orthogonal ranks: (0,1) compares S01 = 0 with S02 = 0, a tie, which does not obey
    assert prototype_ordinality(e) == pytest.approx(2 / 3)
    assert prototype_ordinality(np.ones((5, 4))) == 0.0                # all parallel: every comparison a tie
    assert prototype_ordinality(e[:1]) is None                         # one prototype: nothing to compare


def test_ordinality_equals_a_loop_over_its_definition():
    rng = np.random.default_rng(3)
    for n in (2, 3, 7, 20):
        p = np.cumsum(rng.normal(size=(n, 6)), axis=0) if n % 2 else rng.normal(size=(n, 6))
        s = cosine_similarity(p)
        c = n - 1
        for span in sorted({1, 2, 4, c}):
            hits = [s[i, j] > s[i, j + 1] for i in range(c) for j in range(i, c) if j - i < span]
            assert prototype_ordinality(p, span) == pytest.approx(np.mean(hits), abs=1e-15), (n, span)


def test_bad_prototypes_are_named():
    with pytest.raises(ValueError, match=r"row\(s\) \[1\] have norm 0"):
        prototype_ordinality(np.array([[1.0, 0.0], [0.0, 0.0], [0.0, 1.0]]))
    with pytest.raises(ValueError, match="expected an \\(N, D\\) array"):
        prototype_ordinality(np.ones(3))
    with pytest.raises(ValueError, match="span: expected an integer >= 1"):
        prototype_ordinality(np.eye(3), span=0)


def test_counted_prototypes_keep_the_dataset_labels_and_drop_empty_rows():
    p = np.arange(1.0, 13.0).reshape(6, 2)
    p[3] = 0.0                                                         # label 13: no prototype
    kept, labels, dropped = counted_prototypes(p, [10, 11, 12, 13, 14, 15], [11, 14])
    assert labels.tolist() == [11, 12, 14] and dropped == [13]
    assert kept.tolist() == [p[1].tolist(), p[2].tolist(), p[4].tolist()]
    assert counted_prototypes(p[:3], [0, 20, 40], None)[1].tolist() == [0, 20, 40]
    with pytest.raises(ValueError, match="must increase strictly"):
        counted_prototypes(p[:2], [1, 1], None)


def test_ordinality_equals_the_official_block_mask_form():
    """scripts/vis_ordinality.py (ca10a20) lines 62-77 build each span's mask as a matrix: all ones,
    the upper triangle (diagonal included) of its top-right (C - s) x (C - s) block cleared, then
    the upper triangle kept; comparisons are taken on S divided by its maximum. Rebuilt here in
    that form, independently of prototype_ordinality's index arithmetic."""
    rng = np.random.default_rng(11)
    for n in (2, 5, 9, 33, 62):
        p = np.cumsum(rng.normal(size=(n, 8)), axis=0) + rng.normal(size=(n, 8))
        s = cosine_similarity(p)
        s = s / s.max()
        c = n - 1
        signs = np.triu(s[:-1, :-1] > s[:-1, 1:])
        spans = [2 ** k for k in range(int(np.floor(np.log2(c))) + 1)] + [c]
        for span in spans:
            mask = np.ones((c, c), dtype=bool)
            if c - span > 0:
                mask[:c - span, span:] &= ~np.triu(np.ones((c - span, c - span), dtype=bool))
            mask = np.triu(mask)
            official = (signs & mask).sum() / mask.sum()
            assert prototype_ordinality(p, span) == pytest.approx(official, abs=1e-12), (n, span)
