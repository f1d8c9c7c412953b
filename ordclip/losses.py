"""Training losses. Shapes: logits (B, R) image-to-rank-text similarities, y (B,) rank indices."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def ce_loss(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Image→text matching: cross-entropy over the R rank prompts, mean over the batch."""
    return F.cross_entropy(logits, y)


def t2i_kl_loss(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """OrdinalCLIP's text→image matching loss (OrdinalCLIP §3.4, `Runner.compute_kl_loss`).

    Each rank text k present in the batch is matched against the B images: the target is
    T_k = softmax_b(10 · 1[y_b = k]) (≈ uniform over the images of rank k), the prediction is
    softmax_b(logits.T)_k, and
        L = Σ_{k present} KL(T_k ‖ softmax_b(logitsᵀ_k)) / #present ranks.
    Ranks absent from the batch have no target and contribute nothing.
    """
    num_ranks = logits.shape[1]
    onehot = F.one_hot(y, num_ranks).T.to(logits.dtype)  # (R, B)
    present = onehot.sum(dim=1) > 0
    target = torch.softmax(10 * onehot, dim=1) * present[:, None]
    log_pred = F.log_softmax(logits.T, dim=1)
    return F.kl_div(log_pred, target, reduction="sum") / present.sum()
