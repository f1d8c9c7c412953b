"""Contrastive pretraining of a small open_clip model on the synthetic captioned corpus (rule ``pretrain``).

The demo's backbone starts as a seeded random initialisation (the same as the ``init_seed``
backbone of the same seed) and is trained, both towers and the temperature, with CLIP's symmetric
InfoNCE loss on ordclip/data/corpus.py's images and captions. A batch of B pairs gives image
features I (B, D) and text features T (B, D), each row L2-normalised, and the similarity logits

    S = exp(t) · I Tᵀ,        t = learnable log inverse temperature (CLIP: t₀ = ln(1 / 0.07)),

whose diagonal holds the matching pairs. The loss is the mean of the two cross-entropies, image →
text over each row and text → image over each column:

    L = ½ [ −1/B Σ_i log( exp(S_ii) / Σ_j exp(S_ij) )  +  −1/B Σ_j log( exp(S_jj) / Σ_i exp(S_ij) ) ]

As CLIP, t is clipped at ln(100) after each step. The output is an open_clip state_dict under
data/weights/, read by every later rule as any other backbone's weights.
"""

from __future__ import annotations

import json
import logging
import math
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ordclip import layout
from ordclip.data.corpus import Corpus, caption, start_corpus
from ordclip.data.loader import ImagePipeline
from ordclip.io import atomic_path, save_torch, write_text
from ordclip.models.backbone import create_backbone, encode_token_embeddings, tokenizer

MAX_LOGIT_SCALE = math.log(100.0)
LOG_EVERY = 25  # steps between two entries of log.jsonl and two progress lines

log_ = logging.getLogger(__name__)


def _clock(seconds: float) -> str:
    """1h02m03s / 4m05s / 6s (as training's progress lines)."""
    s = int(round(seconds))
    h, m, s = s // 3600, s % 3600 // 60, s % 60
    return f"{h}h{m:02d}m{s:02d}s" if h else f"{m}m{s:02d}s" if m else f"{s}s"


def progress_line(name: str, entry: dict, steps: int, batch_size: int) -> str:
    """One progress line of a pretraining: step, loss, temperature, lr, images per second, time
    elapsed and the estimated time left (from the pace so far)."""
    done, seconds = entry["step"] + 1, entry["seconds"]
    eta = _clock(seconds / done * (steps - done)) if seconds > 0 else "?"
    return (f"pretrain {name} step {done}/{steps} loss {entry['loss']:.4f} temperature {entry['temperature']:.4f} "
            f"lr {entry['lr']:.2e} {done * batch_size / max(seconds, 1e-9):.0f} img/s elapsed {_clock(seconds)} eta {eta}")


def clip_loss(image_features: torch.Tensor, text_features: torch.Tensor,
              logit_scale: torch.Tensor) -> torch.Tensor:
    """CLIP's symmetric InfoNCE over a batch of matching (image, text) rows (module docstring)."""
    img = F.normalize(image_features, dim=-1)
    txt = F.normalize(text_features, dim=-1)
    logits = logit_scale.exp() * img @ txt.T          # S_ij = exp(t) · <I_i, T_j>
    target = torch.arange(len(logits), device=logits.device)
    return 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target))


class CaptionTokens:
    """Token ids of captions, each distinct caption tokenized once."""

    def __init__(self, tok) -> None:
        self.tok, self.cache = tok, {}

    def __call__(self, texts: list[str]) -> torch.Tensor:
        new = [t for t in dict.fromkeys(texts) if t not in self.cache]
        if new:
            for t, ids in zip(new, self.tok(new)):
                self.cache[t] = ids
        return torch.stack([self.cache[t] for t in texts])


def encode_captions(model: nn.Module, ids: torch.Tensor) -> torch.Tensor:
    """Text features of token ids, computed only up to the longest EOT (exact under the causal mask)."""
    eot = ids.argmax(dim=-1)
    return encode_token_embeddings(model, model.token_embedding(ids[:, :int(eot.max()) + 1]), eot)


def _param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Weight decay on matrices only: not on gains, biases, embeddings of positions, or the temperature."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if p.ndim >= 2 and "positional_embedding" not in name and "token_embedding" not in name:
            decay.append(p)
        else:
            no_decay.append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def lr_at(step: int, cfg: dict) -> float:
    """Linear warm-up over ``warmup`` steps, then cosine decay to zero at ``steps``."""
    if step < cfg["warmup"]:
        return cfg["lr"] * (step + 1) / cfg["warmup"]
    progress = (step - cfg["warmup"]) / max(1, cfg["steps"] - cfg["warmup"])
    return cfg["lr"] * 0.5 * (1 + math.cos(math.pi * progress))


