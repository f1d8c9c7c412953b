"""CLIP ViT models and the CLIP tokenizer in torch alone, without importing open_clip.

``import open_clip`` loads torchvision (and with it torch._dynamo), timm and huggingface_hub:
about 4 s of every job that builds a model, for classes of a few dozen lines. This module holds
those classes, copied from open_clip 3.3.0 (MIT licence; open_clip/transformer.py, model.py,
tokenizer.py) for the plain ViT configurations ordclip uses, with the same module tree, parameter
names, initialisation (the same random draws in the same order) and forward computation. So a
model built here has open_clip's state_dict keys, draws the same random numbers when it is
created, and computes the same outputs bit for bit (tests/test_clip.py checks all three against
open_clip). Configurations outside that scope (ResNet towers, timm or Hugging Face towers, the
optional features of open_clip's configs) are not accepted here: see :func:`supports`.
"""

from __future__ import annotations

import gzip
import html
import importlib.util
import json
from collections import OrderedDict
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

# the keys of a model config this module builds, with the values it accepts where they are fixed
MODEL_KEYS = {"embed_dim", "quick_gelu", "vision_cfg", "text_cfg"}
VISION_KEYS = {"image_size", "layers", "width", "patch_size", "head_width", "mlp_ratio"}
TEXT_KEYS = {"context_length", "vocab_size", "width", "heads", "layers", "mlp_ratio"}


def open_clip_dir() -> Path:
    """The installed open_clip package's folder (its model configs and BPE vocabulary), found
    without running its ``__init__``."""
    spec = importlib.util.find_spec("open_clip")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError("open_clip (open_clip_torch) is not installed")
    return Path(next(iter(spec.submodule_search_locations)))


def supports(model_cfg: dict) -> bool:
    """Whether this module builds ``model_cfg`` (an open_clip model config): a ViT image tower and
    a causal text transformer with no option beyond those of OpenAI's CLIP ViTs."""
    vision, text = model_cfg.get("vision_cfg", {}), model_cfg.get("text_cfg", {})
    return (set(model_cfg) <= MODEL_KEYS and set(vision) <= VISION_KEYS and set(text) <= TEXT_KEYS
            and isinstance(vision.get("layers"), int))


