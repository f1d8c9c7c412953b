"""Fold data on the device: uint8 images, crop/flip augmentation and normalisation done there."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ordclip.data.splits import read_index, read_split
from ordclip.io import load_numpy

log = logging.getLogger(__name__)

NORMALIZE = {
    "imagenet": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
    "clip": ((0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)),
}


def to_device(t: torch.Tensor, device: torch.device) -> torch.Tensor:
    """A host tensor on ``device`` without making the host wait: on CUDA through pinned memory
    with a non-blocking copy (the caching host allocator keeps the pinned block until the copy
    is done); elsewhere as it is (or a plain copy)."""
    if device.type == "cuda":
        return t.pin_memory().to(device, non_blocking=True)
    return t.to(device)


class StreamedImages:
    """A fold part's uint8 images left in the memory-mapped cache: indexing with row positions
    (a tensor of indices, or a slice) reads those images and returns them on ``target``.

    Used when a fold does not fit on the device (see load_fold); the batches it returns hold the
    same bytes as a resident copy's, so training gives the same result either way."""

    def __init__(self, cache: np.ndarray, rows: np.ndarray, target: torch.device) -> None:
        self.cache, self.rows, self.target = cache, np.asarray(rows), target
        self.device = torch.device("cpu")  # where the training loop puts the indices it passes
        self.shape = (len(self.rows), *cache.shape[1:])

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, key: torch.Tensor | slice) -> torch.Tensor:
        rows = self.rows[key] if isinstance(key, slice) else self.rows[np.asarray(key)]
        batch = torch.from_numpy(np.ascontiguousarray(self.cache[rows]))
        return to_device(batch, self.target)


@dataclass
class Part:
    """One part of a fold: dataset row indices, uint8 images (N, H, W, 3) on the device (or
    streamed from the cache, StreamedImages), ranks."""

    index: np.ndarray
    images: torch.Tensor | StreamedImages
    ranks: torch.Tensor


# A fold is kept resident when its images take at most this share of the device's free memory
# (the rest is for the model, its activations and the optimizer); otherwise it is streamed.
RESIDENT_SHARE = 0.25
COPY_ROWS = 1024  # images copied into a resident fold at a time (host memory: one such chunk)


def free_memory(device: torch.device) -> int:
    """Free bytes of the device: CUDA's free memory, or the host's available RAM for the CPU."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def load_fold(images_npy: str | Path, index_csv: str | Path, split_csv: str | Path,
              device: torch.device, resident: bool | None = None) -> dict[str, Part]:
    """The train/val/test parts of a fold, read from the prepared cache.

    ``resident`` True: every part's images are copied to the device, COPY_ROWS at a time (no
    second whole copy on the host); False: they stay in the memory-mapped cache and each batch is
    read from it (StreamedImages); None: resident when the fold's images take at most
    RESIDENT_SHARE of the device's free memory (the choice is printed when it streams)."""
    cache = load_numpy(images_npy, "prepare", mmap_mode="r")
    ranks = read_index(index_csv)["rank"]
    split = read_split(split_csv)
    if resident is None:
        need = sum(len(idx) for idx in split.values()) * int(np.prod(cache.shape[1:]))
        free = free_memory(device)
        resident = need <= RESIDENT_SHARE * free
        if not resident:
            log.info(f"the fold's images take {need / 2**30:.2f} GiB, over {RESIDENT_SHARE:.0%} of the "
                     f"{free / 2**30:.2f} GiB free on {device}: batches are read from {images_npy} as they are needed")
    out = {}
    for part, idx in split.items():
        if resident:
            images = torch.empty((len(idx), *cache.shape[1:]), dtype=torch.uint8, device=device)
            for start in range(0, len(idx), COPY_ROWS):
                chunk = torch.from_numpy(np.ascontiguousarray(cache[idx[start:start + COPY_ROWS]]))
                images[start:start + len(chunk)] = chunk.to(device)
        else:
            images = StreamedImages(cache, idx, device)
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
        flip = to_device(torch.rand(x.shape[0], generator=generator) < 0.5, x.device)
        return torch.where(flip[:, None, None, None], x.flip(2), x)

    def __call__(self, images: torch.Tensor, train: bool, generator: torch.Generator | None = None,
                 view: str | None = None) -> torch.Tensor:
        view = view or ("crop_flip" if train else "center")
        if view not in VIEWS:
            raise ValueError(f"unknown image view {view!r} ({' | '.join(VIEWS)})")
        n, h, w, _ = images.shape
        s = self.size
        if view == "crop_flip":
            oy = to_device(torch.randint(0, h - s + 1, (n,), generator=generator, device="cpu"), images.device)
            ox = to_device(torch.randint(0, w - s + 1, (n,), generator=generator, device="cpu"), images.device)
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
