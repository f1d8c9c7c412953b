"""Training and evaluation throughput (images/s) of each method on the demo backbone.

Trained methods: full training steps (augmentation on the device, forward, all loss terms,
backward, optimizer step) at the demo batch size. Feature methods: fitting on cached features.
Process start-up and imports are excluded.

    .venv/bin/python bench/throughput.py [--threads 1 2] [--steps 30]
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import machine  # noqa: E402

from ordclip.config import dataset_config, load_params, run_config  # noqa: E402
from ordclip.data.loader import ImagePipeline, Part  # noqa: E402
from ordclip.methods import METHODS, load  # noqa: E402
from ordclip.methods.base import Task  # noqa: E402
from ordclip.runs import make_task  # noqa: E402
from ordclip.models.backbone import create_backbone, tokenizer  # noqa: E402
from ordclip.train import make_optimizer, predict_part, set_trainable  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def bench_trained(cfg: dict, task: Task, steps: int, stage_index: int) -> tuple[str, float, float]:
    bb, mcfg = cfg["backbone"], cfg["method"]
    torch.manual_seed(0)
    method = load(mcfg["kind"]).build(create_backbone(bb, None), tokenizer(bb), task, mcfg)
    stage = method.stages()[stage_index]
    set_trainable(method, stage)
    opt = make_optimizer(stage, mcfg)
    pipe = ImagePipeline(bb["image_size"], bb["normalize"], True, torch.device("cpu"))
    gen = torch.Generator().manual_seed(0)
    bs = mcfg["batch_size"]
    images = torch.randint(0, 256, (bs, bb["resize"], bb["resize"], 3), dtype=torch.uint8)
    y = torch.randint(0, task.num_ranks, (bs,))
    method.train()
    for i in range(steps + 5):
        if i == 5:
            t0 = time.perf_counter()
        terms = method.losses(pipe(images, True, gen), y, stage)
        opt.zero_grad()
        sum(stage.loss_weights[k] * v for k, v in terms.items()).backward()
        opt.step()
    train = steps * bs / (time.perf_counter() - t0)
    part = Part(np.arange(1024), torch.randint(0, 256, (1024, bb["resize"], bb["resize"], 3), dtype=torch.uint8),
                torch.zeros(1024, dtype=torch.long))
    predict_part(method, part, pipe, contextlib.nullcontext())
    t0 = time.perf_counter()
    predict_part(method, part, pipe, contextlib.nullcontext())
    return stage.name, train, 1024 / (time.perf_counter() - t0)


def bench_features(cfg: dict, task: Task) -> float:
    rng = np.random.default_rng(0)
    n, d = 360, 64
    parts = {p: (rng.normal(size=(n, d)), rng.integers(0, task.num_ranks, n)) for p in ("train", "val", "test")}
    t0 = time.perf_counter()
    load(cfg["method"]["kind"]).fit(parts, rng.normal(size=(task.num_ranks, d)), 2.65, task.num_ranks, cfg["method"])
    return n / (time.perf_counter() - t0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--steps", type=int, default=30)
    args = parser.parse_args()
    params = load_params([ROOT / "params.yaml"])
    task = make_task(dataset_config(params, "counting"), np.array([1, 10]))
    print(f"machine: {machine()}; torch {torch.__version__}; dataset counting (10 ranks)\n")
    print("| method | stage | threads | train images/s | eval images/s |\n|---|---|---|---|---|")
    for method in params["suites"]["demo"]["methods"]:
        cfg = run_config(params, "demo", "counting", method)
        for threads in args.threads:
            torch.set_num_threads(threads)
            if METHODS[cfg["method"]["kind"]]["trains_on"] == "features":
                print(f"| {method} | fit | {threads} | {bench_features(cfg, task):.0f} (cached features) | – |")
                continue
            n_stages = 2 if cfg["method"].get("stages") == "two" else 1
            for i in range(n_stages):
                stage, train, evaluate = bench_trained(cfg, task, args.steps, i)
                print(f"| {method} | {stage} | {threads} | {train:.0f} | {evaluate:.0f} |")


if __name__ == "__main__":
    main()
