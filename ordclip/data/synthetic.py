"""Synthetic ordinal image datasets whose label is visible in the pixels.

- counting: the number of shapes in the image.
- fading:   how far a colour scene is faded towards a low-contrast sepia print.
- blur:     the strength of a Gaussian blur over a detailed scene (steps that survive downscaling).

Each image is drawn from its own generator seeded by (dataset seed, image index), so a dataset is
reproducible bit for bit and independent of generation order.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from ordclip.io import atomic_path

# (rng, label, lowest label, highest label, image size) -> image
Generator = Callable[[np.random.Generator, int, int, int, int], Image.Image]


def _colour(rng: np.random.Generator, lo: int = 0, hi: int = 256) -> tuple[int, int, int]:
    return tuple(int(c) for c in rng.integers(lo, hi, size=3))


def _background(rng: np.random.Generator, size: int) -> Image.Image:
    base = rng.integers(0, 256, size=3)
    noise = rng.normal(0, 8, size=(size, size, 3))
    arr = np.clip(base[None, None, :] * 0.35 + 20 + noise, 0, 255).astype(np.uint8)
    return Image.fromarray(arr, "RGB")


def _scene(rng: np.random.Generator, size: int, n_shapes: int) -> Image.Image:
    """A colourful scene of rectangles, ellipses and stripes (the canvas for fading and blur)."""
    img = _background(rng, size)
    draw = ImageDraw.Draw(img)
    for _ in range(n_shapes):
        x0, y0 = rng.integers(0, size - 8, size=2)
        w, h = rng.integers(6, size // 2, size=2)
        box = [int(x0), int(y0), int(min(x0 + w, size - 1)), int(min(y0 + h, size - 1))]
        kind = rng.integers(0, 3)
        if kind == 0:
            draw.rectangle(box, fill=_colour(rng, 40))
        elif kind == 1:
            draw.ellipse(box, fill=_colour(rng, 40))
        else:
            step = int(rng.integers(2, 5))
            for x in range(box[0], box[2], 2 * step):
                draw.rectangle([x, box[1], min(x + step - 1, box[2]), box[3]], fill=_colour(rng, 40))
    return img


def counting(rng: np.random.Generator, label: int, lo: int, hi: int, size: int) -> Image.Image:
    """``label`` shapes (discs or squares), away from the borders, whose bounding boxes keep a
    2-pixel gap (so no two shapes touch, squares included)."""
    img = _background(rng, size)
    draw = ImageDraw.Draw(img)
    margin, placed = size // 10 + 2, []
    radius = max(2, size // 20)
    while len(placed) < label:
        r = int(rng.integers(radius, radius + 3))
        x, y = rng.integers(margin + r, size - margin - r, size=2)
        if all(max(abs(x - px), abs(y - py)) > r + pr + 2 for px, py, pr in placed):
            placed.append((int(x), int(y), r))
    for x, y, r in placed:
        box = [x - r, y - r, x + r, y + r]
        colour = _colour(rng, 170)  # the background is at most ~110 per channel: every shape stands out
        (draw.ellipse if rng.random() < 0.5 else draw.rectangle)(box, fill=colour)
    return img


def fading(rng: np.random.Generator, label: int, lo: int, hi: int, size: int) -> Image.Image:
    """A scene blended towards its faded sepia print by ``(label - lo) / (hi - lo)``."""
    arr = np.asarray(_scene(rng, size, int(rng.integers(4, 9))), dtype=np.float64)
    gray = arr @ np.array([0.299, 0.587, 0.114])
    sepia = np.stack([gray * 1.07, gray * 0.74, gray * 0.43], axis=-1)
    faded = 0.45 * sepia + 0.55 * 150.0  # low contrast, raised black level
    alpha = (label - lo) / (hi - lo)
    out = (1 - alpha) * arr + alpha * faded
    return Image.fromarray(np.clip(out, 0, 255).astype(np.uint8), "RGB")


def blur(rng: np.random.Generator, label: int, lo: int, hi: int, size: int) -> Image.Image:
    """A detailed scene under a Gaussian blur of radius ``2 * (label - lo) * size / 64``."""
    img = _scene(rng, size, int(rng.integers(8, 14)))
    radius = 2 * (label - lo) * size / 64
    return img.filter(ImageFilter.GaussianBlur(radius)) if radius > 0 else img


GENERATORS: dict[str, Generator] = {"counting": counting, "fading": fading, "blur": blur}


def generate(cfg: dict, out_dir: str | Path) -> None:
    """Write ``images/*.png`` and ``labels.csv`` (path,label) for a synthetic dataset config."""
    gen = GENERATORS[cfg["generator"]]
    lo, hi = cfg["ranks"]
    levels = hi - lo + 1
    n = cfg["per_rank"] * levels
    with atomic_path(out_dir, is_dir=True) as tmp:
        (tmp / "images").mkdir()
        rows = []
        for i in range(n):
            label = lo + i % levels
            rng = np.random.default_rng([cfg["seed"], i])
            img = gen(rng, label, lo, hi, cfg["image_size"])
            name = f"images/{i:05d}.png"
            img.save(tmp / name, optimize=False)
            rows.append((name, label))
        with open(tmp / "labels.csv", "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["path", "label"])
            writer.writerows(rows)
