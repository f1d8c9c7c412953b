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
  frozen and input-free; ViT-B/16 at 224 px is about 35 GFLOP forward, 105 forward + backward per
  image) over step time, against the device's measured peak (a large bf16 matmul on CUDA; fp32 on
  the CPU); ``MFU spec`` against the device's dense bf16 peak from its data sheet (SPEC_TFLOPS;
  "-" for a device not listed);
- ``--runs-per-gpu K``: K processes train the same method at once on the one GPU (each timing
  its steps from a common start, after its warm-up); the row gives their summed img/s, the
  figure from which to pick ORDCLIP_RUNS_PER_GPU (README, GPUs);
- a ``bare`` row per batch size: open_clip's image tower alone, forward + backward + fused AdamW
  (``torch.optim.AdamW(fused=True)`` on CUDA) on a ready batch, the ceiling of an image-trained step;
- ``official img/s``: the same step done as the official OrdinalCLIP/NumCLIP code does it: the
  prompts padded to all 77 positions and the text transformer run over them (ours stops at the
  longest EOT, exact under the causal mask), fp16 autocast with a GradScaler (the official
  ``precision: 16``; on CUDA), and a host sync per step (the loss read back for logging);
- ``official data img/s``: the official input pipeline alone (JPEG files decoded by PIL,
  torchvision's transforms, an 8-worker DataLoader; see official_data_rate), the most images per
  second the official loop could be fed; ``eval img/s`` ours (batch 256) and ``official eval img/s``
  (batch 32, 77-token text, as the official evaluation) over the val and test parts;
- ``syncs/step``: host syncs of one step of ours (ordclip.syncs.count_syncs; with CUDA also its sync
  debug mode); ``cpu ms``: the process's CPU time per step; ``GPU busy``: the share of a step's wall
  time in which the GPU runs kernels (torch.profiler, CUDA only; "-" elsewhere), low when the host
  cannot keep the GPU fed;
- ``run min``: whole-run wall time projected from the measured step, evaluation pass and checkpoint
  times for the method's epochs (not a measured run).

    .venv/bin/python bench/gpu.py [--steps 20] [--batches 32 64 128 256] [--out bench/gpu.md]   # CUDA, ViT-B/16
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
from ordclip.data.loader import ImagePipeline, Part, to_device  # noqa: E402
from ordclip.methods import METHODS, load  # noqa: E402
from ordclip.models.backbone import create_backbone, encode_token_embeddings, tokenizer  # noqa: E402
from ordclip.runs import make_task  # noqa: E402
from ordclip.syncs import count_syncs  # noqa: E402
from ordclip.train import _save_resume, amp_context, make_optimizer, predict_part, set_trainable, trainable_names  # noqa: E402,E501

ROOT = Path(__file__).resolve().parents[1]
MORPH = {"train": 3955, "val": 439, "test": 1098}       # setting A, one fold: 80/20, 10 % of train as val
TINY = {"train": 96, "val": 32, "test": 32}
# dense bf16 tensor-core peaks from the data sheets (TFLOP/s, without sparsity)
SPEC_TFLOPS = {"H200": 989.0, "H100": 989.0, "A100": 312.0, "L40S": 362.0, "A10": 125.0, "L4": 121.0}


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


def full_length_encode(model, x, eot, length=None, transformer_weights=None, project=True):
    """The official way (plain_prompt_learner.py:83-113 and TextEncoder.forward): the prompts laid
    into a template of all ``context_length`` positions, the positions after each EOT holding the
    embedding of token 0, and the text transformer run over all of them. ``x`` comes cut at the
    longest EOT, so it is padded back first; ``length`` and ``transformer_weights`` are ignored (the
    official code casts nothing ahead)."""
    full = model.positional_embedding.shape[0]
    pad = model.token_embedding.weight[0].to(x.dtype)
    x = torch.cat([x, pad.expand(x.shape[0], full - x.shape[1], -1)], dim=1)
    h = x + model.positional_embedding.to(x.dtype)
    h = model.ln_final(model.transformer(h, attn_mask=model.attn_mask))
    h = h[torch.arange(h.shape[0], device=h.device), eot]
    if not project:
        return h
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
    """One training step as ordclip.train takes it (a random batch of the part: indices drawn on
    the host and copied as the trainer copies them), or, ``official``, as the official loop takes
    it: fp16 autocast with a GradScaler on CUDA and the loss read back every step."""
    scaler = torch.amp.GradScaler("cuda") if official and device.type == "cuda" else None
    if scaler is not None:
        amp = torch.autocast("cuda", dtype=torch.float16)

    stage_inputs = getattr(method, "stage_inputs", None)
    inputs = stage_inputs(stage, part, pipeline, amp) if stage_inputs is not None and not official else None
    if official and hasattr(method, "_feature_stage"):
        method._feature_stage = None          # L2RCLIP: nothing computed ahead

    def step():
        idx = to_device(torch.randint(0, len(part.index), (batch,), generator=gen), device)
        x = inputs[idx] if inputs is not None else pipeline(part.images[idx], train=True, generator=gen,
                                                            view=stage.view)
        y = part.ranks[idx]
        if official and hasattr(method, "_text_cache"):
            method._text_cache = None         # L2RCLIP: its frozen prompt features recomputed each step
        with amp:
            terms = method.losses(x, y, stage)
        total = sum(stage.loss_weights[k] * v.float() for k, v in terms.items())
        opt.zero_grad(set_to_none=True)
        if scaler is not None:
            scaler.scale(total).backward()
            scaler.step(opt)
            scaler.update()
        else:
            total.backward()
            opt.step()
        if official:
            float(total.detach())  # the per-step host sync of the official loop's logging
    return step


class JpegFiles(torch.utils.data.Dataset):
    """The official input pipeline's dataset: JPEG files read by PIL, then torchvision's
    Resize, RandomCrop, RandomHorizontalFlip, ToTensor and Normalize (the OrdinalCLIP/NumCLIP
    training transform)."""

    def __init__(self, paths: list[Path], resize: int, size: int, normalize: str) -> None:
        import torchvision.transforms as T

        from ordclip.data.loader import NORMALIZE

        mean, std = NORMALIZE[normalize]
        self.paths = paths
        self.transform = T.Compose([T.Resize(resize), T.RandomCrop(size), T.RandomHorizontalFlip(), T.ToTensor(),
                                    T.Normalize(mean, std)])

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int):
        from PIL import Image

        with Image.open(self.paths[i]) as im:
            return self.transform(im.convert("RGB")), 0


