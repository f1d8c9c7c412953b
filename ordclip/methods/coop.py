"""CoOp as compared in OrdinalCLIP: learned shared context + one learned embedding sequence per
rank (initialised from the rank names), image encoder fine-tuned; cross-entropy."""

from __future__ import annotations

import torch
from torch import nn

from ordclip.losses import ce_loss
from ordclip.methods.base import PromptMethod, Task, prompt_learner


class CoOp(PromptMethod):
    def losses(self, images: torch.Tensor, y: torch.Tensor, stage) -> dict[str, torch.Tensor]:
        return {"ce": ce_loss(self.model.logits(images), y)}


def build(backbone: nn.Module, tok, task: Task, cfg: dict) -> CoOp:
    names = task.rank_names if cfg["init_ranks"] else None
    prompts = prompt_learner(backbone, tok, task, cfg, rank_names=names, tokens_per_rank=cfg["tokens_per_rank"])
    return CoOp(backbone, prompts, cfg)
