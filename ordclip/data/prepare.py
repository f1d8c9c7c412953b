"""Decode and resize every image once into a uint8 cache (N, px, px, 3) plus an index."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from ordclip.errors import DataError
from ordclip.io import atomic_path


def read_labels(labels_csv: str | Path, image_root: str | Path) -> list[tuple[str, int]]:
    """Read ``path,label`` rows; each bad row fails with its line number and what is wrong."""
    labels_csv, image_root = Path(labels_csv), Path(image_root)
    if not labels_csv.is_file():
        raise DataError(f"{labels_csv}: labels file not found")
    rows: list[tuple[str, int]] = []
    with open(labels_csv, newline="") as f:
        reader = csv.DictReader(f)
        missing = {"path", "label"} - set(reader.fieldnames or [])
        if missing:
            raise DataError(f"{labels_csv}: missing column(s) {sorted(missing)}; expected a header 'path,label'")
        for line, row in enumerate(reader, start=2):
            path, label = (row["path"] or "").strip(), (row["label"] or "").strip()
            try:
                value = int(label)
            except ValueError:
                raise DataError(f"{labels_csv} line {line}: label {label!r} is not an integer") from None
            if not path:
                raise DataError(f"{labels_csv} line {line}: empty path")
            if not (image_root / path).is_file():
                raise DataError(f"{labels_csv} line {line}: image {image_root / path} not found")
            rows.append((path, value))
    if not rows:
        raise DataError(f"{labels_csv}: no rows")
    return rows


def rank_range(labels: list[int], ranks: list[int] | None, where: str) -> tuple[int, int]:
    """The (min, max) label of the rank scale: given in the config, or spanned by the labels."""
    lo, hi = (min(labels), max(labels)) if ranks is None else ranks
    bad = [v for v in labels if not lo <= v <= hi]
    if bad:
        raise DataError(f"{where}: label {bad[0]} is outside the ranks {lo}..{hi}")
    return lo, hi


def prepare(labels_csv: str | Path, image_root: str | Path, px: int, ranks: list[int] | None,
            out_images: str | Path, out_index: str | Path) -> None:
    """Write the decoded, resized uint8 cache and ``index.csv`` (index,path,label,rank)."""
    rows = read_labels(labels_csv, image_root)
    lo, _ = rank_range([v for _, v in rows], ranks, str(labels_csv))
    images = np.empty((len(rows), px, px, 3), dtype=np.uint8)
    for i, (path, _) in enumerate(rows):
        try:
            with Image.open(Path(image_root) / path) as img:
                images[i] = np.asarray(img.convert("RGB").resize((px, px), Image.BICUBIC))
        except (UnidentifiedImageError, OSError) as exc:
            raise DataError(f"{labels_csv} line {i + 2}: cannot decode image {path}: {exc}") from None
    with atomic_path(out_images) as tmp:
        with open(tmp, "wb") as f:
            np.save(f, images)
    with atomic_path(out_index) as tmp:
        with open(tmp, "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["index", "path", "label", "rank"])
            writer.writerows((i, path, v, v - lo) for i, (path, v) in enumerate(rows))