_JPEGS: dict[tuple[int, int], list[Path]] = {}
_DATA_RATES: dict[tuple[int, int, int], float] = {}   # measured once per image size, count and batch


def official_data_rate(bb: dict, batch: int, count: int, args, device: torch.device) -> float:
    """Images/s of the official input pipeline alone: ``count`` random-pixel JPEGs (quality 95,
    at the cache's size; noise decodes slower than photographs) through a shuffling DataLoader of
    8 workers (2 with --tiny), pinned and copied to the device, after the first batch."""
    from PIL import Image

    key = (bb["resize"], count)
    if (*key, batch) in _DATA_RATES:
        return _DATA_RATES[(*key, batch)]
    if key not in _JPEGS:
        folder = Path(tempfile.mkdtemp(prefix="ordclip-jpegs-"))
        rng = np.random.default_rng(0)
        _JPEGS[key] = []
        for i in range(count):
            path = folder / f"{i}.jpg"
            pixels = rng.integers(0, 256, (bb["resize"], bb["resize"], 3), dtype=np.uint8)
            Image.fromarray(pixels).save(path, quality=95)
            _JPEGS[key].append(path)
    loader = torch.utils.data.DataLoader(
        JpegFiles(_JPEGS[key], bb["resize"], bb["image_size"], bb["normalize"]), batch_size=batch, shuffle=True,
        num_workers=2 if args.tiny else 8, pin_memory=device.type == "cuda", drop_last=True)
    batches = iter(loader)
    next(batches)
    n, t0 = 0, time.perf_counter()
    for x, _ in batches:
        x.to(device, non_blocking=True)
        n += len(x)
        if n >= args.steps * batch * 4:
            break
    sync(device)
    _DATA_RATES[(*key, batch)] = n / (time.perf_counter() - t0)
    return _DATA_RATES[(*key, batch)]


