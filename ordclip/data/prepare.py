"""Decode and resize every image once into a uint8 cache (N, px, px, 3) plus an index.

A labels CSV has the columns ``path,label`` and, optionally, the dataset's own split assignment,
which is carried into ``index.csv`` for the ``given`` protocol (ordclip.data.splits):
- ``fold``: the fold (0, 1, ...) whose test part the image is in (cross-validation);
- ``split0``, ``split1``, ...: per fold, ``train``, ``val``, ``test`` or empty (image unused).
Other columns are ignored.
"""

from __future__ import annotations

import csv
import re
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from ordclip.errors import DataError
from ordclip.io import atomic_path

SPLIT_COLUMN = re.compile(r"^split(0|[1-9][0-9]*)$")
PARTS = ("train", "val", "test")


def protocol_columns(fieldnames: list[str]) -> list[str]:
    """The split-assignment columns among a CSV's columns: ``fold``, then ``split<k>`` by k."""
    splits = sorted((c for c in fieldnames if SPLIT_COLUMN.match(c)), key=lambda c: int(c[5:]))
    return (["fold"] if "fold" in fieldnames else []) + splits


def _check_protocol_value(column: str, value: str, where: str) -> str:
    if column == "fold":
        if not value.isdigit():
            raise DataError(f"{where}: fold {value!r} is not a fold number (0, 1, ...)")
        return str(int(value))
    if value not in ("", *PARTS):
        raise DataError(f"{where}: {column} {value!r} is not one of train, val, test or empty")
    return value


def read_label_table(labels_csv: str | Path, image_root: str | Path) -> tuple[list[dict], list[str]]:
    """Rows ``{path, label, line, <protocol columns>}`` of a labels CSV and its protocol columns.

    Every bad row fails with its line number in the file and what is wrong."""
    labels_csv, image_root = Path(labels_csv), Path(image_root)
    if not labels_csv.is_file():
        raise DataError(f"{labels_csv}: labels file not found")
    rows: list[dict] = []
    with open(labels_csv, newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        fields = [c.strip() for c in reader.fieldnames or []]
        reader.fieldnames = fields
        missing = {"path", "label"} - set(fields)
        if missing:
            raise DataError(f"{labels_csv}: missing column(s) {sorted(missing)}; expected a header 'path,label'")
        extra = protocol_columns(fields)
        for row in reader:
            line = reader.line_num
            where = f"{labels_csv} line {line}"
            if None in row:
                raise DataError(f"{where}: {len(fields) + len(row[None])} fields for {len(fields)} columns")
            path, label = (row["path"] or "").strip(), (row["label"] or "").strip()
            try:
                value = int(label)
            except ValueError:
                raise DataError(f"{where}: label {label!r} is not an integer") from None
            if not path:
                raise DataError(f"{where}: empty path")
            if not (image_root / path).is_file():
                raise DataError(f"{where}: image {image_root / path} not found")
            out = {"path": path, "label": value, "line": line}
            for column in extra:
                out[column] = _check_protocol_value(column, (row[column] or "").strip(), where)
            rows.append(out)
    if not rows:
        raise DataError(f"{labels_csv}: no rows")
    return rows, extra


def read_labels(labels_csv: str | Path, image_root: str | Path) -> list[tuple[str, int]]:
    """Read ``path,label`` rows; each bad row fails with its line number and what is wrong."""
    rows, _ = read_label_table(labels_csv, image_root)
    return [(r["path"], r["label"]) for r in rows]


def rank_range(labels: list[int], ranks: list[int] | None, where: str) -> tuple[int, int]:
    """The (min, max) label of the rank scale: given in the config, or spanned by the labels."""
    lo, hi = (min(labels), max(labels)) if ranks is None else ranks
    bad = [v for v in labels if not lo <= v <= hi]
    if bad:
        raise DataError(f"{where}: label {bad[0]} is outside the ranks {lo}..{hi}")
    return lo, hi


def prepare(labels_csv: str | Path, image_root: str | Path, px: int, ranks: list[int] | None,
            out_images: str | Path, out_index: str | Path) -> None:
    """Write the decoded, resized uint8 cache and ``index.csv`` (index,path,label,rank and the
    labels' protocol columns)."""
    rows, extra = read_label_table(labels_csv, image_root)
    lo, _ = rank_range([r["label"] for r in rows], ranks, str(labels_csv))
    images = np.empty((len(rows), px, px, 3), dtype=np.uint8)
    for i, row in enumerate(rows):
        try:
            with Image.open(Path(image_root) / row["path"]) as img:
                images[i] = np.asarray(img.convert("RGB").resize((px, px), Image.BICUBIC))
        except (UnidentifiedImageError, OSError) as exc:
            raise DataError(f"{labels_csv} line {row['line']}: cannot decode image {row['path']}: {exc}") from None
    with atomic_path(out_images) as tmp:
        with open(tmp, "wb") as f:
            np.save(f, images)
    with atomic_path(out_index) as tmp:
        with open(tmp, "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["index", "path", "label", "rank", *extra])
            writer.writerows((i, r["path"], r["label"], r["label"] - lo, *(r[c] for c in extra))
                             for i, r in enumerate(rows))
