"""CPU proxy of a launch-bound GPU step: OrdinalCLIP's training step against a bare open_clip
image-tower step, in time and in dispatched operations.

Two shapes (open_clip configs written here, random weights):

- ``overhead``: the ViT-B/16 layer structure (12 + 12 layers, patch 16) at width 16, 32 px images,
  batch 32: the kernels are tiny, so the time is the host's (dispatch, Python), as on a GPU at
  small batch;
- ``width``: ViT-B/16's widths (image 768, text 512, embed 512), 64 px images (17 tokens; 224 px
  would take minutes per step here), batch 8.

``ordclip`` is OrdinalCLIP with its paper recipe on MORPH II (params.yaml, suite paper: 101
ranks, context from its words, 3 base ranks, RAdam, image encoder trained, frozen text tower
passing gradients to the prompts), one step as ordclip.train takes it: crop/flip of uint8
images, forward, CE + KL, backward, optimizer step. ``bare`` is open_clip's image tower alone on
a ready float batch, CE on a fixed head, torch.optim.AdamW(foreach=True). Steps are timed after
RAdam's first update (step 6) in alternating rounds of 5 (the machine is shared), median per
step of the wall time and of the process's CPU time (less sensitive to other jobs on the
machine); operations are counted by a TorchDispatchMode over one step (forward, backward, optimizer).

    .venv/bin/python bench/step_ratio.py [--src TREE] [--rounds 6]   # 1 thread
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHAPES = {
    "overhead": {"batch": 32, "image": 32, "config": {
        "embed_dim": 16,
        "vision_cfg": {"image_size": 32, "layers": 12, "width": 16, "head_width": 8, "patch_size": 16},
        "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 16, "heads": 2, "layers": 12}}},
    "width": {"batch": 8, "image": 64, "config": {
        "embed_dim": 512,
        "vision_cfg": {"image_size": 64, "layers": 12, "width": 768, "patch_size": 16},
        "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 512, "heads": 8, "layers": 12}}},
}


def measure(shape: str, rounds: int) -> dict:
    import numpy as np
    import open_clip
    import torch
    from torch.utils._python_dispatch import TorchDispatchMode

    from ordclip.config import load_params, run_config
    from ordclip.data.loader import ImagePipeline
    from ordclip.methods import load
    from ordclip.models.backbone import create_backbone, tokenizer
    from ordclip.runs import make_task
    from ordclip.train import make_optimizer, set_trainable

    torch.set_num_threads(1)
    spec = SHAPES[shape]
    tmp = Path(tempfile.mkdtemp(prefix="ordclip-ratio-"))
    (tmp / f"bench-{shape}.json").write_text(json.dumps(spec["config"]))
    open_clip.add_model_config(tmp)
    size, batch = spec["image"], spec["batch"]
    bb = {"name": shape, "model": f"bench-{shape}", "image_size": size, "resize": size + size // 8,
          "normalize": "clip"}
    params = load_params([ROOT / "params.yaml"])
    cfg = run_config(params, "paper", "morph2", "ordinalclip")
    mcfg, ds = cfg["method"], cfg["dataset"]
    lo, hi = params["datasets"]["morph2"]["ranks"]
    rng = np.random.default_rng(0)
    labels = rng.integers(lo, hi + 1, size=256)
    task = make_task(ds, labels)
    images = torch.from_numpy(rng.integers(0, 256, size=(256, bb["resize"], bb["resize"], 3), dtype=np.uint8))
    ranks = torch.from_numpy(labels - lo + ds.get("rank_offset", 0))

    torch.manual_seed(0)
    method = load("ordinalclip").build(create_backbone(bb, None), tokenizer(bb), task, mcfg)
    stage = method.stages()[0]
    set_trainable(method, stage)
    opt = make_optimizer(stage, mcfg)
    pipeline = ImagePipeline(size, "clip", True, torch.device("cpu"))
    gen = torch.Generator().manual_seed(0)
    method.train()
    state = {"start": 0, "perm": torch.randperm(256, generator=gen)}

    def ours():
        if state["start"] + batch > 256:
            state["start"], state["perm"] = 0, torch.randperm(256, generator=gen)
        idx = state["perm"][state["start"]:state["start"] + batch]
        state["start"] += batch
        x, y = pipeline(images[idx], train=True, generator=gen, view=stage.view), ranks[idx]
        terms = method.losses(x, y, stage)
        total = sum(stage.loss_weights[k] * v.float() for k, v in terms.items())
        opt.zero_grad(set_to_none=True)
        total.backward()
        opt.step()

    torch.manual_seed(0)
    visual = create_backbone(bb, None).visual.train()
    head = torch.randn(spec["config"]["embed_dim"], 101)
    bare_opt = torch.optim.AdamW(visual.parameters(), lr=1e-4, weight_decay=5e-4, foreach=True)
    x0 = torch.randn(batch, 3, size, size)
    y0 = ranks[:batch]

    def bare():
        loss = torch.nn.functional.cross_entropy(visual(x0) @ head, y0)
        bare_opt.zero_grad(set_to_none=True)
        loss.backward()
        bare_opt.step()

    class Count(TorchDispatchMode):
        n = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            Count.n += 1
            return func(*args, **(kwargs or {}))

    for _ in range(6):
        ours()
        bare()
    ops = {}
    for name, fn in (("ordclip", ours), ("bare", bare)):
        Count.n = 0
        with Count():
            fn()
        ops[name] = Count.n
    wall = {"ordclip": [], "bare": []}
    cpu = {"ordclip": [], "bare": []}
    for _ in range(rounds):
        for name, fn in (("ordclip", ours), ("bare", bare)):
            for _ in range(5):
                t0, c0 = time.perf_counter(), time.process_time()
                fn()
                wall[name].append(time.perf_counter() - t0)
                cpu[name].append(time.process_time() - c0)
    ms = {k: 1e3 * statistics.median(v) for k, v in wall.items()}
    cpu_ms = {k: 1e3 * statistics.median(v) for k, v in cpu.items()}
    return {"shape": shape, "batch": batch, "ordclip ms": ms["ordclip"], "bare ms": ms["bare"],
            "time ratio": ms["ordclip"] / ms["bare"], "ordclip cpu ms": cpu_ms["ordclip"],
            "bare cpu ms": cpu_ms["bare"], "cpu ratio": cpu_ms["ordclip"] / cpu_ms["bare"],
            "ordclip ops": ops["ordclip"], "bare ops": ops["bare"],
            "ops ratio": ops["ordclip"] / ops["bare"], "load": os.getloadavg()[0]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--src", type=Path, default=ROOT, help="the ordclip tree to measure (default: this one)")
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--shapes", nargs="*", default=list(SHAPES))
    ap.add_argument("--inner", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.inner:
        print(json.dumps(measure(args.inner, args.rounds)))
        return
    env = {**os.environ, "PYTHONPATH": str(args.src.resolve()), "OMP_NUM_THREADS": "1"}
    print(f"tree: {args.src.resolve()}; torch threads: 1")
    print("| shape | batch | ordclip ms | bare ms | wall ratio | ordclip CPU ms | bare CPU ms | CPU-time ratio "
          "| ordclip ops | bare ops | ops ratio | load |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for shape in args.shapes:
        out = subprocess.run([sys.executable, __file__, "--inner", shape, "--rounds", str(args.rounds)], env=env,
                             check=True, capture_output=True, text=True).stdout
        r = json.loads(out.strip().splitlines()[-1])
        print(f"| {r['shape']} | {r['batch']} | {r['ordclip ms']:.1f} | {r['bare ms']:.1f} | {r['time ratio']:.2f} | "
              f"{r['ordclip cpu ms']:.1f} | {r['bare cpu ms']:.1f} | {r['cpu ratio']:.2f} | "
              f"{r['ordclip ops']} | {r['bare ops']} | {r['ops ratio']:.2f} | {r['load']:.2f} |", flush=True)


if __name__ == "__main__":
    main()
