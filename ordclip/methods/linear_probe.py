"""Linear probe: multinomial logistic regression (scikit-learn) on cached, L2-normalised frozen
image features; each C of the grid is a candidate, chosen on validation like an epoch."""

from __future__ import annotations

import warnings

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression

from ordclip.methods.zeroshot import _normalize

ABSENT_LOGIT = -1e4  # log-probability given to a rank with no training image (probability ≈ 0)


def fit(parts: dict[str, tuple[np.ndarray, np.ndarray]], text: np.ndarray, logit_scale: float,
        num_ranks: int, cfg: dict) -> tuple[list[dict[str, np.ndarray]], list[dict]]:
    """Fit one model per C; return every candidate's val/test log-probabilities over all ranks,
    and the heads (weight, bias per rank; absent ranks get ABSENT_LOGIT bias)."""
    x_train, y_train = parts["train"]
    x_train = _normalize(x_train)
    candidates, heads = [], []
    for c in cfg["C"]:
        clf = LogisticRegression(C=c, max_iter=cfg["max_iter"])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            clf.fit(x_train, y_train)
        weight = np.zeros((num_ranks, x_train.shape[1]))
        bias = np.full(num_ranks, ABSENT_LOGIT)
        if len(clf.classes_) == 2:  # binary: sklearn keeps one row; softmax form is ±z/2
            weight[clf.classes_] = np.stack([-clf.coef_[0], clf.coef_[0]]) / 2
            bias[clf.classes_] = np.array([-clf.intercept_[0], clf.intercept_[0]]) / 2
        else:
            weight[clf.classes_], bias[clf.classes_] = clf.coef_, clf.intercept_
        out = {part: {"logits": _normalize(parts[part][0]) @ weight.T + bias} for part in ("val", "test")}
        candidates.append({"name": f"C={c:g}", **out})
        heads.append({"weight": weight, "bias": bias})
    return heads, candidates
