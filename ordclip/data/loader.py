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


class ImagePipeline:
    """uint8 NHWC → normalised float NCHW: random crop + horizontal flip for training, centre crop
    for evaluation (the papers: resize 256, crop 224)."""

    def __init__(self, image_size: int, normalize: str, hflip: bool, device: torch.device) -> None:
        mean, std = NORMALIZE[normalize]
        self.size, self.hflip = image_size, hflip
        self.mean = torch.tensor(mean, device=device).view(1, 3, 1, 1) * 255
        self.std = torch.tensor(std, device=device).view(1, 3, 1, 1) * 255
        self.channels_last = device.type == "cuda"

    def __call__(self, images: torch.Tensor, train: bool, generator: torch.Generator | None = None) -> torch.Tensor:
        n, h, w, _ = images.shape
        s = self.size
        if train:
            oy = torch.randint(0, h - s + 1, (n,), generator=generator, device="cpu").to(images.device)
            ox = torch.randint(0, w - s + 1, (n,), generator=generator, device="cpu").to(images.device)
            ar = torch.arange(s, device=images.device)
            rows, cols = (oy[:, None] + ar)[:, :, None], (ox[:, None] + ar)[:, None, :]
            x = images[torch.arange(n, device=images.device)[:, None, None], rows, cols]
            if self.hflip:
                flip = (torch.rand(n, generator=generator) < 0.5).to(images.device)
                x = torch.where(flip[:, None, None, None], x.flip(2), x)
        else:
            top, left = (h - s) // 2, (w - s) // 2
            x = images[:, top:top + s, left:left + s]
        x = (x.permute(0, 3, 1, 2).float() - self.mean) / self.std
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x.contiguous()
