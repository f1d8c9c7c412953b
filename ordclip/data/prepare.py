"""Decode and resize every image once into a uint8 cache (N, px, px, 3) plus an index.

The cache is written image by image into a memory-mapped .npy file, so preparing needs memory for
a few images only, at any dataset size.

A labels CSV has the columns ``path,label`` and, optionally, the dataset's own split assignment,
which is carried into ``index.csv`` for the ``given`` protocol (ordclip.data.splits):
- ``fold``: the fold (0, 1, ...) whose test part the image is in (cross-validation);
- ``split0``, ``split1``, ...: per fold, ``train``, ``val``, ``test`` or empty (image unused).
Other columns are ignored.
"""

from __future__ import annotations

import csv
import hashlib
import io
import logging
import posixpath
import re
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from ordclip.errors import ConfigError, DataError
from ordclip.io import atomic_path

log = logging.getLogger(__name__)

DUPLICATES = ("error", "drop")
SPLIT_COLUMN = re.compile(r"^split(0|[1-9][0-9]*)$")
PARTS = ("train", "val", "test")
FLUSH_ROWS = 1024  # decoded images written to the cache file between flushes


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


def decode_text(path: Path) -> str:
    """A text file's content as UTF-8 (a BOM is dropped); other encodings fail naming the line."""
    data = path.read_bytes()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[:exc.start].count(b"\n") + 1
        raise DataError(f"{path} line {line}: not UTF-8 (byte {data[exc.start]:#04x} at offset {exc.start}); "
                        f"save the file as UTF-8 (e.g. iconv -f latin1 -t utf-8)") from None


def _path_key(path: str) -> str:
    """The image a CSV path names: ``./a//b.jpg`` and ``a/b.jpg`` are the same image."""
    return posixpath.normpath(path.replace("\\", "/"))


def drop_duplicates(rows: list[dict], columns: list[str], labels_csv: Path, duplicates: str) -> list[dict]:
    """The rows with each image once. A path listed twice fails naming both lines (``duplicates``
    'error'); with 'drop', later rows that repeat an earlier one (same label and protocol columns) are
    dropped and counted; rows that disagree fail in either case. Every repeated image is in the one
    error (the first MAX_BAD_ROWS listed, all counted)."""
    first: dict[str, dict] = {}
    kept, dropped, conflicts, repeats = [], 0, [], []
    for row in rows:
        key = _path_key(row["path"])
        prev = first.get(key)
        if prev is None:
            first[key] = row
            kept.append(row)
            continue
        where = f"lines {prev['line']} and {row['line']}: image {row['path']!r} is listed twice"
        differ = [c for c in ("label", *columns) if prev[c] != row[c]]
        if differ:
            conflicts.append(f"{where}, with different {', '.join(differ)} "
                             f"({', '.join(f'{prev[c]!r} vs {row[c]!r}' for c in differ)}); keep the right row only")
        elif duplicates == "error":
            repeats.append(f"{where} (it would be in train and test at once)")
        else:
            dropped += 1
    if conflicts or repeats:
        err = bad_rows_error(labels_csv, conflicts + repeats, "repeated image")
        hint = (f"; remove the repeated row{'s' if len(repeats) > 1 else ''}, or set the dataset's duplicates: "
                f"drop to keep the first of identical rows") if repeats else ""
        raise DataError(f"{err}{hint}")
    if dropped:
        log.info(f"{labels_csv}: dropped {dropped} repeated row(s) (duplicates: drop); {len(kept)} images")
    return kept


def report_identical(rows: list[dict], image_root: Path, labels_csv: Path) -> list[tuple[dict, dict]]:
    """Pairs of rows whose image files are byte-identical under different paths (printed as a warning:
    the same picture may then be in train and test)."""
    seen: dict[str, dict] = {}
    pairs = []
    for row in rows:
        with open(image_root / row["path"], "rb") as f:
            digest = hashlib.file_digest(f, "sha256").hexdigest()
        if digest in seen:
            pairs.append((seen[digest], row))
        else:
            seen[digest] = row
    if pairs:
        shown = "; ".join(f"lines {a['line']} ({a['path']}) and {b['line']} ({b['path']})" for a, b in pairs[:5])
        log.warning(f"{labels_csv}: {len(pairs)} image(s) are byte-identical to another listed under a "
                    f"different path: {shown}{' ...' if len(pairs) > 5 else ''}")
    return pairs


# Bad rows a labels CSV's error lists (all are counted).
MAX_BAD_ROWS = 20


def bad_rows_error(labels_csv: Path, bad: list[str], what: str = "bad row") -> DataError:
    """One error for every bad row of ``labels_csv`` (``bad``: 'line N: what is wrong'), the first
    MAX_BAD_ROWS listed, all counted."""
    shown = "\n  ".join(bad[:MAX_BAD_ROWS])
    more = f"\n  ... and {len(bad) - MAX_BAD_ROWS} more" if len(bad) > MAX_BAD_ROWS else ""
    if len(bad) == 1:
        return DataError(f"{labels_csv} {bad[0]}")
    return DataError(f"{labels_csv}: {len(bad)} {what}s; fix them all and rerun:\n  {shown}{more}")


def _label_row(row: dict, fields: list[str], extra: list[str], image_root: Path, where: str) -> dict:
    """``{path, label, <protocol columns>}`` of one CSV row; a DataError (prefixed ``where``) names what is wrong."""
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
    out = {"path": path, "label": value}
    for column in extra:
        out[column] = _check_protocol_value(column, (row[column] or "").strip(), where)
    return out


