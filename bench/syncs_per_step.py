"""Host syncs per training step of every trained method, for any source tree: the 7 steps of
tests/test_syncs.py (demo's tiny backbone, 5 ranks, batch 8, RAdam through its first update),
counted by this tree's ordclip/syncs.py (loaded by path, so an older tree without it can be
measured) while the tree named by --src runs them. On the CPU the count is the proxy that
ordclip.syncs describes (reads back to the host; host-to-device copies cannot be seen there).

    .venv/bin/python bench/syncs_per_step.py [--src TREE]
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def measure() -> None:
    import numpy as np
    import torch

    spec = importlib.util.spec_from_file_location("counter", ROOT / "ordclip" / "syncs.py")
    counter = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(counter)

    from ordclip.config import load_params
    from ordclip.data.loader import ImagePipeline, Part
    from ordclip.methods import load
    from ordclip.models.backbone import create_backbone, tokenizer
    from ordclip.runs import make_task
    from ordclip.train import make_optimizer, set_trainable

    torch.set_num_threads(1)
    params = load_params([str(ROOT / "params.yaml")])
    tiny = {"name": "tiny", "model": "ordclip-tiny", "weights": {"init_seed": 0}, "image_size": 32, "resize": 36,
            "normalize": "imagenet"}
    names = ["zero", "one", "two", "three", "seventy seven"]
    data = {"name": "d", "ranks": [0, 4], "prompt": {"context": "the level is"}, "rank_names": names,
            "coarse": {"starts": [0, 1, 2, 3, 4], "names": names}}
    for kind, si in [("baseline", 0), ("coop", 0), ("ordinalclip", 0), ("l2rclip", 0), ("l2rclip", 1), ("numclip", 0)]:
        torch.manual_seed(0)
        cfg = dict(params["methods"][kind])
        method = load(kind).build(create_backbone(tiny, None), tokenizer(tiny), make_task(data, np.array([0])), cfg)
        stage = method.stages()[si]
        set_trainable(method, stage)
        opt = make_optimizer(stage, cfg)
        gen = torch.Generator().manual_seed(0)
        part = Part(np.arange(40), torch.randint(0, 256, (40, 36, 36, 3), dtype=torch.uint8), torch.arange(40) % 5)
        pipe = ImagePipeline(32, "imagenet", True, torch.device("cpu"))
        method.train()
        stage_inputs = getattr(method, "stage_inputs", None)
        inputs = stage_inputs(stage, part, pipe, torch.autocast("cpu", enabled=False)) if stage_inputs else None
        perm = torch.randperm(40, generator=gen)
        with counter.count_syncs() as events:
            for start in [0, 8, 16, 24, 32, 0, 8]:
                idx = perm[start:start + 8]
                x = inputs[idx] if inputs is not None else pipe(part.images[idx], train=True, generator=gen,
                                                                view=stage.view)
                terms = method.losses(x, part.ranks[idx], stage)
                total = sum(stage.loss_weights[k] * v.float() for k, v in terms.items())
                opt.zero_grad(set_to_none=True)
                total.backward()
                opt.step()
        print(f"| {kind} | {stage.name} | {len(events) / 7:.1f} |", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--src", type=Path, default=ROOT)
    ap.add_argument("--inner", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.inner:
        measure()
        return
    print(f"tree: {args.src.resolve()}\n\n| method | stage | syncs per step |\n|---|---|---|", flush=True)
    subprocess.run([sys.executable, __file__, "--inner"], env={**os.environ, "PYTHONPATH": str(args.src.resolve())},
                   check=True, stderr=subprocess.DEVNULL)


if __name__ == "__main__":
    main()
