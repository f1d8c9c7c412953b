"""Fold data on the device: uint8 images, crop/flip augmentation and normalisation done there."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ordclip.data.splits import read_index, read_split
from ordclip.io import load_numpy

NORMALIZE = {
    "imagenet": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
    "clip": ((0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)),
}


@dataclass
class Part:
    """One part of a fold: dataset row indices, uint8 images (N, H, W, 3) on the device, ranks."""

    index: np.ndarray
    images: torch.Tensor
    ranks: torch.Tensor


def load_fold(images_npy: str | Path, index_csv: str | Path, split_csv: str | Path,
              device: torch.device) -> dict[str, Part]:
    """The train/val/test parts of a fold, read from the prepared cache."""
    cache = load_numpy(images_npy, "prepare", mmap_mode="r")
    ranks = read_index(index_csv)["rank"]
    out = {}
    for part, idx in read_split(split_csv).items():
        images = torch.from_numpy(np.array(cache[idx])).to(device)
        out[part] = Part(idx, images, torch.from_numpy(ranks[idx]).to(device))
    return out


VIEWS = ("crop_flip", "center", "resize", "resize_flip")


class ImagePipeline:
    """uint8 NHWC → normalised float NCHW. Views of the cached (resize × resize) images:

    - ``crop_flip``: random image_size crop + horizontal flip (if ``hflip``): training in the
      OrdinalCLIP/NumCLIP code (resize 256, random crop 224, flip);
    - ``center``: centre crop: their evaluation;
    - ``resize``: the whole image resized to image_size (bicubic), no crop: L2RCLIP's test loader,
      which its stage 1 also trains on;
    - ``resize_flip``: ``resize`` + horizontal flip: L2RCLIP's stage-2 training loader.
    ``view=None`` means ``crop_flip`` for training and ``center`` for evaluation.
    """

    def __init__(self, image_size: int, normalize: str, hflip: bool, device: torch.device) -> None:
        mean, std = NORMALIZE[normalize]
        self.size, self.hflip = image_size, hflip
        self.mean = torch.tensor(mean, device=device).view(1, 3, 1, 1) * 255
        self.std = torch.tensor(std, device=device).view(1, 3, 1, 1) * 255
        self.channels_last = device.type == "cuda"

    def _flip(self, x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        if not self.hflip:
            return x
        flip = (torch.rand(x.shape[0], generator=generator) < 0.5).to(x.device)
        return torch.where(flip[:, None, None, None], x.flip(2), x)

    def __call__(self, images: torch.Tensor, train: bool, generator: torch.Generator | None = None,
                 view: str | None = None) -> torch.Tensor:
        view = view or ("crop_flip" if train else "center")
        if view not in VIEWS:
            raise ValueError(f"unknown image view {view!r} ({' | '.join(VIEWS)})")
        n, h, w, _ = images.shape
        s = self.size
        if view == "crop_flip":
            oy = torch.randint(0, h - s + 1, (n,), generator=generator, device="cpu").to(images.device)
            ox = torch.randint(0, w - s + 1, (n,), generator=generator, device="cpu").to(images.device)
            ar = torch.arange(s, device=images.device)
            rows, cols = (oy[:, None] + ar)[:, :, None], (ox[:, None] + ar)[:, None, :]
            x = images[torch.arange(n, device=images.device)[:, None, None], rows, cols]
            x = self._flip(x, generator)
        elif view == "center":
            top, left = (h - s) // 2, (w - s) // 2
            x = images[:, top:top + s, left:left + s]
        else:
            x = images
            if view == "resize_flip":
                x = self._flip(x, generator)
        x = x.permute(0, 3, 1, 2).float()
        if view in ("resize", "resize_flip") and (h, w) != (s, s):
            x = torch.nn.functional.interpolate(x, size=(s, s), mode="bicubic", align_corners=False).clamp_(0, 255)
        x = (x - self.mean) / self.std
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x.contiguous()
