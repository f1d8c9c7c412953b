"""How long a resume checkpoint holds up training: ordclip.train._save_resume written in the
caller's thread, against the background writer (the caller waits only for the copy to host
memory; serialisation, sha256 and the atomic write run meanwhile).

The state is a ViT-B/16 image tower (open_clip's ViT-B-16 visual, random weights, about 86 M
parameters) with its RAdam moments after one step: the trained part of an OrdinalCLIP paper run.

    .venv/bin/python bench/checkpoint_stall.py [--dir DIR]   # DIR: where resume.pt goes (default: a temp dir)
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import machine  # noqa: E402

from ordclip.io import BackgroundWriter  # noqa: E402
from ordclip.models.backbone import create_backbone  # noqa: E402
from ordclip.optim import RAdam  # noqa: E402
from ordclip.train import _save_resume  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dir", type=Path)
    args = ap.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    visual = create_backbone({"name": "vitb16", "model": "ViT-B-16"}, None).visual
    params = list(visual.parameters())
    opt = RAdam(params, lr=1e-4, weight_decay=5e-4)
    for p in params:
        p.grad = torch.randn_like(p)
    opt.step()
    names = [n for n, _ in visual.named_parameters()]
    folder = args.dir or Path(tempfile.mkdtemp(prefix="ordclip-ckpt-"))
    path = folder / "resume.pt"
    common = ({}, (0, 1), visual, names, opt, None, torch.Generator(), [], {}, {"val": [], "test": []}, [])
    t0 = time.perf_counter()
    _save_resume(path, *common)
    inline = time.perf_counter() - t0
    writer = BackgroundWriter()
    t0 = time.perf_counter()
    _save_resume(path, *common, writer=writer)
    returned = time.perf_counter() - t0
    writer.wait()
    done = time.perf_counter() - t0
    size = path.stat().st_size / 2 ** 20
    print(f"machine: {machine()}; {sum(p.numel() for p in params) / 1e6:.1f} M parameters, resume.pt {size:.0f} MiB "
          f"in {folder}\n\n| write | training held up (s) | file complete after (s) |\n|---|---|---|\n"
          f"| in the caller's thread (before) | {inline:.2f} | {inline:.2f} |\n"
          f"| background writer (now) | {returned:.2f} | {done:.2f} |")


if __name__ == "__main__":
    main()
