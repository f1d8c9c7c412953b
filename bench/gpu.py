"""GPU benchmark: paper-shaped training of every trained method, our step beside the official way.

Each trained method of the paper suite (baseline, coop, ordinalclip, l2rclip's two stages,
numclip) is built with its paper-suite parameters (params.yaml, suite ``paper``, dataset
``morph2``: its rank space, batch size, learning rates, bf16 autocast) on a randomly initialised
CLIP ViT-B/16 (no download) and trained on random uint8 images of MORPH II setting A's size (5,492
images cached at 256 px: 3,955 train, 439 val, 1,098 test, as one fold of the paper protocol). For
each it reports:

- ``img/s``: training images per second of the whole step as ordclip.train runs it (crop/flip on
  the device, forward, every loss term, backward, optimizer step), after warm-up;
- the step split, each part timed alone with the device synchronised around it: ``data`` (batch
  gather + augmentation), ``image`` (image tower forward, and backward when it trains), ``text``
  (text transformer forward/backward at the shape and count the step uses), ``optim`` (optimizer
  step), ``other`` (the rest of the step: losses, heads, prompt learner); ``ckpt s`` is one
  resume.pt write (ordclip.train._save_resume; it happens once per checkpoint_minutes);
- ``peak GiB``: peak device memory of the method's steps (CUDA; on the CPU the process's peak RSS);
- ``MFU``: model FLOPs per step (from the model config: ViT and text transformer matmuls and
  attention, x3 for a trained tower, x2 for a frozen one that passes gradients to its input, x1
  frozen and input-free) over step time, against the device's measured peak (a large bf16 matmul
  on CUDA; fp32 on the CPU);
- ``official img/s``: the same step done as the official OrdinalCLIP/NumCLIP code does it: the text
  transformer over all 77 positions (open_clip's encode_text; ours stops at the longest EOT, exact
  under the causal mask) and a host sync per step (the loss read back for logging);
- ``run min``: whole-run wall time projected from the measured step, evaluation pass and checkpoint
  times for the method's epochs (not a measured run).

    .venv/bin/python bench/gpu.py [--steps 20] [--out bench/gpu.md]    # CUDA, ViT-B/16, about 6 min on an H100-class GPU
    .venv/bin/python bench/gpu.py --tiny                               # any device, the demo's tiny model, small data
"""

from __future__ import annotations

import argparse
import contextlib
import math
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import machine  # noqa: E402

import ordclip.methods.base as method_base  # noqa: E402
from ordclip.config import load_params, run_config  # noqa: E402
from ordclip.data.loader import ImagePipeline, Part  # noqa: E402
from ordclip.methods import METHODS, load  # noqa: E402
from ordclip.models.backbone import create_backbone, encode_token_embeddings, tokenizer  # noqa: E402
from ordclip.runs import make_task  # noqa: E402
from ordclip.train import _save_resume, amp_context, make_optimizer, predict_part, set_trainable, trainable_names  # noqa: E402,E501

ROOT = Path(__file__).resolve().parents[1]
MORPH = {"train": 3955, "val": 439, "test": 1098}       # setting A, one fold: 80/20, 10 % of train as val
TINY = {"train": 96, "val": 32, "test": 32}


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, device: torch.device, reps: int) -> float:
    """Median seconds of ``fn()`` over ``reps`` calls after one warm-up call, synchronised."""
    fn()
    times = []
    for _ in range(reps):
        sync(device)
        t0 = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def peak_flops(device: torch.device) -> tuple[float, str]:
    """Measured matmul rate (FLOP/s) of the device: bf16 8192^3 on CUDA, fp32 1024^3 on the CPU."""
    n, dtype = (8192, torch.bfloat16) if device.type == "cuda" else (1024, torch.float32)
    a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
    seconds = timed(lambda: a @ b, device, 10 if device.type == "cuda" else 3)
    return 2 * n ** 3 / seconds, f"{'bf16' if dtype == torch.bfloat16 else 'fp32'} matmul {n}^3"