class LayerNorm(nn.LayerNorm):
    """torch's LayerNorm with a cast back to the input dtype (open_clip.transformer.LayerNorm)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        orig_type = x.dtype
        x = F.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)
        return x.to(orig_type)


class QuickGELU(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(1.702 * x)


class ResidualAttentionBlock(nn.Module):
    """Pre-LN block: x + attn(ln_1(x)), then + mlp(ln_2(x)) (batch first)."""

    def __init__(self, d_model: int, n_head: int, mlp_ratio: float, act_layer: type[nn.Module]) -> None:
        super().__init__()
        self.ln_1 = LayerNorm(d_model)
        self.attn = nn.MultiheadAttention(d_model, n_head, batch_first=True)
        self.ls_1 = nn.Identity()
        self.ln_2 = LayerNorm(d_model)
        mlp_width = int(d_model * mlp_ratio)
        self.mlp = nn.Sequential(OrderedDict([
            ("c_fc", nn.Linear(d_model, mlp_width)),
            ("gelu", act_layer()),
            ("c_proj", nn.Linear(mlp_width, d_model)),
        ]))
        self.ls_2 = nn.Identity()

    def attention(self, q_x: torch.Tensor, attn_mask: torch.Tensor | None = None) -> torch.Tensor:
        attn_mask = attn_mask.to(q_x.dtype) if attn_mask is not None else None
        return self.attn(q_x, q_x, q_x, need_weights=False, attn_mask=attn_mask)[0]

    def forward(self, q_x: torch.Tensor, attn_mask: torch.Tensor | None = None) -> torch.Tensor:
        x = q_x + self.ls_1(self.attention(self.ln_1(q_x), attn_mask=attn_mask))
        x = x + self.ls_2(self.mlp(self.ln_2(x)))
        return x


class Transformer(nn.Module):
    def __init__(self, width: int, layers: int, heads: int, mlp_ratio: float, act_layer: type[nn.Module]) -> None:
        super().__init__()
        self.width, self.layers, self.batch_first, self.grad_checkpointing = width, layers, True, False
        self.resblocks = nn.ModuleList([ResidualAttentionBlock(width, heads, mlp_ratio, act_layer)
                                        for _ in range(layers)])

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None = None) -> torch.Tensor:
        for r in self.resblocks:
            x = r(x, attn_mask=attn_mask)
        return x


class VisionTransformer(nn.Module):
    """open_clip's VisionTransformer with a learnable position embedding, class-token pooling,
    ln_pre and ln_post, and a projection."""

    def __init__(self, image_size: int, patch_size: int, width: int, layers: int, heads: int, mlp_ratio: float,
                 output_dim: int, act_layer: type[nn.Module]) -> None:
        super().__init__()
        self.output_tokens = False
        self.image_size = (image_size, image_size)
        self.patch_size = (patch_size, patch_size)
        self.grid_size = (image_size // patch_size, image_size // patch_size)
        self.final_ln_after_pool = False
        self.output_dim = output_dim
        self.conv1 = nn.Conv2d(in_channels=3, out_channels=width, kernel_size=patch_size, stride=patch_size, bias=False)
        scale = width ** -0.5
        self.class_embedding = nn.Parameter(scale * torch.randn(width))
        self.positional_embedding = nn.Parameter(scale * torch.randn(self.grid_size[0] * self.grid_size[1] + 1, width))
        self.patch_dropout = nn.Identity()
        self.ln_pre = LayerNorm(width)
        self.transformer = Transformer(width, layers, heads, mlp_ratio, act_layer)
        self.attn_pool = None
        self.pool_type = "tok"
        self.ln_post = LayerNorm(width)
        self.proj = nn.Parameter(scale * torch.randn(width, output_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv1(x)
        x = x.reshape(x.shape[0], x.shape[1], -1)
        x = x.permute(0, 2, 1)
        cls = self.class_embedding.view(1, 1, -1).expand(x.shape[0], -1, -1)
        x = torch.cat([cls.to(x.dtype), x], dim=1)
        x = x + self.positional_embedding.to(x.dtype)
        x = self.patch_dropout(x)
        x = self.ln_pre(x)
        x = self.transformer(x)
        x = self.ln_post(x)
        pooled = x[:, 0]
        return pooled @ self.proj


class CLIP(nn.Module):
    """open_clip's CLIP: ``visual`` and the text tower's parts as attributes of the model."""

    def __init__(self, embed_dim: int, vision_cfg: dict, text_cfg: dict, quick_gelu: bool = False) -> None:
        super().__init__()
        act_layer = QuickGELU if quick_gelu else nn.GELU
        v = {"head_width": 64, "mlp_ratio": 4.0, "patch_size": 16, **vision_cfg}
        self.visual = VisionTransformer(v["image_size"], v["patch_size"], v["width"], v["layers"],
                                        v["width"] // v["head_width"], v["mlp_ratio"], embed_dim, act_layer)
        t = {"context_length": 77, "vocab_size": 49408, "width": 512, "heads": 8, "layers": 12, "mlp_ratio": 4.0,
             **text_cfg}
        # the text tower, in open_clip's TextTransformer order (its initialisation draws follow it)
        self.context_length, self.vocab_size = t["context_length"], t["vocab_size"]
        token_embedding = nn.Embedding(t["vocab_size"], t["width"])
        positional_embedding = nn.Parameter(torch.empty(t["context_length"], t["width"]))
        transformer = Transformer(t["width"], t["layers"], t["heads"], t["mlp_ratio"], act_layer)
        ln_final = LayerNorm(t["width"])
        text_projection = nn.Parameter(torch.empty(t["width"], embed_dim))
        nn.init.normal_(token_embedding.weight, std=0.02)
        nn.init.normal_(positional_embedding, std=0.01)
        proj_std = (transformer.width ** -0.5) * ((2 * transformer.layers) ** -0.5)
        attn_std = transformer.width ** -0.5
        fc_std = (2 * transformer.width) ** -0.5
        for block in transformer.resblocks:
            nn.init.normal_(block.attn.in_proj_weight, std=attn_std)
            nn.init.normal_(block.attn.out_proj.weight, std=proj_std)
            nn.init.normal_(block.mlp.c_fc.weight, std=fc_std)
            nn.init.normal_(block.mlp.c_proj.weight, std=proj_std)
        nn.init.normal_(text_projection, std=transformer.width ** -0.5)
        self.transformer = transformer
        self.token_embedding = token_embedding
        self.positional_embedding = positional_embedding
        self.ln_final = ln_final
        self.text_projection = text_projection
        self.text_pool_type = "argmax"
        mask = torch.empty(t["context_length"], t["context_length"])
        mask.fill_(float("-inf"))
        mask.triu_(1)
        self.register_buffer("attn_mask", mask, persistent=False)
        self.logit_scale = nn.Parameter(torch.ones([]) * np.log(1 / 0.07))
        self.logit_bias = None

    def encode_image(self, image: torch.Tensor, normalize: bool = False) -> torch.Tensor:
        features = self.visual(image)
        return F.normalize(features, dim=-1) if normalize else features

    def encode_text(self, text: torch.Tensor, normalize: bool = False) -> torch.Tensor:
        x = self.token_embedding(text)
        x = x + self.positional_embedding
        x = self.transformer(x, attn_mask=self.attn_mask)
        x = self.ln_final(x)
        x = x[torch.arange(x.shape[0]), text.argmax(dim=-1)]
        x = x @ self.text_projection
        return F.normalize(x, dim=-1) if normalize else x


def model_config(name: str, own_configs: Path) -> dict | None:
    """The open_clip model config ``name``: ordclip's own (``own_configs/<name>.json``) or one that
    open_clip ships; None when neither has it."""
    for folder in (own_configs, open_clip_dir() / "model_configs"):
        path = folder / f"{name}.json"
        if path.is_file():
            return json.loads(path.read_text())
    return None


def create_model(model_cfg: dict, weights: str | Path | None) -> CLIP:
    """A CLIP model of ``model_cfg`` (see :func:`supports`), loaded from an open_clip state_dict
    file (strict: every key must match), or randomly initialised as open_clip would (``None``)."""
    if not supports(model_cfg):
        raise ValueError("this model config is not a plain CLIP ViT (ordclip.models.clip.supports)")
    model = CLIP(model_cfg["embed_dim"], model_cfg["vision_cfg"], model_cfg["text_cfg"],
                 model_cfg.get("quick_gelu", False))
    if weights is not None:
        state = torch.load(weights, map_location="cpu", weights_only=True)
        if isinstance(state, dict) and "state_dict" in state:
            state = state["state_dict"]
        if next(iter(state)).startswith("module"):
            state = {k[7:]: v for k, v in state.items()}
        model.load_state_dict(state, strict=True)
    return model


# --- the tokenizer (open_clip.tokenizer.SimpleTokenizer, clean="lower", no reduction) ---------

@lru_cache()
def bytes_to_unicode() -> dict[int, str]:
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(2 ** 8):
        if b not in bs:
            bs.append(b)
            cs.append(2 ** 8 + n)
            n += 1
    return dict(zip(bs, [chr(c) for c in cs]))


def get_pairs(word: tuple[str, ...]) -> set[tuple[str, str]]:
    pairs = set()
    prev_char = word[0]
    for char in word[1:]:
        pairs.add((prev_char, char))
        prev_char = char
    return pairs


def _clean_lower(text: str) -> str:
    import ftfy

    text = html.unescape(html.unescape(ftfy.fix_text(text))).strip()
    return " ".join(text.split()).strip().lower()


class SimpleTokenizer:
    """CLIP's byte-level BPE tokenizer, with open_clip's vocabulary file; ``tok(texts)`` gives the
    (N, context_length) token ids: start token, the text's tokens, end token, zeros."""

    def __init__(self, context_length: int = 77, bpe_path: str | Path | None = None) -> None:
        import regex

        bpe_path = bpe_path or open_clip_dir() / "bpe_simple_vocab_16e6.txt.gz"
        self.byte_encoder = bytes_to_unicode()
        self.byte_decoder = {v: k for k, v in self.byte_encoder.items()}
        merges = gzip.open(bpe_path).read().decode("utf-8").split("\n")
        merges = [tuple(merge.split()) for merge in merges[1:49152 - 256 - 2 + 1]]
        vocab = list(bytes_to_unicode().values())
        vocab = vocab + [v + "</w>" for v in vocab]
        vocab += ["".join(merge) for merge in merges]
        special_tokens = ["<start_of_text>", "<end_of_text>"]
        vocab.extend(special_tokens)
        self.encoder = dict(zip(vocab, range(len(vocab))))
        self.decoder = {v: k for k, v in self.encoder.items()}
        self.bpe_ranks = dict(zip(merges, range(len(merges))))
        self.cache = {t: t for t in special_tokens}
        self.pat = regex.compile("|".join(special_tokens) + r"""|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+""",
                                 regex.IGNORECASE)
        self.vocab_size = len(self.encoder)
        self.all_special_ids = [self.encoder[t] for t in special_tokens]
        self.sot_token_id, self.eot_token_id = self.all_special_ids
        self.context_length = context_length

    def bpe(self, token: str) -> str:
        if token in self.cache:
            return self.cache[token]
        word = tuple(token[:-1]) + (token[-1] + "</w>",)
        pairs = get_pairs(word)
        if not pairs:
            return token + "</w>"
        while True:
            bigram = min(pairs, key=lambda pair: self.bpe_ranks.get(pair, float("inf")))
            if bigram not in self.bpe_ranks:
                break
            first, second = bigram
            new_word: list[str] = []
            i = 0
            while i < len(word):
                try:
                    j = word.index(first, i)
                    new_word.extend(word[i:j])
                    i = j
                except ValueError:
                    new_word.extend(word[i:])
                    break
                if word[i] == first and i < len(word) - 1 and word[i + 1] == second:
                    new_word.append(first + second)
                    i += 2
                else:
                    new_word.append(word[i])
                    i += 1
            word = tuple(new_word)
            if len(word) == 1:
                break
            pairs = get_pairs(word)
        out = " ".join(word)
        self.cache[token] = out
        return out

    def encode(self, text: str) -> list[int]:
        tokens = []
        for token in self.pat.findall(_clean_lower(text)):
            token = "".join(self.byte_encoder[b] for b in token.encode("utf-8"))
            tokens.extend(self.encoder[t] for t in self.bpe(token).split(" "))
        return tokens

    def __call__(self, texts: str | list[str], context_length: int | None = None) -> torch.LongTensor:
        texts = [texts] if isinstance(texts, str) else texts
        context_length = context_length or self.context_length
        all_tokens = [[self.sot_token_id] + self.encode(text) + [self.eot_token_id] for text in texts]
        result = torch.zeros(len(all_tokens), context_length, dtype=torch.long)
        for i, tokens in enumerate(all_tokens):
            if len(tokens) > context_length:
                tokens = tokens[:context_length]
                tokens[-1] = self.eot_token_id
            result[i, :len(tokens)] = torch.tensor(tokens)
        return result
