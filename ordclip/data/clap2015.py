"""ChaLearn LAP 2015 apparent age (CLAP2015): face images labelled with the age people judged them.

The images are given after registration on the ChaLearn LAP page: the user places them
(``files.images``: a folder, or a zip/tar, holding the JPEGs in any folders). The list
(``files.list``) is L2RCLIP's ``datalist/clap2015/total_2015.csv`` (pinned URL + sha256): a comma-
separated table with the header ``filename,age,stdv,database``, one row per image (CRLF lines):
- ``filename``: ``image_<n>.jpg``; an image is found by its base name (case-insensitive);
- ``age``: the apparent age, the label. In the pinned list every one of the 4,691 ages is a whole
  number (3..85; no age of 77, 81, 83 or 84), so no rounding is done: an age that is not a whole
  number fails naming its line;
- ``stdv``: the spread of the annotators' votes, a positive number (0.70..7.16 in the list); carried
  into labels.csv as the column ``stdv`` (prepare ignores it; it is what ChaLearn's error measure
  weights by);
- ``database``: ``train`` (2,476 rows), ``val`` (1,136) or ``test`` (1,079): the challenge's own
  split, written as the ``split0`` column, one fold of the ``given`` protocol.
"""

from __future__ import annotations

import csv
import io
import logging
from pathlib import Path, PurePosixPath

from ordclip.data.fetch import image_members, label_counts, member_path, obtain, unpack, write_labels, write_record
from ordclip.data.prepare import decode_text
from ordclip.errors import DataError
from ordclip.io import atomic_path

log = logging.getLogger(__name__)

IMAGES_REQUEST = ("the ChaLearn LAP 2015 apparent age data, after registration at "
                  "https://chalearnlap.cvc.uab.cat/dataset/18/description/ (extract its train, validation and "
                  "test images into one folder, or pack them into one zip/tar)")
LIST_REQUEST = ("L2RCLIP's datalist/clap2015/total_2015.csv, https://github.com/raywang335/L2RCLIP/tree/"
                "168fd4b8bf1ff2c2d66b17430d66c407fd48c35e/datalist/clap2015")
COLUMNS = ("filename", "age", "stdv", "database")
PARTS = ("train", "val", "test")


def parse_list(path: Path) -> list[dict]:
    """Rows ``{line, filename, label, stdv, split0}`` of a total_2015.csv; a bad row fails naming its
    line, an image listed twice naming both lines."""
    reader = csv.reader(io.StringIO(decode_text(path), newline=""))
    header = next(reader, None)
    if header is None:
        raise DataError(f"{path}: empty list")
    header = [h.strip() for h in header]
    if any(c not in header for c in COLUMNS):
        raise DataError(f"{path} line 1: the header must name {list(COLUMNS)} (comma-separated); got {header}")
    at = {c: header.index(c) for c in COLUMNS}
    out, seen = [], {}
    for fields in reader:
        line = reader.line_num
        if not any(f.strip() for f in fields):
            continue
        if len(fields) != len(header):
            raise DataError(f"{path} line {line}: {len(fields)} fields for the {len(header)} columns {header}")
        name, age, stdv, part = (fields[at[c]].strip() for c in COLUMNS)
        if not name or PurePosixPath(name).name != name:
            raise DataError(f"{path} line {line}: filename {name!r} is not an image file name")
        if not age.isdigit():
            raise DataError(f"{path} line {line}: age {age!r} is not a whole number (the label is the list's "
                            f"apparent age, used as it is)")
        try:
            spread = float(stdv)
        except ValueError:
            raise DataError(f"{path} line {line}: stdv {stdv!r} is not a number") from None
        if not spread > 0:
            raise DataError(f"{path} line {line}: stdv {stdv!r} is not positive")
        if part not in PARTS:
            raise DataError(f"{path} line {line}: database {part!r} is not one of {list(PARTS)}")
        if name.lower() in seen:
            raise DataError(f"{path} line {line}: {name} is also at line {seen[name.lower()]}")
        seen[name.lower()] = line
        out.append({"line": line, "filename": name, "label": int(age), "stdv": stdv, "split0": part})
    if not out:
        raise DataError(f"{path}: no rows")
    return out


def fetch(dataset_cfg: dict, raw_dir: str) -> None:
    """Verify the list (and the images when pinned); copy or extract the listed images; write
    labels.csv with ``split0`` (the list's train/val/test) and ``stdv``."""
    sources = {}
    path, sources["list"] = obtain(dataset_cfg, "list", "CLAP2015 list", LIST_REQUEST)
    listed = parse_list(path)
    images, sources["images"] = obtain(dataset_cfg, "images", "CLAP2015 images", IMAGES_REQUEST)
    members = image_members(images, 1)
    missing = [r for r in listed if r["filename"].lower() not in members]
    if missing:
        raise DataError(f"{path} line {missing[0]['line']}: image {missing[0]['filename']} is not in {images} "
                        f"({len(missing)} of {len(listed)} listed images missing, {len(members)} images there); "
                        f"get them from {IMAGES_REQUEST}")
    wanted = {members[r["filename"].lower()] for r in listed}
    with atomic_path(raw_dir, is_dir=True) as raw:
        unpack(images, raw / "images", keep=wanted.__contains__)
        rows = [{"path": f"images/{member_path(members[r['filename'].lower()])}", "label": r["label"],
                 "split0": r["split0"], "stdv": r["stdv"]} for r in listed]
        write_labels(raw, rows, ["split0", "stdv"])
        parts = {p: sum(r["split0"] == p for r in rows) for p in PARTS}
        write_record(raw, sources, {"images": len(rows), "parts": parts, "labels": label_counts(rows)})
    log.info(f"clap2015: {len(rows)} images ({', '.join(f'{n} {p}' for p, n in parts.items())})")
