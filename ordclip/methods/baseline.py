"""OrdinalCLIP's linear ("CNN") baseline (xk-huang/OrdinalCLIP @ ca10a20, ordinalclip/models/baseline.py):
the image encoder, fine-tuned, with a cosine head of one weight vector per rank,
    logits = 100 · norm(f_img) · norm(W)ᵀ,   W ∈ R^{R×D}   (baseline.py:39-52),
trained with OrdinalCLIP's loss CE + KL (configs/default.yaml:43-45; Runner.compute_losses).

The official runner never hands W (``last_project``) to the optimizer (runner/runner.py:221-311
builds groups only for prompts, image encoder, text encoder and logit scale), so W stays at its
random initialisation: ``lr.head: 0`` reproduces that; a positive lr trains it (a named variant).
W is drawn from a generator of its own (seed ``head_seed``), so a run's checkpoint, which keeps
only trained parameters, rebuilds the same head.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ordclip.losses import ce_loss, t2i_kl_loss
from ordclip.methods.base import ParamGroup, Stage, Task, fp32

SCALE = 100.0  # baseline.py:47, a fixed logit scale


def _cosine_head(f: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    return SCALE * f @ w.T


class LinearBaseline(nn.Module):
    prototype_unit = "rank"

    def __init__(self, backbone: nn.Module, num_ranks: int, cfg: dict) -> None:
        super().__init__()
        self.backbone = backbone
        for p in backbone.parameters():
            p.requires_grad_(False)
        dim = backbone.text_projection.shape[-1]
        bound = 1 / math.sqrt(dim)  # nn.Linear's default initialisation, U(−1/√D, 1/√D)
        gen = torch.Generator().manual_seed(cfg["head_seed"])
        self.head = nn.Parameter(torch.rand(num_ranks, dim, generator=gen) * 2 * bound - bound)
        self.cfg = cfg

    def stages(self) -> list[Stage]:
        lr = self.cfg["lr"]
        groups = [ParamGroup("image_encoder", list(self.backbone.visual.parameters()), lr["image_encoder"]),
                  ParamGroup("head", [self.head], lr["head"])]
        return [Stage("train", self.cfg["epochs"], groups, dict(self.cfg["loss_weights"]))]

    def eval_state(self) -> None:
        return None

    def prototypes(self) -> torch.Tensor:
        """(R, D) the cosine head's normalised weight rows, what images are scored against."""
        return F.normalize(self.head, dim=-1)

    def logits(self, images: torch.Tensor) -> torch.Tensor:
        f = F.normalize(self.backbone.encode_image(images), dim=-1)
        return fp32(_cosine_head)(f, F.normalize(self.head, dim=-1))

    def losses(self, images: torch.Tensor, y: torch.Tensor, stage: Stage) -> dict[str, torch.Tensor]:
        logits = self.logits(images)
        terms = {"ce": ce_loss(logits, y)}
        if stage.loss_weights.get("kl", 0) > 0:
            terms["kl"] = t2i_kl_loss(logits, y)
        return terms

    def predict(self, images: torch.Tensor, state: None = None) -> dict[str, torch.Tensor]:
        return {"logits": self.logits(images)}


def build(backbone: nn.Module, tok, task: Task, cfg: dict) -> LinearBaseline:
    return LinearBaseline(backbone, task.num_ranks, cfg)