def train_contrastive(model: nn.Module, corpus: Corpus, bb: dict, cfg: dict,
                      log: list[dict] | None = None) -> nn.Module:
    """Train ``model`` in place with CLIP's loss on ``corpus`` for ``cfg['steps']`` steps of
    ``cfg['batch_size']`` pairs (images random-cropped and flipped, a fresh caption per use)."""
    device = torch.device("cpu")
    gen = torch.Generator().manual_seed(cfg["seed"])
    rng = np.random.default_rng(cfg["seed"])
    pipeline = ImagePipeline(bb["image_size"], bb.get("features_normalize", "clip"), True, device)
    tokens = CaptionTokens(tokenizer(bb))
    with torch.no_grad():
        model.logit_scale.fill_(math.log(1 / cfg["temperature"]))
    opt = torch.optim.AdamW(_param_groups(model, cfg["weight_decay"]), lr=cfg["lr"], betas=(0.9, 0.98), eps=1e-6)
    images = torch.from_numpy(corpus.images)
    model.train()
    start = time.perf_counter()
    for step in range(cfg["steps"]):
        idx = torch.randint(0, len(images), (cfg["batch_size"],), generator=gen)
        x = pipeline(images[idx], train=True, generator=gen)
        ids = tokens([caption(corpus.attributes[i], rng) for i in idx.tolist()])
        for group in opt.param_groups:
            group["lr"] = lr_at(step, cfg)
        loss = clip_loss(model.encode_image(x), encode_captions(model, ids), model.logit_scale)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        with torch.no_grad():
            model.logit_scale.clamp_(0, MAX_LOGIT_SCALE)
        if step % LOG_EVERY == 0 or step == cfg["steps"] - 1:
            entry = {"step": step, "loss": loss.item(), "temperature": 1 / model.logit_scale.exp().item(),
                     "lr": lr_at(step, cfg), "seconds": round(time.perf_counter() - start, 2)}
            log_.info(progress_line(bb["name"], entry, cfg["steps"], cfg["batch_size"]))
            if log is not None:
                log.append(entry)
    return model.eval()


def sample_grid(corpus: Corpus, path: str | Path, seed: int, n: int = 16) -> None:
    """A grid of ``n`` corpus images, each with one of its captions (the report's figure)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rng = np.random.default_rng(seed)
    picks = rng.choice(len(corpus.images), size=n, replace=False)
    cols = 4
    fig, axes = plt.subplots(math.ceil(n / cols), cols, figsize=(10, 2.9 * math.ceil(n / cols)))
    for ax, i in zip(axes.flat, picks):
        ax.imshow(corpus.images[i], interpolation="nearest")
        text = caption(corpus.attributes[i], rng)
        ax.set_title("\n".join(_wrap(text, 28)), fontsize=8)
        ax.axis("off")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=80)
    plt.close(fig)


def loss_curve(log: list[dict], batch_size: int, path: str | Path) -> None:
    """Loss (with chance, ln B) and temperature against the step (the report's figure)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = [r["step"] for r in log]
    fig, (a, b) = plt.subplots(1, 2, figsize=(9, 3.2))
    a.plot(steps, [r["loss"] for r in log], label="InfoNCE loss")
    a.axhline(math.log(batch_size), color="grey", linestyle=":", label=f"chance, ln {batch_size}")
    a.set_xlabel("step")
    a.legend()
    b.plot(steps, [r["temperature"] for r in log], color="tab:orange")
    b.set_xlabel("step")
    b.set_ylabel("temperature 1 / exp(t)")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=80)
    plt.close(fig)


def _wrap(text: str, width: int) -> list[str]:
    lines, line = [], ""
    for word in text.split():
        if line and len(line) + 1 + len(word) > width:
            lines.append(line)
            line = word
        else:
            line = f"{line} {word}".strip()
    return lines + [line]


def pretrain(job: dict) -> None:
    """Write a pretrained backbone (ordclip.jobs.job_config "pretrain"): its weights file
    data/weights/<name>.pt, and data/pretrain/<name>/: log.jsonl (loss and temperature every 25
    steps), curve.png (of them), samples.png (corpus images with captions) and corpus.json (sizes, seconds)."""
    bb = job["backbone"]
    cfg = bb["weights"]["pretrain"]
    t0 = time.perf_counter()
    workers = torch.get_num_threads()  # the job's threads (OMP_NUM_THREADS): one corpus worker each
    log_.info(f"pretrain {bb['name']}: generating the corpus ({cfg['corpus']}) in {workers} process(es), "
              f"beside the random initialisation of seed {cfg['init_seed']}")
    corpus = start_corpus(cfg["corpus"], bb["resize"], workers)  # the workers draw while the model is built
    torch.manual_seed(cfg["init_seed"])
    model = create_backbone(bb, None)  # the seeded random initialisation, as `init_seed` backbones
    corpus = corpus()
    t_corpus = time.perf_counter() - t0
    log_.info(f"pretrain {bb['name']}: corpus of {len(corpus.images)} images in {_clock(t_corpus)}; "
              f"{cfg['steps']} steps of {cfg['batch_size']} pairs")
    log: list[dict] = []
    train_contrastive(model, corpus, bb, cfg, log)
    name = bb["name"]
    with atomic_path(layout.backbone_weights(name)) as tmp:
        save_torch(model.state_dict(), tmp)
    write_text(layout.pretrain_file(name, "log.jsonl"), "".join(json.dumps(r) + "\n" for r in log))
    loss_curve(log, cfg["batch_size"], layout.pretrain_file(name, "curve.png"))
    sample_grid(corpus, layout.pretrain_file(name, "samples.png"), cfg["seed"])
    families = {f: sum(a["family"] == f for a in corpus.attributes) for f in dict.fromkeys(
        a["family"] for a in corpus.attributes)}
    write_text(layout.pretrain_file(name, "corpus.json"), json.dumps({
        "images": len(corpus.images), "families": families, "distinct_images": len(set(corpus.hashes)),
        "corpus_seconds": round(t_corpus, 2), "total_seconds": round(time.perf_counter() - t0, 2),
        "final_loss": log[-1]["loss"], "final_temperature": log[-1]["temperature"]}, indent=1) + "\n")
