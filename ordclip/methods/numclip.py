"""NumCLIP (Du et al., ECCV 2024): coarse classification over 5 linguistic bins, then a fine
SSR-style regressor. Image features pass a CLIP-Adapter; the image encoder is fine-tuned.
Loss = FCRC-CE + FCRC-KL + L1(ŷ, y) (all three are needed: NumCLIP issue #1).

Predictions (outputs of ``predict``; the report/select_on modes of ordclip.metrics):
- ``value``: the regressor's ŷ: what runner_ssr.py reports for age (xmed-lab/NumCLIP @ 9e89c01,
  runner_ssr.py:294-297, MAE of ŷ under both the exp and max keys);
- ``bin_value``: Σ_k softmax(s)_k · a_k, the bin-based prediction with no learned weights (the
  regressor's formula at Δ = 0); the mode ``bins``. For ablations that never train the regressor
  (L1 weight 0), where ŷ would be an untrained head;
- ``logits`` over the bins where the bins are the ranks (HCI, aesthetics): the expectation/argmax
  modes exp/max that runner_ssr.py:299-302 reports for aesthetics and historical images.

Label shift (``label_shift`` s): runner_ssr.py:69 does ``y = y - 1`` before num2label, the L1 loss
and the metrics, so the method works on labels ℓ − s. Configured bins (age: num2label's 0, 13, 19,
35, 65) are applied to the shifted labels, so with s = 1 ages 19, 35 and 65 fall in the bin below;
where the bins are the levels themselves (HCI, aesthetics, the 5-level defaults) they shift with the
labels, so the anchors a_k are the shifted levels (aesthetics 1..5 → 0..4, regclip_ssr.py:31). The
regressed ŷ is of ℓ − s; the prediction adds s back, so the MAE is the official |ŷ − (y − 1)|.
s = 1 is the official behaviour (the paper suite's MORPH II and aesthetics); s = 0 is our default.

Departures from the official code, which are its defects: no hard-coded device, bins from the
configuration rather than module globals.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ordclip.config import untrained_head_errors
from ordclip.errors import ConfigError
from ordclip.losses import ce_loss, fcrc_ce_loss, fcrc_kl_loss
from ordclip.methods.base import ParamGroup, PromptMethod, Stage, Task, fp32, scaled_logits
from ordclip.models.prompts import PromptLearner


class Adapter(nn.Module):
    """CLIP-Adapter: f ← ratio · ReLU(W₂ ReLU(W₁ f)) + (1 − ratio) · f (no biases)."""

    def __init__(self, dim: int, reduction: int, ratio: float) -> None:
        super().__init__()
        self.fc = nn.Sequential(nn.Linear(dim, dim // reduction, bias=False), nn.ReLU(),
                                nn.Linear(dim // reduction, dim, bias=False), nn.ReLU())
        self.ratio = ratio

    def forward(self, f: torch.Tensor) -> torch.Tensor:
        return self.ratio * self.fc(f) + (1 - self.ratio) * f


class SSRRegressor(nn.Module):
    """Fine stage (SSR-Net style): with p = softmax(s) over the d bins and
    Δ = tanh(W₂ ReLU(W₁ s + b₁) + b₂), the estimate is ŷ = Σ_k p_k · a_k / (1 + Δ_k),
    a_k the bin start labels. Weights start N(0, 0.001²), biases 0, so initially Δ ≈ 0 and
    ŷ ≈ Σ_k p_k · a_k."""

    def __init__(self, starts: list[float]) -> None:
        super().__init__()
        d = len(starts)
        self.hidden = nn.Linear(d, 2 * d)
        self.delta = nn.Linear(2 * d, d)
        for layer in (self.hidden, self.delta):
            nn.init.normal_(layer.weight, std=0.001)
            nn.init.zeros_(layer.bias)
        self.register_buffer("starts", torch.tensor(starts, dtype=torch.float32), persistent=False)

    def forward(self, logits: torch.Tensor) -> torch.Tensor:
        return fp32(self._forward)(logits)  # 1 + Δ in bf16 would step by 2⁻⁷

    def _forward(self, logits: torch.Tensor) -> torch.Tensor:
        p = logits.softmax(dim=-1)
        delta = torch.tanh(self.delta(F.relu(self.hidden(logits))))
        return (p * self.starts / (1 + delta)).sum(dim=-1)


class NumCLIP(PromptMethod):
    # its text features are one per coarse bin (5), not per rank: prototypes() gives those
    prototype_unit = "bin"

    def __init__(self, backbone: nn.Module, prompts: PromptLearner, task: Task, cfg: dict) -> None:
        super().__init__(backbone, prompts, cfg)
        coarse = task.coarse
        dim = backbone.text_projection.shape[-1] if not isinstance(backbone.text_projection, nn.Linear) \
            else backbone.text_projection.out_features
        self.adapter = Adapter(dim, cfg["adapter"]["reduction"], cfg["adapter"]["ratio"])
        shift = cfg.get("label_shift", 0)
        values = torch.arange(task.num_ranks) + task.min_label
        levels = list(coarse["starts"]) == values.tolist()  # the bins are the ranks
        starts = [s - shift for s in coarse["starts"]] if levels else list(coarse["starts"])
        self.regressor = SSRRegressor([float(s) for s in starts])
        # the labels the method works on are ℓ − shift (runner_ssr.py:69); ranks are 0-based, so
        # rank r is label min_label + r and shifted label min_label − shift + r
        self.min_label = task.min_label - shift
        self.num_bins = len(starts)
        # ranks below the dataset's lowest label (a rank space's, e.g. ages 0..15 on MORPH II) have no image
        bins = ((values[:, None] - shift >= torch.tensor(starts)[None, :]).sum(dim=1) - 1).clamp_min(0)
        self.register_buffer("rank_to_bin", bins, persistent=False)
        self.bins_are_ranks = levels

    def stages(self) -> list[Stage]:
        stage = super().stages()[0]
        lr = self.cfg["lr"]
        stage.groups += [ParamGroup("adapter", list(self.adapter.parameters()), lr["adapter"]),
                         ParamGroup("regressor", list(self.regressor.parameters()), lr["regressor"])]
        return [stage]

    def bin_logits(self, images: torch.Tensor, text: torch.Tensor | None = None) -> torch.Tensor:
        text = self.model.text_features() if text is None else text
        f = F.normalize(self.adapter(self.model.backbone.encode_image(images)), dim=-1)
        return scaled_logits(self.model.backbone.logit_scale, f, text)

    def losses(self, images: torch.Tensor, y: torch.Tensor, stage: Stage) -> dict[str, torch.Tensor]:
        logits = self.bin_logits(images)
        c = self.rank_to_bin[y]
        ce = fcrc_ce_loss(logits, c, self.num_bins) if self.cfg["fcrc"] else ce_loss(logits, c)
        value = self.regressor(logits)
        return {"ce": ce, "kl": fcrc_kl_loss(logits, c, self.num_bins),
                "l1": F.l1_loss(value, (y + self.min_label).to(value.dtype))}

    def predict(self, images: torch.Tensor, state: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """In rank units: the regressed value, the bin-based value, and the bin logits where the
        bins are the ranks."""
        logits = self.bin_logits(images, state)
        out = {"value": self.regressor(logits) - self.min_label,
               "bin_value": (logits.softmax(dim=-1) * self.regressor.starts).sum(dim=-1) - self.min_label}
        if self.bins_are_ranks:
            out["logits"] = logits
        return out


def build(backbone: nn.Module, tok, task: Task, cfg: dict) -> NumCLIP:
    problems = untrained_head_errors(cfg)
    if problems:
        raise ConfigError(f"methods.{cfg.get('name', 'numclip')}{problems[0]}")
    coarse = task.coarse
    if coarse is None:
        raise ConfigError("numclip needs coarse bins: set datasets.<name>.coarse.starts and .names "
                          "(a dataset of exactly 5 ranks uses its own levels by default)")
    if len(coarse["names"]) != len(coarse["starts"]):
        raise ConfigError(f"coarse: {len(coarse['names'])} names for {len(coarse['starts'])} bins")
    shift = cfg.get("label_shift", 0)
    levels = list(coarse["starts"]) == list(range(task.min_label, task.min_label + task.num_ranks))
    lowest = task.min_label if task.lowest_label is None else task.lowest_label
    if shift and not levels and lowest - shift < coarse["starts"][0]:
        raise ConfigError(f"methods.{cfg.get('name', 'numclip')}.label_shift: {shift} moves the lowest label "
                          f"{lowest} to {lowest - shift}, below the first bin's start "
                          f"{coarse['starts'][0]} (coarse.starts {list(coarse['starts'])}); use label_shift 0 here")
    prompts = PromptLearner(
        backbone.token_embedding, tok, len(coarse["starts"]),
        context=coarse["context"] if cfg["init_context"] else None, n_ctx=cfg["n_ctx"],
        rank_names=list(coarse["names"]), context_length=backbone.positional_embedding.shape[0],
    )
    return NumCLIP(backbone, prompts, task, cfg)
