"""Training losses. Shapes: logits (B, R) image-to-rank-text similarities, y (B,) rank indices."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def ce_loss(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Image→text matching: cross-entropy over the R rank prompts, mean over the batch."""
    return F.cross_entropy(logits, y)


def _one_hot_t(y: torch.Tensor, num_classes: int, dtype: torch.dtype) -> torch.Tensor:
    """(C, B) 1[y_b = k], F.one_hot(y, C).T as a comparison: F.one_hot checks the labels'
    range with two reads back to the host on the CPU."""
    return (torch.arange(num_classes, device=y.device)[:, None] == y[None, :]).to(dtype)


def t2i_kl_loss(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """OrdinalCLIP's text→image matching loss (OrdinalCLIP §3.4, `Runner.compute_kl_loss`).

    Each rank text k present in the batch is matched against the B images: the target is
    T_k = softmax_b(10 · 1[y_b = k]) (≈ uniform over the images of rank k), the prediction is
    softmax_b(logits.T)_k, and
        L = Σ_{k present} KL(T_k ‖ softmax_b(logitsᵀ_k)) / #present ranks.
    Ranks absent from the batch have no target and contribute nothing.
    """
    num_ranks = logits.shape[1]
    onehot = _one_hot_t(y, num_ranks, logits.dtype)  # (R, B)
    present = onehot.sum(dim=1) > 0
    target = torch.softmax(10 * onehot, dim=1) * present[:, None]
    log_pred = F.log_softmax(logits.T, dim=1)
    return F.kl_div(log_pred, target, reduction="sum") / present.sum()


def _distance_weights(labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """(B, d) weights w_ik = |c_i − k| / Σ_k' |c_i − k'| · (d − 1), with w_{i,c_i} = 1."""
    k = torch.arange(num_classes, device=labels.device)
    dist = (labels[:, None] - k[None, :]).abs().to(torch.float32)
    w = dist / dist.sum(dim=1, keepdim=True) * (num_classes - 1)
    return torch.where(dist == 0, torch.ones_like(w), w)


def fcrc_ce_loss(logits: torch.Tensor, y: torch.Tensor, num_classes: int) -> torch.Tensor:
    """NumCLIP's fine-grained cross-modal ranking-based regularisation, cross-entropy form
    (NumCLIP §3.3; `Runner.compute_ce_dis_loss`).

    Each negative logit is scaled by its normalised ordinal distance from the true class c_i,
        w_ik = |c_i − k| / Σ_k' |c_i − k'| · (d − 1),  w_{i,c_i} = 1,
        L = −(1/B) Σ_i log( exp(s_{i,c_i}) / Σ_k exp(w_ik · s_ik) ),
    so a far rank is pushed harder than a near one. logits (B, d), y (B,) class indices.
    """
    return F.cross_entropy(logits * _distance_weights(y, num_classes).to(logits.dtype), y)


def fcrc_kl_loss(logits: torch.Tensor, y: torch.Tensor, num_classes: int) -> torch.Tensor:
    """NumCLIP's regularisation in text→image KL form (`Runner.compute_kl_dis_loss`).

    OrdinalCLIP's t2i_kl_loss with distance-weighted logits: for each class k present in the
    batch, image j's logit in row k of logitsᵀ is scaled by
        w_kj = |k − c_j| / Σ_j' |k − c_j'| · (d − 1),  w_kj = 1 where c_j = k,
    rows of absent classes keep weight 1 (they have no target). A row whose images all have
    class k (so Σ_j' |k − c_j'| = 0) gets weight 1 throughout, as in the official code.
    """
    onehot = _one_hot_t(y, num_classes, logits.dtype)  # (d, B)
    present = onehot.sum(dim=1) > 0
    dist = (torch.arange(num_classes, device=y.device)[:, None] - y[None, :]).abs().to(logits.dtype)
    w = dist / dist.sum(dim=1, keepdim=True).clamp_min(torch.finfo(logits.dtype).tiny) * (num_classes - 1)
    w = torch.where((dist == 0) | ~present[:, None], torch.ones_like(w), w)
    target = torch.softmax(10 * onehot, dim=1) * present[:, None]
    return F.kl_div(F.log_softmax(logits.T * w, dim=1), target, reduction="sum") / present.sum()


def asymmetric_contrastive_loss(text_features: torch.Tensor, image_features: torch.Tensor,
                                text_labels: torch.Tensor, image_labels: torch.Tensor,
                                logit_scale: torch.Tensor | float) -> torch.Tensor:
    """L2RCLIP's text→image supervised contrastive loss (stage 1; the released `SupConLoss`).

    s_ti = exp(logit_scale) · t_t · f_i (features as given); each text t is pulled towards all
    images of its label P(t) = {i : y_i = label_t} against all images of the batch:
        L = −mean_t [ (1/|P(t)|) Σ_{i∈P(t)} log softmax_i(s_t·)_i ].
    Texts with no image of their label in the batch are left out of the mean (the released code
    assumes every text has one; then both agree).
    """
    scale = torch.as_tensor(logit_scale, dtype=text_features.dtype, device=text_features.device).exp()
    logits = scale * text_features @ image_features.T  # (N_t, B)
    mask = (text_labels[:, None] == image_labels[None, :]).to(logits.dtype)
    count = mask.sum(dim=1)
    has_pos = (count > 0).to(logits.dtype)
    log_prob = F.log_softmax(logits, dim=1)
    # the mean over the texts with positives, as sums weighted by has_pos (no boolean indexing: no host sync)
    mean_pos = (mask * log_prob).sum(dim=1) / count.clamp_min(1)
    return -(mean_pos * has_pos).sum() / has_pos.sum()


def ordinal_pairwise_loss(image_features: torch.Tensor, text_features: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """L2RCLIP's cross-modal ordinal pairwise loss (stage 2; the released `ordinal_entropy`).

    With D_ik = ‖f_i − t_k‖₂ between image i and rank text k, and label-distance weights
    W_ik = |y_i − k| / max_{i',k'} |y_i' − k'|,
        L = mean_i ‖f_i − t_{y_i}‖²  (tightness to the true rank's text)
            − mean_{i,k} W_ik · D_ik  (push away from the other ranks, the more the farther).
    image_features (B, D), text_features (R, D) one row per rank, y (B,) rank indices.
    """
    k = torch.arange(text_features.shape[0], device=y.device)
    w = (y[:, None] - k[None, :]).abs().to(image_features.dtype)
    w = w / w.max().clamp_min(1)
    sq = (image_features[:, None, :] - text_features[None, :, :]).pow(2).sum(-1)
    dist = sq.clamp_min(1e-12).sqrt()
    tightness = (image_features - text_features[y]).pow(2).sum(dim=1).mean()
    return tightness - (w * dist).mean()


def ordinal_stage1_loss(image_features: torch.Tensor, text_features: torch.Tensor,
                        center_features: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """L2RCLIP's stage-1 ordinal regulariser (the released `loss/ordinal_ce_stage1.py`,
    `ordinal_entropy_stage1`, raywang335/L2RCLIP @ 168fd4b, lines 9-37), over the pairs i < j of the batch.

    f_i image features, t_i the text feature of image i's rank, g_i its centre (all (B, D)):
        w_ij = (|y_i − y_j| − min_{i<j} |y_i − y_j|) / max_{i<j} |y_i − y_j|   (divided by the max,
               not max − min, as released)
        L_d  = −mean_{i<j} w_ij ‖f_i − t_j‖₂         (push images from the texts of far ranks)
        L_c  = −mean_{i<j} w_ij ‖t_i − t_j‖₂         (spread the rank texts by rank distance)
        L_t  =  mean_i ‖f_i − g_i‖²                  (tightness)
        L = L_d + 0.5 · L_t + 0.5 · L_c.
    A batch of one image has no pair (L_d = L_c = 0); a batch of one rank has max 0, where the
    released code divides by zero: its weights are 0 here.
    """
    b = y.shape[0]
    tightness = (image_features - center_features).pow(2).sum(dim=1).mean()
    if b < 2:
        return 0.5 * tightness
    # the means over the pairs i < j as sums over the (B, B) matrices weighted by the pair mask
    # (no boolean indexing: no host sync)
    pairs = torch.triu(torch.ones(b, b, dtype=image_features.dtype, device=y.device), diagonal=1)
    n_pairs = b * (b - 1) // 2
    gaps = (y[:, None] - y[None, :]).abs().to(image_features.dtype)
    smallest = torch.where(pairs > 0, gaps, torch.full_like(gaps, torch.inf)).min()
    w = (gaps - smallest) / (gaps * pairs).max().clamp_min(1) * pairs
    push = -(w * torch.cdist(image_features, text_features)).sum() / n_pairs
    spread = -(w * torch.cdist(text_features, text_features)).sum() / n_pairs
    return push + 0.5 * tightness + 0.5 * spread
