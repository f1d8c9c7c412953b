"""RankFormer (L2RCLIP §3.2): token-level self-attention across all rank prompts in the
word-embedding space, blended back into the rank prompts.

The tokens of all R rank prompts form one sequence, so every rank token attends to every other
rank's tokens; a pre-LN transformer A(·) of ``layers`` blocks maps it, and the result is blended:
    residual: R' = R + α · A(R)          convex: R' = (1 − α) · R + α · A(R)
α = 0 gives R' = R. Layer count, heads, α and the blend form are not released (params.yaml marks them).
"""

from __future__ import annotations

import torch
from torch import nn


class RankFormer(nn.Module):
    def __init__(self, dim: int, heads: int, layers: int, alpha: float, blend: str = "residual") -> None:
        super().__init__()
        if blend not in ("residual", "convex"):
            raise ValueError(f"rankformer.blend: unknown form {blend!r} (residual | convex)")
        layer = nn.TransformerEncoderLayer(dim, heads, dim_feedforward=4 * dim, dropout=0.0, activation="gelu",
                                           batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.alpha, self.blend = alpha, blend

    def forward(self, ranks: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """ranks (R, T, D) token embeddings, of which the first lengths[r] of rank r are real."""
        r, t, d = ranks.shape
        pad = torch.arange(t, device=ranks.device)[None, :] >= lengths[:, None]  # (R, T)
        attended = self.encoder(ranks.reshape(1, r * t, d), src_key_padding_mask=pad.reshape(1, r * t))
        attended = attended.reshape(r, t, d)
        if self.blend == "residual":
            return ranks + self.alpha * attended
        return (1 - self.alpha) * ranks + self.alpha * attended