def gpu_busy(fn, device: torch.device, reps: int) -> float | None:
    """Share of the wall time of ``reps`` calls of ``fn`` in which CUDA kernels run (None off CUDA)."""
    if device.type != "cuda":
        return None
    from torch.profiler import ProfilerActivity, profile

    fn()
    sync(device)
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        t0 = time.perf_counter()
        for _ in range(reps):
            fn()
        sync(device)
        wall = time.perf_counter() - t0
    kernels = sum(e.time_range.elapsed_us() for e in prof.events() if e.device_type.name == "CUDA")
    return kernels / 1e6 / wall


def cpu_ms(fn, device: torch.device, reps: int) -> float:
    """The process's CPU time per call of ``fn`` (all threads), in ms."""
    fn()
    sync(device)
    t0 = time.process_time()
    for _ in range(reps):
        fn()
    sync(device)
    return 1e3 * (time.process_time() - t0) / reps


def syncs_per_step(fn, device: torch.device) -> int:
    """Host syncs of one call of ``fn`` (ordclip.syncs; on the CPU a proxy that counts every read
    back, also of host-resident values such as torch's non-fused AdamW step counters)."""
    with count_syncs(device) as events:
        fn()
    return len(events)


def bare_row(bb: dict, batch: int, args, device, peak: float, spec: float | None) -> dict:
    """open_clip's image tower alone: forward, backward and a fused AdamW step on a ready batch."""
    torch.manual_seed(0)
    visual = create_backbone(bb, None).visual.to(device).train()
    if device.type == "cuda":
        visual = visual.to(memory_format=torch.channels_last)
    opt = torch.optim.AdamW(visual.parameters(), lr=1e-5, weight_decay=5e-4,
                            **({"fused": True} if device.type == "cuda" else {"foreach": True}))
    amp = amp_context(device, "bf16")
    x = torch.randn(batch, 3, bb["image_size"], bb["image_size"], device=device)
    if device.type == "cuda":
        x = x.contiguous(memory_format=torch.channels_last)

    def step():
        with amp:
            loss = visual(x).float().pow(2).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    step_s = timed(step, device, args.steps)
    flops = batch * 3 * vit_forward_flops(visual, bb["image_size"])
    busy = gpu_busy(step, device, args.steps)
    return {"method": "bare", "stage": "image tower + AdamW", "batch": batch, "img/s": batch / step_s,
            "official img/s": None, "syncs/step": syncs_per_step(step, device),
            "cpu ms": cpu_ms(step, device, args.steps),
            "GPU busy": busy, "peak GiB": _peak_gib(device), "MFU": flops / step_s / peak,
            "MFU spec": flops / step_s / spec if spec else None}


def _peak_gib(device: torch.device) -> float:
    return (torch.cuda.max_memory_allocated(device) if device.type == "cuda"
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024) / 2 ** 30


def bench_method(name: str, cfg: dict, dataset_ranks: list[int], args, device, peak: float,
                 spec: float | None) -> list[dict]:
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
    return [bench_stage(name, cfg, method, backbone, i, parts, sizes, args, device, peak, spec, batch)
            for batch in args.batches for i in range(len(method.stages()))]


def bench_stage(name: str, cfg: dict, method, backbone, stage_index: int, parts: dict[str, Part],
                sizes: dict[str, int], args, device, peak: float, spec: float | None, batch: int | None) -> dict:
    """Images/s, step split, syncs, CPU time, GPU-busy share, checkpoint, memory, MFU and projected
    run time of one stage at ``batch`` (None: the method's own batch size)."""
    bb, mcfg = cfg["backbone"], cfg["method"]
    stage = method.stages()[stage_index]
    set_trainable(method, stage)
    opt = make_optimizer(stage, mcfg)
    pipeline = ImagePipeline(bb["image_size"], bb["normalize"], True, device)
    amp = amp_context(device, cfg.get("precision", "auto"))
    gen = torch.Generator().manual_seed(0)
    batch = batch or mcfg["batch_size"]
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
    peak_mem = _peak_gib(device)
    syncs, step_cpu_ms, busy = syncs_per_step(ours, device), cpu_ms(ours, device, reps), gpu_busy(ours, device, reps)
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
    with official_text(True):
        official_eval_s = timed(lambda: predict_part(method, parts["test"], pipeline, amp, batch_size=32), device, 1)

    image_mult = 3 if image_trains else 1
    flops = batch * image_mult * vit_forward_flops(backbone.visual, bb["image_size"])
    for shape, grad in text_calls:
        flops += (2 if grad else 1) * text_forward_flops(backbone, shape[0], shape[1])
    steps_per_epoch = math.ceil(sizes["train"] / batch)
    epochs = stage.epochs
    run_s = epochs * (steps_per_epoch * step_s + eval_s)
    run_s += math.floor(run_s / (60 * args.checkpoint_minutes)) * ckpt_s
    return {"method": name, "stage": stage.name, "batch": batch, "img/s": batch / step_s,
            "official img/s": batch / official_s, "eval img/s": (sizes["val"] + sizes["test"]) / eval_s,
            "official eval img/s": sizes["test"] / official_eval_s,
            "official data img/s": official_data_rate(bb, batch, sizes["train"], args, device),
            "syncs/step": syncs, "cpu ms": step_cpu_ms, "GPU busy": busy,
            **{f"{k} ms": 1e3 * v for k, v in split.items()},
            "ckpt s": ckpt_s, "ckpt MiB": ckpt_mb, "peak GiB": peak_mem, "MFU": flops / step_s / peak,
            "MFU spec": flops / step_s / spec if spec else None,
            "text seq": ",".join(f"{s[0]}x{s[1]}" for s, _ in text_calls), "epochs": epochs,
            "run min": run_s / 60}