def read_label_table(labels_csv: str | Path, image_root: str | Path,
                     duplicates: str = "error") -> tuple[list[dict], list[str]]:
    """Rows ``{path, label, line, <protocol columns>}`` of a labels CSV and its protocol columns.

    Bad rows fail together, each with its line number in the file and what is wrong (the first
    MAX_BAD_ROWS listed, all counted); an image listed twice
    fails naming both lines, or (``duplicates='drop'``) its identical repeats are dropped."""
    labels_csv, image_root = Path(labels_csv), Path(image_root)
    if not labels_csv.is_file():
        raise DataError(f"{labels_csv}: labels file not found")
    if not image_root.is_dir():
        raise DataError(f"{image_root}: image root not found (the folder the paths of {labels_csv} are relative to)")
    if duplicates not in DUPLICATES:
        raise DataError(f"{labels_csv}: duplicates {duplicates!r} is not one of {DUPLICATES}")
    rows: list[dict] = []
    reader = csv.DictReader(io.StringIO(decode_text(labels_csv), newline=""))
    fields = [c.strip() for c in reader.fieldnames or []]
    reader.fieldnames = fields
    missing = {"path", "label"} - set(fields)
    if missing:
        raise DataError(f"{labels_csv}: missing column(s) {sorted(missing)}; expected a header 'path,label'")
    extra = protocol_columns(fields)
    bad: list[str] = []
    for row in reader:
        line = reader.line_num
        try:
            rows.append(_label_row(row, fields, extra, image_root, f"line {line}") | {"line": line})
        except DataError as exc:
            bad.append(str(exc))
    if bad:
        raise bad_rows_error(labels_csv, bad)
    if not rows:
        raise DataError(f"{labels_csv}: no rows")
    return drop_duplicates(rows, extra, labels_csv, duplicates), extra


def read_labels(labels_csv: str | Path, image_root: str | Path) -> list[tuple[str, int]]:
    """Read ``path,label`` rows; each bad row fails with its line number and what is wrong."""
    rows, _ = read_label_table(labels_csv, image_root)
    return [(r["path"], r["label"]) for r in rows]


def rank_range(labels: list[int], ranks: list[int] | None, where: str) -> tuple[int, int]:
    """The (min, max) label of the rank scale: given in the config, or spanned by the labels."""
    lo, hi = (min(labels), max(labels)) if ranks is None else ranks
    bad = [v for v in labels if not lo <= v <= hi]
    if bad:
        values = sorted(set(bad))
        if len(bad) == 1:
            raise DataError(f"{where}: label {bad[0]} is outside the ranks {lo}..{hi}")
        raise DataError(f"{where}: {len(bad)} label(s) outside the ranks {lo}..{hi}: "
                        f"{', '.join(map(str, values[:MAX_BAD_ROWS]))}{' ...' if len(values) > MAX_BAD_ROWS else ''}")
    return lo, hi


INTERPOLATIONS = {"bilinear": Image.BILINEAR, "bicubic": Image.BICUBIC}


def prepare(labels_csv: str | Path, image_root: str | Path, px: int, ranks: list[int] | None,
            out_images: str | Path, out_index: str | Path, duplicates: str = "error",
            interpolation: str = "bicubic") -> None:
    """Write the decoded, resized uint8 cache and ``index.csv`` (index,path,label,rank and the
    labels' protocol columns). ``duplicates``: what to do with an image listed twice (error | drop);
    byte-identical images under different paths are reported. ``interpolation``: PIL's resize filter
    (bilinear: torchvision's ``transforms.Resize`` default on PIL images, the official OrdinalCLIP /
    NumCLIP transform; bicubic: the demo's)."""
    if interpolation not in INTERPOLATIONS:
        raise ConfigError(f"resize_interpolation: {interpolation!r}; expected one of {sorted(INTERPOLATIONS)}")
    rows, extra = read_label_table(labels_csv, image_root, duplicates)
    if ranks is not None:
        outside = [f"line {r['line']}: label {r['label']} is outside the ranks {ranks[0]}..{ranks[1]}"
                   for r in rows if not ranks[0] <= r["label"] <= ranks[1]]
        if outside:
            raise bad_rows_error(Path(labels_csv), outside, "out-of-range label")
    report_identical(rows, Path(image_root), Path(labels_csv))
    lo, _ = rank_range([r["label"] for r in rows], ranks, str(labels_csv))
    with atomic_path(out_images, checked=True) as tmp:
        # written in place in the .npy file (the same bytes np.save writes): memory stays at one
        # chunk of images whatever the dataset's size
        images = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=(len(rows), px, px, 3))
        undecodable = []
        for i, row in enumerate(rows):
            try:
                with Image.open(Path(image_root) / row["path"]) as img:
                    images[i] = np.asarray(img.convert("RGB").resize((px, px), INTERPOLATIONS[interpolation]))
            except (UnidentifiedImageError, OSError) as exc:
                undecodable.append(f"line {row['line']}: cannot decode image {row['path']}: {exc}")
            if (i + 1) % FLUSH_ROWS == 0:
                images.flush()  # bound the dirty pages the kernel holds
        images.flush()
        del images
        if undecodable:
            raise bad_rows_error(Path(labels_csv), undecodable, "undecodable image")
    with atomic_path(out_index) as tmp:
        with open(tmp, "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["index", "path", "label", "rank", *extra])
            writer.writerows((i, r["path"], r["label"], r["label"] - lo, *(r[c] for c in extra))
                             for i, r in enumerate(rows))
