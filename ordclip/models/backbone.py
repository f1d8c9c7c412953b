"""The open_clip backbone: creation from a config and weights file, and text encoding from
token embeddings (what prompt learners need)."""

from __future__ import annotations

import logging
import pickle
import struct
from pathlib import Path

import torch
from torch import nn

from ordclip.errors import ConfigError
from ordclip.io import atomic_path, save_torch

CONFIG_DIR = Path(__file__).parent / "configs"
_registered = False


def register_configs() -> None:
    """Make ordclip's own open_clip model configs (e.g. ``ordclip-tiny``) known to open_clip."""
    global _registered
    if not _registered:
        import open_clip

        open_clip.add_model_config(CONFIG_DIR)
        _registered = True


def create_backbone(cfg: dict, weights: str | Path | None) -> nn.Module:
    """The open_clip CLIP model of backbone config ``cfg``, loaded from a local ``weights`` file.

    ``weights=None`` gives a random initialisation (used only to write a tiny backbone's
    weights file). Weights load with ``weights_only=True``.
    """
    import open_clip

    register_configs()
    if cfg["model"] not in open_clip.list_models():
        raise ConfigError(f"backbones.{cfg['name']}.model: unknown open_clip model {cfg['model']!r}")
    if weights is not None and not Path(weights).is_file():
        raise ConfigError(f"backbones.{cfg['name']}: weights file {weights} not found")
    root = logging.getLogger()
    if weights is None:  # our seeded initialisation, deliberately random: open_clip's warning would mislead
        root.addFilter(_no_pretrained_warning)
    try:
        model = open_clip.create_model(
            cfg["model"], pretrained=str(weights) if weights is not None else None, weights_only=True
        )
    finally:
        root.removeFilter(_no_pretrained_warning)
    return model.float().eval()


def _no_pretrained_warning(record: logging.LogRecord) -> bool:
    """Drop open_clip's "No pretrained weights loaded ... initialized randomly" record."""
    return not record.getMessage().startswith("No pretrained weights loaded")


def init_weights(cfg: dict, out: str | Path) -> None:
    """Write a randomly initialised backbone (seeded by ``weights.init_seed``) as a state_dict file."""
    torch.manual_seed(cfg["weights"]["init_seed"])
    model = create_backbone(cfg, None)
    with atomic_path(out) as tmp:
        save_torch(model.state_dict(), tmp)


def convert_openai(source: str | Path, out: str | Path) -> None:
    """Write OpenAI's CLIP checkpoint (a TorchScript archive, or its state_dict) as an open_clip
    state_dict file: open_clip rebuilds the model from the checkpoint's shapes, with QuickGELU."""
    from open_clip.openai import load_openai_model

    try:
        model = load_openai_model(str(source), precision="fp32", device="cpu")
    except (RuntimeError, KeyError, ValueError, EOFError, pickle.UnpicklingError, struct.error) as exc:
        raise ConfigError(f"{source}: not an OpenAI CLIP checkpoint: {exc}") from None
    with atomic_path(out) as tmp:
        save_torch(model.state_dict(), tmp)


def tokenizer(cfg: dict):
    """open_clip's tokenizer for the backbone (the bundled BPE vocabulary; no network)."""
    import open_clip

    register_configs()
    return open_clip.get_tokenizer(cfg["model"])


def encode_token_embeddings(model: nn.Module, x: torch.Tensor, eot: torch.Tensor, length: int | None = None,
                            transformer_weights: dict[str, torch.Tensor] | None = None,
                            project: bool = True) -> torch.Tensor:
    """CLIP's text tower from token embeddings ``x`` (N, L, D), pooled at the EOT positions.

    Positions after the longest EOT are dropped first: under the causal mask no earlier token
    attends to them, so the result is exactly that of the full 77-token pass. ``length`` is that
    count (the longest EOT + 1); None reads it from ``eot``, a host sync, so a training step
    passes it. ``transformer_weights``: tensors that replace the text transformer's own of the
    same names (FrozenTextCast, the frozen weights already in the autocast dtype). ``project``
    False stops before the text projection (project_text applies it).
    """
    if length is None:
        length = int(eot.max()) + 1
    h = x[:, :length] + model.positional_embedding[:length].to(x.dtype)
    mask = model.attn_mask[:length, :length]
    if transformer_weights:
        h = torch.func.functional_call(model.transformer, transformer_weights, (h,), {"attn_mask": mask},
                                       tie_weights=False, strict=False)
    else:
        h = model.transformer(h, attn_mask=mask)
    h = model.ln_final(h)
    h = h[torch.arange(h.shape[0], device=h.device), eot]
    return project_text(model, h) if project else h