def throughput_child(args, device: torch.device) -> None:
    """One of the --runs-per-gpu processes: warm up, wait for the common start, time our steps,
    print {"img/s": ...} as a JSON line."""
    import json

    params = load_params([ROOT / "params.yaml"])
    cfg = run_config(params, "paper", "morph2", args.methods[0])
    if args.tiny:
        cfg["backbone"] = {"name": "tiny", **params["backbones"]["tiny"]}
        cfg["method"]["batch_size"] = min(cfg["method"]["batch_size"], 16)
    bb, mcfg, ds = cfg["backbone"], cfg["method"], cfg["dataset"]
    lo, hi = params["datasets"]["morph2"]["ranks"]
    sizes = TINY if args.tiny else MORPH
    parts, labels = synthetic_parts(sizes, bb["resize"], lo, hi, ds.get("rank_offset", 0), device)
    torch.manual_seed(0)
    method = load(mcfg["kind"]).build(create_backbone(bb, None), tokenizer(bb), make_task(ds, labels), mcfg).to(device)
    stage = method.stages()[0]
    set_trainable(method, stage)
    opt = make_optimizer(stage, mcfg)
    pipeline = ImagePipeline(bb["image_size"], bb["normalize"], True, device)
    step = step_fn(method, stage, parts["train"], pipeline, opt, torch.Generator().manual_seed(0),
                   mcfg["batch_size"], amp_context(device, cfg.get("precision", "auto")), device, official=False)
    method.train()
    for _ in range(3):
        step()
    sync(device)
    time.sleep(max(args.start_at - time.time(), 0.0))
    t0 = time.perf_counter()
    for _ in range(args.steps):
        step()
    sync(device)
    print(json.dumps({"img/s": args.steps * mcfg["batch_size"] / (time.perf_counter() - t0),
                      "late": time.time() - args.start_at > 1.0}))


def runs_per_gpu_rows(methods: list[str], counts: list[int], args) -> list[dict]:
    """Summed img/s of K concurrent runs of each method (subprocesses of this script)."""
    import json
    import subprocess

    rows = []
    for m in methods:
        for k in counts:
            start = time.time() + (40 if args.tiny else 90) + 10 * k
            cmd = [sys.executable, __file__, "--child", "--methods", m, "--steps", str(args.steps),
                   "--start-at", str(start), *(["--tiny"] if args.tiny else [])]
            procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True) for _ in range(k)]
            outs = [json.loads(p.communicate()[0].strip().splitlines()[-1]) for p in procs]
            if any(p.returncode for p in procs):
                raise SystemExit(f"--runs-per-gpu {k}: a run of {m} failed")
            late = sum(o["late"] for o in outs)
            rows.append({"method": m, "stage": f"{k} runs at once" + (f" ({late} started late)" if late else ""),
                         "batch": "-", "img/s": sum(o["img/s"] for o in outs)})
    return rows


