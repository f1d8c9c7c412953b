import numpy as np
import pytest
import torch
from sklearn.metrics import accuracy_score, cohen_kappa_score, mean_absolute_error

from ordclip.metrics import predict, selection_score, summarize


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