def project_text(model: nn.Module, h: torch.Tensor) -> torch.Tensor:
    """CLIP's text projection of pooled EOT features ``h`` (N, width)."""
    proj = model.text_projection
    return proj(h) if isinstance(proj, nn.Linear) else h @ proj


class FrozenTextCast:
    """The frozen text transformer's matmul weights (Linear layers and attention projections)
    held in the autocast dtype, cast once instead of by autocast at every use.

    Autocast casts these weights to its lower-precision dtype before every matmul and caches the
    cast only for weights that require gradients, so a frozen tower is cast again each step. The
    copies here hold the same values as those casts, so a step under autocast computes the same
    numbers. Layer norms stay as they are (autocast runs them in float32). A weight that requires
    gradients is never replaced, and a weight changed in place (its version counter moved) is
    cast again.
    """

    def __init__(self, transformer: nn.Module) -> None:
        self.params: list[tuple[str, nn.Parameter]] = []
        for name, module in transformer.named_modules():
            prefix = f"{name}." if name else ""
            if isinstance(module, nn.Linear):
                self.params += [(prefix + n, p) for n, p in module.named_parameters(recurse=False)]
            elif isinstance(module, nn.MultiheadAttention):
                self.params += [(prefix + n, p) for n, p in module.named_parameters(recurse=False)
                                if n.startswith(("in_proj", "q_proj", "k_proj", "v_proj"))]
        self.cache: dict[str, tuple[int, torch.Tensor]] = {}

    def weights(self, device_type: str) -> dict[str, torch.Tensor] | None:
        """The cast weights when autocast is on for ``device_type``, else None (nothing replaced)."""
        if not torch.is_autocast_enabled(device_type):
            return None
        dtype = torch.get_autocast_dtype(device_type)
        out = {}
        for name, p in self.params:
            if p.requires_grad or p.dtype == dtype:
                continue
            hit = self.cache.get(name)
            if hit is None or hit[0] != p._version or hit[1].dtype != dtype or hit[1].device != p.device:
                hit = (p._version, p.detach().to(dtype))
                self.cache[name] = hit
            out[name] = hit[1]
        return out


def compile_towers(model: nn.Module) -> None:
    """torch.compile the image tower and the text transformer in place (nn.Module.compile keeps
    their parameter names, so checkpoints are unchanged). The compiled kernels fuse operations and
    round differently from the eager ones."""
    model.visual.compile()
    model.transformer.compile()


@torch.no_grad()
def encode_texts(model: nn.Module, tok, texts: list[str]) -> torch.Tensor:
    """Text features of plain sentences (zero-shot prompts)."""
    ids = tok(texts).to(next(model.parameters()).device)
    emb = model.token_embedding(ids)
    return encode_token_embeddings(model, emb, ids.argmax(dim=-1))


def write_weights(cfg: dict, out: str | Path) -> None:
    """Write backbone ``cfg``'s weights file ``out`` as an open_clip state_dict: a seeded random
    initialisation (``weights.init_seed``), a download checked by sha256 (``weights.url``), or a
    local file (``weights.path``, checked when ``weights.sha256`` is given); OpenAI's format is
    converted (``weights.format: openai``)."""
    import shutil

    from ordclip import layout
    from ordclip.io import sha256_file

    weights = cfg["weights"]
    if "pretrain" in weights:
        raise ConfigError(f"backbones.{cfg['name']}: its weights are pretrained by `python -m ordclip pretrain` "
                          "(rule pretrain), not written by the backbone verb")
    if "init_seed" in weights:
        init_weights(cfg, out)
        return
    if "url" in weights:
        from ordclip.data.fetch import download

        source = Path(layout.downloads_dir()) / Path(weights["url"]).name
        download(weights["url"], source, weights["sha256"])
    else:
        source = Path(weights["path"])
        digest = sha256_file(source) if "sha256" in weights else None
        if digest is not None and digest != weights["sha256"]:
            raise ConfigError(f"backbones.{cfg['name']}.weights: {source} has sha256 {digest}, "
                              f"expected {weights['sha256']}")
    if weights.get("format", "open_clip") == "openai":
        convert_openai(source, out)
        return
    with atomic_path(out) as tmp:
        shutil.copyfile(source, tmp)