def spec_peak(device: torch.device) -> float | None:
    """The device's dense bf16 peak in FLOP/s from SPEC_TFLOPS, or None (not listed, or no CUDA)."""
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    hit = next((v for k, v in SPEC_TFLOPS.items() if k in name), None)
    return hit * 1e12 if hit else None


def cell(value, col: str) -> str:
    if value is None:
        return "-"
    if col in ("MFU", "MFU spec", "GPU busy"):
        return f"{value:.1%}"
    return f"{value:.2f}" if isinstance(value, float) else str(value)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tiny", action="store_true", help="the demo's tiny backbone and small data, any device")
    parser.add_argument("--steps", type=int, help="timed steps per measurement (default 20; --tiny 2)")
    parser.add_argument("--methods", nargs="*", help="trained methods to run (default: the paper suite's)")
    parser.add_argument("--batches", nargs="*", type=int,
                        help="batch sizes besides each method's own (default 64 128 256; --tiny none)")
    parser.add_argument("--checkpoint-minutes", type=float, default=5.0, help="for the whole-run projection")
    parser.add_argument("--runs-per-gpu", nargs="*", type=int, default=[],
                        help="also measure K concurrent runs of each method for each K given (e.g. 2 4)")
    parser.add_argument("--out", type=Path, help="also write the table to this file")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--start-at", type=float, help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.steps = args.steps or (2 if args.tiny else 20)
    if args.child:
        throughput_child(args, torch.device("cuda" if torch.cuda.is_available() else "cpu"))
        return
    extra = args.batches if args.batches is not None else ([] if args.tiny else [64, 128, 256])
    args.batches = [None, *extra]
    if not args.tiny and not torch.cuda.is_available():
        raise SystemExit("no CUDA device: the paper-shaped benchmark needs one (use --tiny for the CPU test run)")
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    params = load_params([ROOT / "params.yaml"])
    suite = params["suites"]["paper"]
    methods = args.methods or [m for m in suite["methods"] if METHODS[params["methods"][m]["kind"]]["trains_on"] == "images"]
    peak, peak_how = peak_flops(device)
    spec = spec_peak(device)
    t0 = time.perf_counter()
    rows = []
    bb = None
    for m in methods:
        cfg = run_config(params, "paper", "morph2", m)
        if args.tiny:
            cfg["backbone"] = {"name": "tiny", **params["backbones"]["tiny"]}
            cfg["method"]["batch_size"] = min(cfg["method"]["batch_size"], 16)
        bb = cfg["backbone"]
        rows += bench_method(m, cfg, params["datasets"]["morph2"]["ranks"], args, device, peak, spec)
    paper_batches = sorted({r["batch"] for r in rows})
    rows += [bare_row(bb, b, args, device, peak, spec) for b in paper_batches]
    rows += runs_per_gpu_rows(methods, args.runs_per_gpu, args)
    cols = ["method", "stage", "batch", "img/s", "official img/s", "official data img/s", "eval img/s",
            "official eval img/s", "syncs/step", "cpu ms", "GPU busy", "data ms",
            "image ms", "text ms", "optim ms", "other ms", "ckpt s", "ckpt MiB", "peak GiB", "MFU", "MFU spec",
            "text seq", "epochs", "run min"]
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else machine()
    own = [r for r in rows if r["method"] != "bare" and r["batch"] == run_config(params, "paper", "morph2", r["method"])
           ["method"]["batch_size"]] if not args.tiny else []
    folds = suite["folds"]
    hours = sum(r["run min"] for r in own) * folds / 60
    lines = [f"device: {name}; backbone: {'tiny (demo)' if args.tiny else 'ViT-B/16, random weights'}; "
             f"peak: {peak / 1e12:.2f} TFLOP/s ({peak_how}); data-sheet bf16 peak: "
             f"{f'{spec / 1e12:.0f} TFLOP/s' if spec else 'not listed'}; torch {torch.__version__}; "
             f"{args.steps} timed steps per figure; benchmark wall time {time.perf_counter() - t0:.0f} s", "",
             "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in rows:
        lines.append("| " + " | ".join(cell(r.get(c), c) for c in cols) + " |")
    if own:
        lines += ["", f"Projected GPU-hours of table 1's MORPH II column ({folds} folds, the methods above at "
                      f"their paper batch, from the measured step, evaluation and checkpoint times): {hours:.1f}"]
    text = "\n".join(lines)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
