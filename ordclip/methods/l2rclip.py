"""L2RCLIP (Wang et al., NeurIPS 2023, "Learning-to-Rank Meets Language"), from the paper and the
released loss fragments (the model code was never released; every unreleased value is marked
"our choice" in params.yaml).

Prompts: learned global context + rank prompts initialised from the rank words, refined by
RankFormer. Two stages, as the released optimizer builders (CLIP-ReID scheme):
  stage 1, prompts + RankFormer (image encoder frozen): CE image→text + asymmetric text→image
           contrastive loss;
  stage 2, image encoder (prompts frozen): CE + cross-modal ordinal pairwise loss.
The single-stage ablation trains everything at once with all three losses.
"""

from __future__ import annotations

import torch
from torch import nn

from ordclip.losses import asymmetric_contrastive_loss, ce_loss, ordinal_pairwise_loss
from ordclip.methods.base import ParamGroup, PromptMethod, Stage, Task
from ordclip.models.prompts import PromptLearner
from ordclip.models.rankformer import RankFormer


class L2RCLIP(PromptMethod):
    def __init__(self, backbone: nn.Module, prompts: PromptLearner, cfg: dict) -> None:
        super().__init__(backbone, prompts, cfg)
        self.rankformer = prompts.rank_transform

    def stages(self) -> list[Stage]:
        s1, s2 = self.cfg["stage1"], self.cfg["stage2"]
        prompt_groups = [ParamGroup("context", [self.model.prompts.context], s1["lr"]["context"]),
                         ParamGroup("ranks", [self.model.prompts.ranks], s1["lr"]["ranks"])]
        if self.rankformer is not None:
            prompt_groups.append(ParamGroup("rankformer", list(self.rankformer.parameters()), s1["lr"]["rankformer"]))
        image = [ParamGroup("image_encoder", list(self.model.backbone.visual.parameters()), s2["lr"]["image_encoder"])]
        if self.cfg["stages"] == "single":
            return [Stage("joint", s1["epochs"] + s2["epochs"], prompt_groups + image,
                          {**s1["loss_weights"], **s2["loss_weights"]})]
        return [Stage("prompts", s1["epochs"], prompt_groups, dict(s1["loss_weights"])),
                Stage("image", s2["epochs"], image, dict(s2["loss_weights"]))]

    def losses(self, images: torch.Tensor, y: torch.Tensor, stage: Stage) -> dict[str, torch.Tensor]:
        text = self.model.text_features()
        image = self.model.image_features(images)
        scale = self.model.backbone.logit_scale
        terms = {"ce": ce_loss(scale.exp() * image @ text.T, y)}
        if "contrastive" in stage.loss_weights:
            ranks = torch.arange(text.shape[0], device=y.device)
            terms["contrastive"] = asymmetric_contrastive_loss(text, image, ranks, y, scale)
        if "pairwise" in stage.loss_weights:
            terms["pairwise"] = ordinal_pairwise_loss(image, text, y)
        return terms


def build(backbone: nn.Module, tok, task: Task, cfg: dict) -> L2RCLIP:
    rf = cfg["rankformer"]
    dim = backbone.token_embedding.weight.shape[1]
    transform = RankFormer(dim, rf["heads"], rf["layers"], rf["alpha"], rf["blend"]) if rf["enabled"] else None
    prompts = PromptLearner(
        backbone.token_embedding, tok, task.num_ranks, context=None, n_ctx=cfg["n_ctx"],
        rank_names=task.rank_names if cfg["init_ranks"] else None, tokens_per_rank=cfg["tokens_per_rank"],
        context_length=backbone.positional_embedding.shape[0], rank_transform=transform,
    )
    return L2RCLIP(backbone, prompts, cfg)