def vit_forward_flops(visual: torch.nn.Module, image_size: int) -> float:
    """Forward FLOPs of open_clip's VisionTransformer for one image (matmuls and attention)."""
    if not hasattr(visual, "conv1") or not hasattr(visual, "transformer"):
        raise SystemExit("bench/gpu.py counts FLOPs of ViT backbones only")
    w, p = visual.conv1.out_channels, visual.conv1.kernel_size[0]
    n = (image_size // p) ** 2 + 1
    layers = len(visual.transformer.resblocks)
    return 2 * (n - 1) * 3 * p * p * w + layers * (24 * n * w * w + 4 * n * n * w) + 2 * w * visual.proj.shape[1]


def text_forward_flops(backbone: torch.nn.Module, seqs: int, length: int) -> float:
    """Forward FLOPs of the text transformer over ``seqs`` sequences of ``length`` tokens."""
    w, layers = backbone.transformer.width, len(backbone.transformer.resblocks)
    return seqs * (layers * (24 * length * w * w + 4 * length * length * w) + 2 * w * backbone.text_projection.shape[1])


def full_length_encode(model, x, eot):
    """The official way: the text transformer over all context positions (open_clip encode_text)."""
    length = x.shape[1]
    h = x + model.positional_embedding[:length].to(x.dtype)
    h = model.ln_final(model.transformer(h, attn_mask=model.attn_mask[:length, :length]))
    h = h[torch.arange(h.shape[0], device=h.device), eot]
    proj = model.text_projection
    return proj(h) if isinstance(proj, torch.nn.Linear) else h @ proj


@contextlib.contextmanager
def official_text(enabled: bool):
    """Within the block, prompt methods encode text the official way (see full_length_encode)."""
    if not enabled:
        yield
        return
    saved = method_base.encode_token_embeddings
    method_base.encode_token_embeddings = full_length_encode
    try:
        yield
    finally:
        method_base.encode_token_embeddings = saved


def synthetic_parts(sizes: dict[str, int], resize: int, lo: int, hi: int, offset: int,
                    device: torch.device) -> tuple[dict[str, Part], np.ndarray]:
    """Random uint8 images and uniform labels lo..hi for each part, on the device."""
    rng = np.random.default_rng(0)
    parts, labels = {}, []
    start = 0
    for name, n in sizes.items():
        y = rng.integers(lo, hi + 1, size=n)
        labels.append(y)
        images = torch.from_numpy(rng.integers(0, 256, size=(n, resize, resize, 3), dtype=np.uint8)).to(device)
        parts[name] = Part(np.arange(start, start + n), images, torch.from_numpy(y - lo + offset).to(device))
        start += n
    return parts, np.concatenate(labels)


def step_fn(method, stage, part: Part, pipeline, opt, gen, batch: int, amp, device, official: bool):
    """One training step as ordclip.train._train_epoch takes it (random batch of the part)."""
    def step():
        idx = torch.randint(0, len(part.index), (batch,), generator=gen).to(device)
        x, y = pipeline(part.images[idx], train=True, generator=gen, view=stage.view), part.ranks[idx]
        with amp:
            terms = method.losses(x, y, stage)
        total = sum(stage.loss_weights[k] * v.float() for k, v in terms.items())
        opt.zero_grad(set_to_none=True)
        total.backward()
        opt.step()
        if official:
            float(total.detach())  # the per-step host sync of the official loop's logging
    return step


def bench_method(name: str, cfg: dict, dataset_ranks: list[int], args, device, peak: float) -> list[dict]:
    """One row per training stage of method ``name`` (run configuration ``cfg``)."""
    bb, mcfg, ds = cfg["backbone"], cfg["method"], cfg["dataset"]
    sizes = TINY if args.tiny else MORPH
    # labels of the dataset's own ranks; the method sees them in its rank space (apply_rank_space)
    offset = ds.get("rank_offset", 0)
    parts, labels = synthetic_parts(sizes, bb["resize"], dataset_ranks[0], dataset_ranks[1], offset, device)
    task = make_task(ds, labels)
    torch.manual_seed(0)
    backbone = create_backbone(bb, None)
    method = load(mcfg["kind"]).build(backbone, tokenizer(bb), task, mcfg).to(device)
    return [bench_stage(name, cfg, method, backbone, i, parts, sizes, args, device, peak)
            for i in range(len(method.stages()))]


def bench_stage(name: str, cfg: dict, method, backbone, stage_index: int, parts: dict[str, Part],
                sizes: dict[str, int], args, device, peak: float) -> dict:
    """Images/s, step split, checkpoint, memory, MFU and projected run time of one stage."""
    bb, mcfg = cfg["backbone"], cfg["method"]
    stage = method.stages()[stage_index]
    set_trainable(method, stage)
    opt = make_optimizer(stage, mcfg)
    pipeline = ImagePipeline(bb["image_size"], bb["normalize"], True, device)
    amp = amp_context(device, cfg.get("precision", "auto"))
    gen = torch.Generator().manual_seed(0)
    batch = mcfg["batch_size"]
    reps = args.steps

    # what the towers see in one step: text transformer calls, their shape and gradient needs
    seen = {"text": [], "image": []}
    hooks = [backbone.transformer.register_forward_pre_hook(lambda m, a: seen["text"].append(
                 (tuple(a[0].shape), a[0].requires_grad))),
             backbone.visual.register_forward_pre_hook(lambda m, a: seen["image"].append(tuple(a[0].shape)))]
    method.train()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    ours = step_fn(method, stage, parts["train"], pipeline, opt, gen, batch, amp, device, official=False)
    ours()
    for h in hooks:
        h.remove()
    step_s = timed(ours, device, reps)
    peak_mem = (torch.cuda.max_memory_allocated(device) if device.type == "cuda"
                else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024) / 2 ** 30
    with official_text(True):
        official = step_fn(method, stage, parts["train"], pipeline, opt, gen, batch, amp, device, official=True)
        official_s = timed(official, device, reps)

    # the split, each part alone
    def data():
        idx = torch.randint(0, len(parts["train"].index), (batch,), generator=gen).to(device)
        return pipeline(parts["train"].images[idx], train=True, generator=gen, view=stage.view)
    x = data()
    image_trains = any(p.requires_grad for p in backbone.visual.parameters())

    def image():
        with amp, (contextlib.nullcontext() if image_trains else torch.no_grad()):
            f = backbone.encode_image(x)
        if image_trains:
            f.float().sum().backward()
    text_calls = [(shape, grad) for shape, grad in seen["text"]]

    def text():
        for shape, grad in text_calls:
            h = torch.randn(shape, device=device, requires_grad=grad)
            with amp, (contextlib.nullcontext() if grad else torch.no_grad()):
                out = backbone.transformer(h, attn_mask=backbone.attn_mask[:shape[1], :shape[1]])
            if grad:
                out.float().sum().backward()
    split = {"data": timed(data, device, reps), "image": timed(image, device, reps),
             "text": timed(text, device, reps), "optim": timed(opt.step, device, reps)}
    split["other"] = max(step_s - sum(split.values()), 0.0)
    opt.zero_grad(set_to_none=True)

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "resume.pt"
        names = trainable_names(method, [stage])
        sync(device)
        t0 = time.perf_counter()
        _save_resume(path, {}, (stage_index, 1), method, names, opt, None, gen, [], {}, {"val": [], "test": []}, [])
        ckpt_s = time.perf_counter() - t0
        ckpt_mb = path.stat().st_size / 2 ** 20
    eval_s = timed(lambda: predict_part(method, parts["test"], pipeline, amp), device, 1) \
        * (sizes["val"] + sizes["test"]) / sizes["test"]

    image_mult = 3 if image_trains else 1
    flops = batch * image_mult * vit_forward_flops(backbone.visual, bb["image_size"])
    for shape, grad in text_calls:
        flops += (2 if grad else 1) * text_forward_flops(backbone, shape[0], shape[1])
    steps_per_epoch = math.ceil(sizes["train"] / batch)
    epochs = stage.epochs
    run_s = epochs * (steps_per_epoch * step_s + eval_s)
    run_s += math.floor(run_s / (60 * args.checkpoint_minutes)) * ckpt_s
    return {"method": name, "stage": stage.name, "batch": batch, "img/s": batch / step_s,
            "official img/s": batch / official_s, **{f"{k} ms": 1e3 * v for k, v in split.items()},
            "ckpt s": ckpt_s, "ckpt MiB": ckpt_mb, "peak GiB": peak_mem, "MFU": flops / step_s / peak,
            "text seq": ",".join(f"{s[0]}x{s[1]}" for s, _ in text_calls), "epochs": epochs,
            "run min": run_s / 60}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tiny", action="store_true", help="the demo's tiny backbone and small data, any device")
    parser.add_argument("--steps", type=int, help="timed steps per measurement (default 20; --tiny 2)")
    parser.add_argument("--methods", nargs="*", help="trained methods to run (default: the paper suite's)")
    parser.add_argument("--checkpoint-minutes", type=float, default=5.0, help="for the whole-run projection")
    parser.add_argument("--out", type=Path, help="also write the table to this file")
    args = parser.parse_args()
    args.steps = args.steps or (2 if args.tiny else 20)
    if not args.tiny and not torch.cuda.is_available():
        raise SystemExit("no CUDA device: the paper-shaped benchmark needs one (use --tiny for the CPU test run)")
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    params = load_params([ROOT / "params.yaml"])
    suite = params["suites"]["paper"]
    methods = args.methods or [m for m in suite["methods"] if METHODS[params["methods"][m]["kind"]]["trains_on"] == "images"]
    peak, peak_how = peak_flops(device)
    t0 = time.perf_counter()
    rows = []
    for m in methods:
        cfg = run_config(params, "paper", "morph2", m)
        if args.tiny:
            cfg["backbone"] = {"name": "tiny", **params["backbones"]["tiny"]}
            cfg["method"]["batch_size"] = min(cfg["method"]["batch_size"], 16)
        rows += bench_method(m, cfg, params["datasets"]["morph2"]["ranks"], args, device, peak)
    cols = ["method", "stage", "batch", "img/s", "official img/s", "data ms", "image ms", "text ms", "optim ms",
            "other ms", "ckpt s", "ckpt MiB", "peak GiB", "MFU", "text seq", "epochs", "run min"]
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else machine()
    lines = [f"device: {name}; backbone: {'tiny (demo)' if args.tiny else 'ViT-B/16, random weights'}; "
             f"peak: {peak / 1e12:.2f} TFLOP/s ({peak_how}); torch {torch.__version__}; "
             f"{args.steps} timed steps per figure; benchmark wall time {time.perf_counter() - t0:.0f} s", "",
             "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in rows:
        cells = [f"{r[c]:.1%}" if c == "MFU" else f"{r[c]:.2f}" if isinstance(r[c], float) else str(r[c]) for c in cols]
        lines.append("| " + " | ".join(cells) + " |")
    text = "\n".join(lines)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
