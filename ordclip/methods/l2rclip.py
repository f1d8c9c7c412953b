"""L2RCLIP (Wang et al., NeurIPS 2023, "Learning-to-Rank Meets Language"), from the paper and the
released fragments (raywang335/L2RCLIP @ 168fd4b; the model code was never released; every
unreleased value is marked "our choice" in params.yaml and docs/recipes/l2rclip.md).

Prompts: learned global context + rank prompts initialised from the rank words, refined by
RankFormer. Two stages, as the released optimizer builders (solver/make_optimizer_prompt.py):
  stage 1 (make_optimizer_1stage, lines 4-25): only the global context ("prompt_globellearner") and
           RankFormer ("transformer_head") train; the rank word embeddings and the image encoder stay
           fixed. Loss: CE image→text + asymmetric text→image contrastive + the stage-1 ordinal
           regulariser (loss/ordinal_ce_stage1.py). Images: the test transform (resize, no crop, no
           flip), as the stage-1 loader (datasets/make_dataloader_clipreid.py:71, :112).
  stage 2 (make_optimizer_2stage, lines 52-76): the image encoder and the projection layers train
           (names with "image_encoder" or "projection": here CLIP's visual tower and its text
           projection), biases at lr × bias_lr_factor with their own weight decay; prompts fixed.
           Loss: CE + cross-modal ordinal pairwise loss (loss/ordinal_ce.py). Images: resize + flip,
           no crop (make_dataloader_clipreid.py:51-58).
  evaluation: resize, no crop (make_dataloader_clipreid.py:61-65).
The single-stage ablation (make_optimizer_one_stage, lines 27-49) trains context, RankFormer and
the image encoder at once, the image encoder at the base lr × 0.005 and weight decay × 0.01.
"""

from __future__ import annotations

import torch
from torch import nn

from ordclip.losses import asymmetric_contrastive_loss, ce_loss, ordinal_pairwise_loss, ordinal_stage1_loss
from ordclip.methods.base import ParamGroup, PromptMethod, Stage, Task, fp32, scaled_logits
from ordclip.models.prompts import PromptLearner
from ordclip.models.rankformer import RankFormer


DETERMINISTIC_VIEWS = ("resize", "center")


def _depends_on_the_batch(module: nn.Module) -> bool:
    """Whether a module's output in training mode depends on more than its own input (batch
    statistics, dropout), so that features computed once would differ from a step's."""
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm)
               or (isinstance(m, nn.Dropout) and m.p > 0) or getattr(m, "prob", 0) > 0
               for m in module.modules())


class L2RCLIP(PromptMethod):
    eval_view = "resize"

    def __init__(self, backbone: nn.Module, prompts: PromptLearner, cfg: dict) -> None:
        super().__init__(backbone, prompts, cfg)
        self.rankformer = prompts.rank_transform
        self._feature_stage: Stage | None = None
        self._text_cache: tuple[Stage, torch.Tensor | None] | None = None

    def _trains(self, stage: Stage, params) -> bool:
        ids = {id(p) for p in params}
        return any(id(p) in ids for g in stage.groups if g.lr > 0 for p in g.params)

    @torch.no_grad()
    def stage_inputs(self, stage: Stage, part, pipeline, amp, batch_size: int = 256) -> torch.Tensor | None:
        """(N, D) the training part's normalised image features, computed once, when the stage
        cannot change them: the image encoder is frozen, its view has no randomness and the
        encoder has no batch-dependent layer (stage 1: resize, no flip). The trainer then passes
        rows of them to losses in place of images. None otherwise."""
        self._feature_stage = None
        visual = self.model.backbone.visual
        if (stage.view not in DETERMINISTIC_VIEWS or self._trains(stage, visual.parameters())
                or _depends_on_the_batch(visual)):
            return None
        chunks = []
        for start in range(0, len(part.index), batch_size):
            with amp:
                chunks.append(self.model.image_features(
                    pipeline(part.images[start:start + batch_size], train=False, view=stage.view)))
        self._feature_stage = stage
        return torch.cat(chunks)

    def _text_features(self, stage: Stage) -> torch.Tensor:
        """The rank text features of a step. In a stage that trains neither the prompts nor the
        text tower (stage 2) their pooled EOT features are computed once and only the (trained)
        text projection runs each step."""
        if self._text_cache is None or self._text_cache[0] is not stage:
            frozen = not self._trains(stage, [*self.model.prompts.parameters(),
                                              *self.model.backbone.transformer.parameters()])
            with torch.no_grad():
                self._text_cache = (stage, self.model.pooled_text() if frozen else None)
        pooled = self._text_cache[1]
        return self.model.text_features() if pooled is None else self.model.text_features(pooled)

    def _prompt_groups(self, lr: dict) -> list[ParamGroup]:
        groups = [ParamGroup("context", [self.model.prompts.context], lr["context"]),
                  ParamGroup("ranks", [self.model.prompts.ranks], lr["ranks"])]
        if self.rankformer is not None:
            groups.append(ParamGroup("rankformer", list(self.rankformer.parameters()), lr["rankformer"]))
        return groups

    def _image_groups(self, lr: float, projection_lr: float) -> list[ParamGroup]:
        """The visual tower (weights; biases at lr × bias_lr_factor with weight_decay_bias) and
        CLIP's text projection."""
        named = list(self.model.backbone.visual.named_parameters())
        s2 = self.cfg["stage2"]
        return [
            ParamGroup("image_encoder", [p for n, p in named if "bias" not in n], lr),
            ParamGroup("image_encoder_bias", [p for n, p in named if "bias" in n], lr * s2["bias_lr_factor"],
                       s2["weight_decay_bias"]),
            ParamGroup("projection", [self.model.backbone.text_projection], projection_lr),
        ]

    def stages(self) -> list[Stage]:
        s1, s2 = self.cfg["stage1"], self.cfg["stage2"]
        if self.cfg["stages"] == "single":
            one = self.cfg["single_stage"]
            image = [ParamGroup("image_encoder", list(self.model.backbone.visual.parameters()),
                                s1["lr"]["context"] * one["image_encoder_lr_factor"],
                                self.cfg["weight_decay"] * one["image_encoder_wd_factor"])]
            return [Stage("joint", s1["epochs"] + s2["epochs"], self._prompt_groups(s1["lr"]) + image,
                          {**s1["loss_weights"], **s2["loss_weights"]}, view=s2["view"])]
        return [Stage("prompts", s1["epochs"], self._prompt_groups(s1["lr"]), dict(s1["loss_weights"]),
                      view=s1["view"]),
                Stage("image", s2["epochs"], self._image_groups(s2["lr"]["image_encoder"], s2["lr"]["projection"]),
                      dict(s2["loss_weights"]), view=s2["view"])]

    def losses(self, images: torch.Tensor, y: torch.Tensor, stage: Stage) -> dict[str, torch.Tensor]:
        text = self._text_features(stage)
        image = images if stage is self._feature_stage else self.model.image_features(images)
        scale = self.model.backbone.logit_scale
        weights = stage.loss_weights
        terms = {"ce": ce_loss(scaled_logits(scale, image, text), y)}
        if weights.get("contrastive", 0) > 0:
            ranks = torch.arange(text.shape[0], device=y.device)
            terms["contrastive"] = fp32(asymmetric_contrastive_loss)(text, image, ranks, y, scale)
        if weights.get("ordinal", 0) > 0:
            # the released caller is not public: each image's rank text is both t_i and its centre g_i
            terms["ordinal"] = ordinal_stage1_loss(image, text[y], text[y], y)
        if weights.get("pairwise", 0) > 0:
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
