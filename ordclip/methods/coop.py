"""CoOp as compared in OrdinalCLIP: learned shared context + one learned embedding sequence per
rank (initialised from the rank names), image encoder fine-tuned.

Loss as OrdinalCLIP's comparison trains it: the `coop` entry of configs/meta_cfgs/morph_compare.yaml
(xk-huang/OrdinalCLIP @ ca10a20, lines 18-32) sets no loss weights, so configs/default.yaml:43-45 gives
ce_loss 1.0 and kl_loss 1.0, and Runner.compute_losses (runner/runner.py:142-146) computes both:
    L = w_ce · CE(logits, y) + w_kl · L_kl(logitsᵀ, y)      (OrdinalCLIP §3.4, eq. of L_kl)
"""

from __future__ import annotations

import torch
from torch import nn

from ordclip.losses import ce_loss, t2i_kl_loss
from ordclip.methods.base import PromptMethod, Task, prompt_learner


class CoOp(PromptMethod):
    def losses(self, images: torch.Tensor, y: torch.Tensor, stage) -> dict[str, torch.Tensor]:
        logits = self.model.logits(images)
        terms = {"ce": ce_loss(logits, y)}
        if stage.loss_weights.get("kl", 0) > 0:
            terms["kl"] = t2i_kl_loss(logits, y)
        return terms


def build(backbone: nn.Module, tok, task: Task, cfg: dict) -> CoOp:
    names = task.rank_names if cfg["init_ranks"] else None
    prompts = prompt_learner(backbone, tok, task, cfg, rank_names=names, tokens_per_rank=cfg["tokens_per_rank"])
    return CoOp(backbone, prompts, cfg)
