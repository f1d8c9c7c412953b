"""OrdinalCLIP (Li et al., NeurIPS 2022): M learned base rank embeddings interpolated to R ranks,
learned context, image encoder fine-tuned; loss = CE (image→text) + KL (text→image)."""

from __future__ import annotations

import torch
from torch import nn

from ordclip.losses import ce_loss, t2i_kl_loss
from ordclip.methods.base import PromptMethod, Task, prompt_learner


class OrdinalCLIP(PromptMethod):
    def losses(self, images: torch.Tensor, y: torch.Tensor, stage) -> dict[str, torch.Tensor]:
        logits = self.model.logits(images)
        return {"ce": ce_loss(logits, y), "kl": t2i_kl_loss(logits, y)}


def build(backbone: nn.Module, tok, task: Task, cfg: dict) -> OrdinalCLIP:
    prompts = prompt_learner(
        backbone, tok, task, cfg, tokens_per_rank=cfg["tokens_per_rank"],
        num_base_ranks=cfg["num_base_ranks"], interpolation=cfg["interpolation"],
    )
    return OrdinalCLIP(backbone, prompts, cfg)
