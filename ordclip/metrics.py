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


# --- ordinality of the learned rank prototypes (OrdinalCLIP's Figure 3) ----------------------------

def cosine_similarity(prototypes) -> np.ndarray:
    """(N, N) cosine similarities S_ij = p_i · p_j / (‖p_i‖ ‖p_j‖) of (N, D) prototypes, in float64.

    A prototype of norm 0 (e.g. a linear probe's rank without training images) has no direction:
    ValueError naming its row."""
    p = _array(prototypes)
    if p.ndim != 2 or len(p) == 0:
        raise ValueError(f"prototypes: expected an (N, D) array with N >= 1, got shape {p.shape}")
    if not np.isfinite(p).all():
        bad = np.flatnonzero(~np.isfinite(p).all(axis=1)).tolist()
        raise ValueError(f"prototypes: non-finite values in row(s) {bad}")
    norms = np.linalg.norm(p, axis=1)
    if (norms == 0).any():
        raise ValueError(f"prototypes: row(s) {np.flatnonzero(norms == 0).tolist()} have norm 0 (no direction)")
    u = p / norms[:, None]
    return u @ u.T


def prototype_ordinality(prototypes, span: int | None = None) -> float | None:
    """Fraction of prototype comparisons that obey the ordinality, as OrdinalCLIP's
    scripts/vis_ordinality.py computes it (xk-huang/OrdinalCLIP @ ca10a20).

    With S the cosine similarities of the N prototypes in rank order (lines 60-61; the script also
    divides S by its maximum, line 62, a positive scalar that changes no comparison, so it is left
    out here) and C = N − 1 (line 66), a comparison is an anchor i and a column j with
    0 ≤ i ≤ j ≤ C − 1; it obeys when the anchor is strictly more similar to rank j than to the
    next rank j + 1 (line 70, ``triu(S[:-1, :-1] > S[:-1, 1:])``):

        O_s = (1 / |M_s|) · Σ_{(i, j) ∈ M_s} [S_ij > S_i,j+1],
        M_s = {(i, j) : 0 ≤ i ≤ j ≤ C − 1, j − i < s}                          (lines 71-77)

    So only the anchor's right side counts (higher ranks; by the symmetry of S the left side is the
    same set of triples seen from the other end), ties count as violations (strict >), and the
    comparisons j = i (an anchor against its right neighbour, S_ii = 1 > S_i,i+1 unless the two are
    parallel) are included: unrelated random prototypes score about 1/2 + 1/(C + 1), not 1/2.
    The script reports every span s in 1, 2, 4, …, 2^⌊log2 C⌋ and s = C (lines 67-68);
    ``span`` None is s = C, every comparison, |M_C| = C(C + 1)/2: the percentage of "prototype
    pairs that obey the ordinality" (project page, Figure 3) is taken to be this one (the page
    does not say which span; our reading). None where there is no comparison (N < 2).
    """
    s_mat = cosine_similarity(prototypes)
    c = len(s_mat) - 1
    if c < 1:
        return None
    span = c if span is None else span
    if not isinstance(span, (int, np.integer)) or span < 1:
        raise ValueError(f"span: expected an integer >= 1, got {span!r}")
    i, j = np.triu_indices(c)
    keep = (j - i) < span
    obeys = s_mat[i[keep], j[keep]] > s_mat[i[keep], j[keep] + 1]
    return float(obeys.mean())


def counted_prototypes(prototypes, labels, label_range: tuple[int, int] | list[int] | None
                       ) -> tuple[np.ndarray, np.ndarray, list[int]]:
    """The prototypes the ordinality counts, in label order: those whose label lies in
    ``label_range`` (the dataset's own labels inside a method's larger rank space, e.g. ages 16..77
    of OrdinalCLIP's 0..100 on MORPH II; None: every row), less the rows of norm 0 (a linear
    probe's rank without a training image: no prototype). Returns (prototypes, labels, labels of
    the dropped norm-0 rows)."""
    p, labels = _array(prototypes), np.asarray(labels, dtype=np.int64)
    if p.ndim != 2 or len(p) != len(labels):
        raise ValueError(f"prototypes: shape {p.shape} does not match {len(labels)} labels")
    if np.any(np.diff(labels) <= 0):
        raise ValueError(f"prototype labels must increase strictly, got {labels.tolist()[:8]}…")
    inside = np.ones(len(labels), dtype=bool) if label_range is None else \
        (labels >= label_range[0]) & (labels <= label_range[1])
    empty = inside & (np.linalg.norm(p, axis=1) == 0)
    keep = inside & ~empty
    return p[keep], labels[keep], labels[empty].tolist()
