"""Time the demo backbone's pretraining (`python -m ordclip pretrain`) and check its zero-shot
reading of the demo datasets against chance.

    .venv/bin/python bench/pretrain.py [--backbone tiny_pretrained] [--threads 2] [--params FILE ...]

Runs the pretrain verb in a temporary working directory with OMP_NUM_THREADS=threads (a fresh
process: imports included, as a Snakemake job), then encodes every image of each demo dataset
(all of them, not one fold's test part: a quick check, not the table) with the pretrained weights
and prints zero-shot accuracy and MAE beside chance and beside always predicting the mean rank.
The table's own numbers come from the pipeline (results/demo/table1.csv).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from common import machine  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def zero_shot(params: dict, backbone: str, weights: Path, suite: str) -> list[dict]:
    """Zero-shot accuracy and expectation MAE on every image of the suite's generated datasets."""
    import torch
    from PIL import Image

    from ordclip.config import backbone_config
    from ordclip.data.loader import ImagePipeline
    from ordclip.data.synthetic import GENERATORS
    from ordclip.embed import zeroshot_prompts
    from ordclip.models.backbone import create_backbone, encode_texts, tokenizer

    bb = backbone_config(params, backbone)
    model = create_backbone(bb, weights)
    pipeline = ImagePipeline(bb["image_size"], bb.get("features_normalize", "clip"), False, torch.device("cpu"))
    rows = []
    for name in params["suites"][suite]["datasets"]:
        ds = params["datasets"][name]
        if ds["kind"] != "synthetic":
            continue
        lo, hi = ds["ranks"]
        levels = hi - lo + 1
        images, y = [], []
        for i in range(ds["per_rank"] * levels):
            img = GENERATORS[ds["generator"]](np.random.default_rng([ds["seed"], i]), lo + i % levels, lo, hi,
                                              ds["image_size"])
            images.append(np.asarray(img.resize((bb["resize"], bb["resize"]), Image.BICUBIC)))
            y.append(i % levels)
        y = np.array(y)
        with torch.no_grad():
            f = model.encode_image(pipeline(torch.from_numpy(np.stack(images)), train=False))
            t = encode_texts(model, tokenizer(bb), zeroshot_prompts(ds["prompt"]["context"], ds["rank_names"]))
            logits = model.logit_scale.exp() * torch.nn.functional.normalize(f, dim=-1) @ \
                torch.nn.functional.normalize(t, dim=-1).T
        p = logits.softmax(dim=-1).numpy()
        mae = float(np.abs(p @ np.arange(levels) - y).mean())
        mae_mean = float(np.abs(y - y.mean()).mean())
        rows.append({"dataset": name, "acc": float((p.argmax(1) == y).mean()), "chance": 1 / levels,
                     "mae": mae, "mae_mean_rank": mae_mean})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backbone", default="tiny_pretrained")
    parser.add_argument("--suite", default="demo")
    parser.add_argument("--threads", default="2")
    parser.add_argument("--params", action="append", default=None, help="params files (default params.yaml)")
    args = parser.parse_args()
    files = [str(Path(p).resolve()) for p in (args.params or [ROOT / "params.yaml"])]
    work = Path(tempfile.mkdtemp(prefix="ordclip-pretrain-"))
    env = {**os.environ, "OMP_NUM_THREADS": args.threads}
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "ordclip", "pretrain", *[a for f in files for a in ("--params", f)],
                    "--backbone", args.backbone], cwd=work, env=env, check=True)
    seconds = time.perf_counter() - t0
    info = json.loads((work / f"data/pretrain/{args.backbone}/corpus.json").read_text())
    print(f"machine: {machine()}; load average before/after: {os.getloadavg()[0]:.1f}")
    print(f"| pretrain {args.backbone} | {args.threads} threads | {seconds:.0f} s in all | corpus "
          f"{info['images']} images in {info['corpus_seconds']:.0f} s | final loss {info['final_loss']:.2f} |")
    from ordclip.config import load_params

    params = load_params(files, {})
    print("| dataset | zero-shot acc | chance | acc / chance | MAE | MAE of the mean rank | ratio |")
    print("|---|---|---|---|---|---|---|")
    for r in zero_shot(params, args.backbone, work / f"data/weights/{args.backbone}.pt", args.suite):
        print(f"| {r['dataset']} | {100 * r['acc']:.1f} % | {100 * r['chance']:.1f} % | {r['acc'] / r['chance']:.2f} "
              f"| {r['mae']:.3f} | {r['mae_mean_rank']:.3f} | {r['mae'] / r['mae_mean_rank']:.2f} |")


if __name__ == "__main__":
    main()
