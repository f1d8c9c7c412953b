"""Predictions from rank logits, and the ordinal-regression metrics, in numpy alone.

Everything here works on numpy arrays (torch tensors are accepted and converted), so evaluation
imports neither torch nor scikit-learn. Predictions and labels are rank indices 0..R-1. MAE,
accuracy and QWK follow scikit-learn's operations step by step (mean_absolute_error,
accuracy_score, cohen_kappa_score(weights="quadratic")), so they equal its results bit for bit;
tests/test_metrics.py checks that against scikit-learn.
"""

from __future__ import annotations

import math

import numpy as np

MODES = ("exp", "max")


def _array(x) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().float().cpu().numpy()
    return np.asarray(x, dtype=np.float64)


def softmax(logits) -> np.ndarray:
    z = _array(logits)
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def predict(logits, mode: str) -> np.ndarray:
    """Rank prediction from (N, R) logits: ``exp`` = Σ_k softmax_k · k (expectation), ``max`` = argmax_k."""
    p = softmax(logits)
    if mode == "exp":
        return p @ np.arange(p.shape[-1], dtype=np.float64)
    if mode == "max":
        return p.argmax(axis=-1).astype(np.float64)
    raise ValueError(f"unknown prediction mode {mode!r} (exp | max)")


def mean_absolute_error(y, pred) -> float:
    """Mean of |pred - y| (as scikit-learn: both as float64 columns, averaged over rows, then outputs)."""
    err = np.abs(np.asarray(pred, dtype=np.float64).reshape(-1, 1) - np.asarray(y, dtype=np.float64).reshape(-1, 1))
    return float(np.average(np.average(err, axis=0)))


def accuracy(y, hard) -> float:
    """Fraction of equal labels."""
    return float(np.average(np.asarray(y) == np.asarray(hard)))


def quadratic_weighted_kappa(y, hard) -> float:
    """Cohen's kappa with quadratic weights over the labels present in ``y`` or ``hard`` (sorted);
    NaN where it is undefined (every weight times expected count is 0)."""
    y, hard = np.asarray(y, dtype=np.int64), np.asarray(hard, dtype=np.int64)
    labels = np.unique(np.r_[y, hard])
    n = len(labels)
    confusion = np.zeros((n, n), dtype=np.int64)
    np.add.at(confusion, (np.searchsorted(labels, y), np.searchsorted(labels, hard)), 1)
    confusion = confusion.astype(np.float64)
    sum0, sum1 = confusion.sum(axis=0), confusion.sum(axis=1)
    expected = np.outer(sum0, sum1) / np.sum(sum0)
    w_mat = np.zeros((n, n), dtype=np.float64)
    w_mat += np.arange(n)
    w_mat = (w_mat - w_mat.T) ** 2
    denominator = np.sum(w_mat * expected)
    if denominator == 0:
        return float("nan")
    return float(1 - np.sum(w_mat * confusion) / denominator)


def summarize(pred, y) -> dict[str, float | None]:
    """MAE of ``pred``; accuracy, one-off accuracy and quadratic-weighted kappa of round(pred).

    Accuracies are fractions in [0, 1]. QWK is None where it is undefined (a single class in both).
    """
    pred, y = _array(pred), _array(y).astype(np.int64)
    hard = np.rint(pred).astype(np.int64)
    qwk = quadratic_weighted_kappa(y, hard) if len(np.unique(np.r_[y, hard])) > 1 else float("nan")
    return {
        "mae": mean_absolute_error(y, pred),
        "acc": accuracy(y, hard),
        "one_off_acc": float(np.mean(np.abs(hard - y) <= 1)),
        "qwk": None if math.isnan(qwk) else float(qwk),
    }


VALUE_MODES = {"value": "value", "bin_value": "bins"}  # output key -> mode (NumCLIP's regressor / bins)


def mode_predictions(outputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """All prediction modes a run's outputs support: exp and max from logits, ``value`` (a
    regressor) and ``bins`` (NumCLIP's bin-based value) where the method outputs them."""
    preds = {mode: predict(outputs["logits"], mode) for mode in MODES} if "logits" in outputs else {}
    for key, mode in VALUE_MODES.items():
        if key in outputs:
            preds[mode] = np.asarray(outputs[key], dtype=np.float64)
    return preds


def selection_score(outputs: dict[str, np.ndarray], y, select_on: str) -> float:
    """Lower-is-better score for checkpoint selection, e.g. ``mae_max`` or ``acc_exp``."""
    metric, _, mode = select_on.rpartition("_")
    value = summarize(mode_predictions(outputs)[mode], y)[metric]
    if value is None:
        return math.inf
    return value if metric == "mae" else -value
