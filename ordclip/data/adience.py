"""Adience age groups: 8 ordered groups, the official 5 subject-exclusive folds.

The data is given on request (the form on the Adience page); the user places the aligned faces
archive (``files.aligned``: aligned.tar.gz, faces at ``aligned/<user_id>/landmark_aligned_face.
<face_id>.<original_image>``) and the fold lists. ``lists`` picks which:
- ``official`` (default): the dataset's own ``fold_{0-4}_data.txt`` (``files.fold_0_data`` ..
  ``fold_4_data``): tab-separated, with a header naming ``user_id``, ``original_image``,
  ``face_id`` and ``age``. An age is a range "(25, 32)", a single age "35" or "None". A range
  inside one of the 8 groups, or an age inside one, takes that group; the rest (None, ranges across
  groups, ages between groups) are left out and counted in fetch.json (our rule, as dlordinal's).
- ``l2rclip``: L2RCLIP's ``simplified_adience_{0-4}.txt`` (``<user_id>/<face file> <group>``),
  17,470 faces.
Fold k of the ``given`` protocol tests on list k and trains on the four others.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

from ordclip.data.fetch import (image_members, label_counts, member_path, obtain, read_lines, unpack,
                                write_labels, write_record)
from ordclip.errors import ConfigError, DataError
from ordclip.io import atomic_path

log = logging.getLogger(__name__)

REQUEST = ("the Adience request form, https://talhassner.github.io/home/projects/Adience/Adience-data.html "
           "(aligned.tar.gz and fold_0_data.txt .. fold_4_data.txt)")
L2RCLIP_REQUEST = ("L2RCLIP's datalist/adience, https://github.com/raywang335/L2RCLIP/tree/"
                   "168fd4b8bf1ff2c2d66b17430d66c407fd48c35e/datalist/adience")
GROUPS = [(0, 2), (4, 6), (8, 13), (15, 20), (25, 32), (38, 43), (48, 53), (60, 100)]
LISTS = {"official": [f"fold_{k}_data" for k in range(5)], "l2rclip": [f"simplified_adience_{k}" for k in range(5)]}
RANGE = re.compile(r"^\(\s*(\d+)\s*,\s*(\d+)\s*\)$")


def age_group(text: str) -> int | None:
    """The group (0..7) of an Adience age field, or None when it fits no single group."""
    text = text.strip()
    if text in ("None", ""):
        return None
    match = RANGE.match(text)
    if match:
        lo, hi = int(match[1]), int(match[2])
    elif text.isdigit():
        lo = hi = int(text)
    else:
        raise ValueError(text)
    for group, (g_lo, g_hi) in enumerate(GROUPS):
        if g_lo <= lo and hi <= g_hi:
            return group
    return None


def parse_official(path: Path) -> tuple[list[tuple[int, str, int]], int]:
    """(line, face path ``user_id/landmark_aligned_face.<face_id>.<original_image>``, group) of a
    fold_k_data.txt, and the number of faces left out (no single group)."""
    lines = read_lines(path)
    if not lines:
        raise DataError(f"{path}: empty fold file")
    header = [h.strip() for h in lines[0][1].split("\t")]
    need = ["user_id", "original_image", "face_id", "age"]
    if any(c not in header for c in need):
        raise DataError(f"{path}: the header must name {need} (tab-separated); got {header}")
    at = {c: header.index(c) for c in need}
    out, dropped = [], 0
    for line, text in lines[1:]:
        fields = [f.strip() for f in text.split("\t")]
        if len(fields) <= max(at.values()):
            raise DataError(f"{path} line {line}: {len(fields)} tab-separated fields; expected {len(header)}")
        try:
            group = age_group(fields[at["age"]])
        except ValueError:
            raise DataError(f"{path} line {line}: age {fields[at['age']]!r} is neither '(lo, hi)', "
                            f"a whole number nor None") from None
        if group is None:
            dropped += 1
            continue
        face = f"{fields[at['user_id']]}/landmark_aligned_face.{fields[at['face_id']]}.{fields[at['original_image']]}"
        out.append((line, face, group))
    return out, dropped


def parse_l2rclip(path: Path) -> list[tuple[int, str, int]]:
    """(line, face path, group) of an L2RCLIP simplified_adience_k.txt."""
    out = []
    for line, text in read_lines(path):
        fields = text.split()
        if len(fields) != 2 or not fields[1].isdigit() or int(fields[1]) >= len(GROUPS):
            raise DataError(f"{path} line {line}: expected '<user_id>/<face file> <group 0-7>', got {text!r}")
        out.append((line, fields[0], int(fields[1])))
    return out


def fetch(dataset_cfg: dict, raw_dir: str) -> None:
    """Verify the placed archive and fold lists; extract the listed faces; write labels.csv with a
    ``fold`` column (the list each face is in)."""
    dataset, kind = dataset_cfg["name"], dataset_cfg.get("lists", "official")
    if kind not in LISTS:
        raise ConfigError(f"datasets.{dataset}.lists: {kind!r}; expected one of {sorted(LISTS)}")
    sources, faces, seen, dropped = {}, {}, {}, {}
    archive, sources["aligned"] = obtain(dataset_cfg, "aligned", "Adience aligned faces archive", REQUEST)
    for fold, name in enumerate(LISTS[kind]):
        request = REQUEST if kind == "official" else L2RCLIP_REQUEST
        path, sources[name] = obtain(dataset_cfg, name, f"Adience fold {fold} list", request)
        if kind == "official":
            rows, dropped[name] = parse_official(path)
        else:
            rows = parse_l2rclip(path)
        for line, face, group in rows:
            key = "/".join(face.split("/")[-2:]).lower()
            if key in seen:
                raise DataError(f"{path} line {line}: face {face} is also at {seen[key][0]} line {seen[key][1]}")
            seen[key] = (path, line)
            faces[key] = {"face": face, "label": group, "fold": fold}
    members = image_members(archive, 2)
    missing = [k for k in faces if k not in members]
    if missing:
        path, line = seen[missing[0]]
        raise DataError(f"{path} line {line}: face {faces[missing[0]]['face']} is not in {archive} "
                        f"({len(missing)} listed faces missing)")
    wanted = {members[k] for k in faces}
    with atomic_path(raw_dir, is_dir=True) as raw:
        unpack(archive, raw / "images", keep=wanted.__contains__)
        rows = [{"path": f"images/{member_path(members[k])}", "label": f["label"], "fold": f["fold"]}
                for k, f in faces.items()]
        write_labels(raw, rows, ["fold"])
        write_record(raw, sources, {"lists": kind, "images": len(rows), "labels": label_counts(rows),
                                    "left_out_no_single_group": dropped})
    log.info(f"adience ({kind} folds): {len(rows)} faces"
             + (f", {sum(dropped.values())} left out (age fits no single group)" if dropped else ""))
