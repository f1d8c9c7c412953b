"""Zero-shot CLIP: image features against the cached embeddings of the hand-written rank prompts
"{context} {rank name}." — nothing is trained."""

from __future__ import annotations

import numpy as np


def _normalize(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def fit(parts: dict[str, tuple[np.ndarray, np.ndarray]], text: np.ndarray, logit_scale: float,
        num_ranks: int, cfg: dict) -> tuple[list[dict[str, np.ndarray]], list[dict]]:
    """The linear head exp(logit_scale)·norm(text) over normalised image features, and its one
    candidate's val/test logits."""
    weight = np.exp(logit_scale) * _normalize(text)
    bias = np.zeros(num_ranks)
    outputs = {part: {"logits": _normalize(parts[part][0]) @ weight.T} for part in ("val", "test")}
    return [{"weight": weight, "bias": bias}], [{"name": "zeroshot", **outputs}]
