"""What every trained method provides to the generic training loop (ordclip.train)."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from ordclip.models.backbone import FrozenTextCast, encode_token_embeddings, project_text
from ordclip.models.prompts import PromptLearner


@dataclass
class Task:
    """What a method needs to know of a dataset: its ranks, their prompt words, the label of
    rank 0 and (for NumCLIP) the coarse bins: start labels, words and prompt context."""

    num_ranks: int
    rank_names: list[str]
    context: str
    min_label: int = 0
    coarse: dict | None = None
    lowest_label: int | None = None  # the dataset's own lowest label, where it is above min_label (a rank space)


@dataclass
class ParamGroup:
    """Parameters trained at one learning rate (0 = frozen); ``weight_decay`` None = the method's."""

    name: str
    params: list[nn.Parameter]
    lr: float
    weight_decay: float | None = None


@dataclass
class Stage:
    """One training stage: how long, which parameters at which learning rate (lr 0 = frozen),
    the weight of each loss term, and the view of the training images (ordclip.data.loader.VIEWS;
    None = random crop + flip)."""

    name: str
    epochs: int
    groups: list[ParamGroup]
    loss_weights: dict[str, float] = field(default_factory=dict)
    view: str | None = None


def fp32(fn):
    """Run ``fn`` with autocast off and its tensor arguments in float32.

    Training and evaluation run under bf16 autocast on a GPU, where a matmul returns bf16: logits
    near 100·cos ∈ [16, 32) would step by 0.125 and neighbouring ranks could tie (argmax then takes
    the lower one). Logits, and what is computed from them (NumCLIP's regressor), are therefore
    computed in float32 (our choice; the official fp16 AMP rounds them to 0.0156). Outside autocast
    (the CPU) this changes nothing: ``.float()`` of a float32 tensor is the tensor itself."""

    def wrapped(*args, **kwargs):
        cast = [a.float() if torch.is_tensor(a) and a.is_floating_point() else a for a in args]
        device = next((a.device.type for a in cast if torch.is_tensor(a)), "cpu")
        with torch.autocast(device, enabled=False):
            return fn(*cast, **kwargs)

    wrapped.__doc__, wrapped.__name__ = fn.__doc__, fn.__name__
    return wrapped


@fp32
def scaled_logits(logit_scale: torch.Tensor, image: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
    """exp(logit_scale) · image · textᵀ of normalised features, in float32 (see ``fp32``)."""
    return logit_scale.exp() * image @ text.T


class RankTextModel(nn.Module):
    """CLIP with a prompt learner: logits = exp(logit_scale) · norm(f_img) · norm(f_txt)ᵀ.

    The whole backbone starts frozen (text tower and logit scale stay so); a method's stage
    unfreezes the image encoder by giving it a learning rate.
    """

    def __init__(self, backbone: nn.Module, prompts: PromptLearner) -> None:
        super().__init__()
        self.backbone = backbone
        self.prompts = prompts
        for p in backbone.parameters():
            p.requires_grad_(False)
        self.text_cast = FrozenTextCast(backbone.transformer)

    def pooled_text(self) -> torch.Tensor:
        """(R, width) the text transformer's EOT features of the prompts, before the projection."""
        x, eot = self.prompts()
        return encode_token_embeddings(self.backbone, x, eot, self.prompts.length,
                                       self.text_cast.weights(x.device.type), project=False)

    def text_features(self, pooled: torch.Tensor | None = None) -> torch.Tensor:
        """(R, D) normalised rank text features (from ``pooled``, pooled_text's output, if given)."""
        pooled = self.pooled_text() if pooled is None else pooled
        return F.normalize(project_text(self.backbone, pooled), dim=-1)

    def image_features(self, images: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.backbone.encode_image(images), dim=-1)

    def logits(self, images: torch.Tensor, text: torch.Tensor | None = None) -> torch.Tensor:
        text = self.text_features() if text is None else text
        return scaled_logits(self.backbone.logit_scale, self.image_features(images), text)


class PromptMethod(nn.Module):
    """Shared body of prompt-learning methods (CoOp, OrdinalCLIP): a RankTextModel, one stage
    training context, ranks and image encoder."""

    prototype_unit = "rank"  # one prototype per rank (ordclip.train.prototype_labels)

    def __init__(self, backbone: nn.Module, prompts: PromptLearner, cfg: dict) -> None:
        super().__init__()
        self.model = RankTextModel(backbone, prompts)
        self.cfg = cfg

    def rank_parameters(self) -> list[nn.Parameter]:
        p = self.model.prompts
        return [p.ranks] if p.ranks is not None else [p.base_ranks]

    def stages(self) -> list[Stage]:
        lr = self.cfg["lr"]
        groups = [
            ParamGroup("context", [self.model.prompts.context], lr["context"]),
            ParamGroup("ranks", self.rank_parameters(), lr["ranks"]),
            ParamGroup("image_encoder", list(self.model.backbone.visual.parameters()), lr["image_encoder"]),
        ]
        return [Stage("train", self.cfg["epochs"], groups, dict(self.cfg["loss_weights"]))]

    def eval_state(self) -> torch.Tensor:
        """Rank text features, computed once per evaluation pass."""
        return self.model.text_features()

    def prototypes(self) -> torch.Tensor:
        """(R, D) what images are scored against: the normalised rank text features (after
        RankFormer where the prompts have one)."""
        return self.model.text_features()

    def predict(self, images: torch.Tensor, state: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        return {"logits": self.model.logits(images, state)}


def prompt_learner(backbone: nn.Module, tok, task: Task, cfg: dict, **kwargs) -> PromptLearner:
    """A PromptLearner over the backbone's token embeddings, context from the task if configured."""
    return PromptLearner(
        backbone.token_embedding, tok, task.num_ranks,
        context=task.context if cfg["init_context"] else None, n_ctx=cfg["n_ctx"],
        context_length=backbone.positional_embedding.shape[0], **kwargs,
    )
