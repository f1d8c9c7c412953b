"""Trace 8 training steps of every trained method (and L2RCLIP's two stages) on the demo's tiny
backbone, with one source tree, and compare two traces: the check that a change to prompts,
losses, the optimizer or the trainer leaves every step's arithmetic as it was.

    .venv/bin/python bench/step_trace.py trace --src TREE --out FILE.npz [--dtype float64] [--autocast]
    .venv/bin/python bench/step_trace.py compare A.npz B.npz

A trace holds, per method and step: the logits, every loss term, every trainable parameter's
gradient, then (after the optimizer step) every trainable parameter and the optimizer's moments.
The same seeded weights and batch are used by both trees. ``compare`` prints, per kind of array,
the largest relative difference max|a − b| / max|b| over all methods and steps.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
RUNS = [("coop", 0), ("ordinalclip", 0), ("baseline", 0), ("l2rclip", 0), ("l2rclip", 1), ("numclip", 0)]
STEPS = 8


def trace(dtype: str, autocast: bool = False) -> dict[str, np.ndarray]:
    """The trace (see the module docstring); ``autocast``: the losses under CPU bf16 autocast, as
    the trainer runs them under CUDA's."""
    import torch

    from ordclip.config import load_params
    from ordclip.methods import load
    from ordclip.models.backbone import create_backbone, tokenizer
    from ordclip.runs import make_task
    from ordclip.train import make_optimizer, set_trainable

    torch.set_num_threads(1)
    params = load_params([ROOT / "params.yaml"])
    tiny = {"name": "tiny", "model": "ordclip-tiny", "weights": {"init_seed": 0}, "image_size": 32,
            "resize": 36, "normalize": "imagenet"}
    out: dict[str, np.ndarray] = {}
    for kind, stage_index in RUNS:
        cfg = dict(params["methods"][kind])
        data = {"name": "d", "ranks": [0, 4], "prompt": {"context": "the level is"},
                "rank_names": ["zero", "one", "two", "three", "four"],
                "coarse": {"starts": [0, 1, 2, 3, 4], "names": ["zero", "one", "two", "three", "four"]}}
        task = make_task(data, np.array([0]))
        torch.manual_seed(0)
        method = load(kind).build(create_backbone(tiny, None), tokenizer(tiny), task, cfg)
        method = method.to(getattr(torch, dtype))
        stage = method.stages()[stage_index]
        for g in stage.groups:   # a rate that moves the parameters visibly in 8 steps
            g.lr = g.lr and 1e-2
        set_trainable(method, stage)
        opt = make_optimizer(stage, cfg)
        names = {id(p): n for n, p in method.named_parameters()}
        gen = torch.Generator().manual_seed(1)
        x = torch.randn(12, 3, 32, 32, generator=gen, dtype=getattr(torch, dtype))
        y = torch.tensor([0, 1, 1, 2, 3, 4, 4, 0, 2, 2, 3, 1])
        key = f"{kind}{stage_index}"
        method.train()
        for t in range(STEPS):
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
                terms = method.losses(x, y, stage)
            total = sum(stage.loss_weights[k] * v for k, v in terms.items())
            opt.zero_grad(set_to_none=True)
            total.backward()
            for k, v in terms.items():
                out[f"{key}/{t}/loss/{k}"] = v.detach().float().numpy()
            for g in opt.param_groups:
                for p in g["params"]:
                    if p.grad is not None:
                        out[f"{key}/{t}/grad/{names[id(p)]}"] = p.grad.numpy().copy()
            opt.step()
            for g in opt.param_groups:
                for p in g["params"]:
                    out[f"{key}/{t}/param/{names[id(p)]}"] = p.detach().numpy().copy()
                    for m in ("exp_avg", "exp_avg_sq"):
                        if m in opt.state[p]:
                            out[f"{key}/{t}/{m}/{names[id(p)]}"] = opt.state[p][m].numpy().copy()
            with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
                logits = method.predict(x).get("logits")
            if logits is not None:
                out[f"{key}/{t}/logits"] = logits.float().numpy()
    return out


def compare(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> dict[str, float]:
    """Largest relative difference max|a − b| / max|b| per (method, kind of array), step 1 apart
    from steps 2-8. The key bias of each attention layer (the middle third of in_proj_bias) is
    reported on its own line: softmax is invariant to it, so its gradient is 0 in exact
    arithmetic and only rounding noise in practice, which RAdam's m/(√v + ε) turns into steps of
    about ±lr; any change of rounding elsewhere moves it by that much."""
    if set(a) != set(b):
        raise SystemExit(f"the traces hold different arrays: {sorted(set(a) ^ set(b))[:5]}")
    worst: dict[str, float] = {}
    for k in sorted(a):
        run, t, what = k.split("/")[:3]
        x, y = a[k].astype(np.float64), b[k].astype(np.float64)
        parts = {what: (x, y)}
        if k.endswith("in_proj_bias"):
            third = len(y) // 3
            keep = np.r_[0:third, 2 * third:len(y)]
            parts = {what: (x[keep], y[keep]), f"{what} (key bias)": (x[third:2 * third], y[third:2 * third])}
        for name, (u, v) in parts.items():
            rel = float(np.abs(u - v).max()) / max(float(np.abs(v).max()), 1e-30)
            group = f"{run} {name} {'step 1' if t == '0' else 'steps 2-8'}"
            worst[group] = max(worst.get(group, 0.0), rel)
    return worst


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="verb", required=True)
    t = sub.add_parser("trace")
    t.add_argument("--src", type=Path, default=ROOT)
    t.add_argument("--out", type=Path, required=True)
    t.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    t.add_argument("--autocast", action="store_true", help="the losses under CPU bf16 autocast")
    t.add_argument("--inner", action="store_true", help=argparse.SUPPRESS)
    c = sub.add_parser("compare")
    c.add_argument("a", type=Path)
    c.add_argument("b", type=Path)
    args = ap.parse_args()
    if args.verb == "trace" and not args.inner:
        env = {**os.environ, "PYTHONPATH": str(args.src.resolve())}
        subprocess.run([sys.executable, __file__, "trace", "--inner", "--out", str(args.out), "--dtype", args.dtype,
                        *(["--autocast"] if args.autocast else [])], env=env, check=True, cwd=args.src)
    elif args.verb == "trace":
        np.savez(args.out, **trace(args.dtype, args.autocast))
    else:
        with np.load(args.a) as na, np.load(args.b) as nb:
            worst = compare(dict(na), dict(nb))
        for group, rel in worst.items():
            print(f"{group:45s} {rel:.2e}")


if __name__ == "__main__":
    main()
