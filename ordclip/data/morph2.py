"""MORPH II (Album 2) age estimation, ages 16-77, with the split lists L2RCLIP released.

The images are licensed: the user places the archive (any zip/tar holding the JPEGs, in any
folders; ``files.archive``). The lists come from L2RCLIP's ``datalist/morph`` (pinned URL + sha256,
or a local path). ``setting`` picks the protocol:
- A: ``Setting_A_fold{0-4}_{train,test}``: 5,492 Caucasian images, a random 80/20 split per fold
  (4,394 / 1,098); the image sets differ between folds, so each fold is a ``split<k>`` column.
- B: ``Setting_B_fold{0-2}``: three disjoint lists of 7,000; fold k tests on list k and trains on
  the two others (our reading: L2RCLIP released no loader for B).
- C: ``morph_C_0{0-4}``: all 55,134 images in 5 disjoint random folds.
- D: ``morph_D_0{0-4}``: all 55,134 images in 5 folds grouped by subject.
Lists name images by file name; each is found in the archive by its base name (case-insensitive).
"""

from __future__ import annotations

import sys
from pathlib import Path, PurePosixPath

from ordclip.data.fetch import (image_members, label_counts, member_path, obtain, read_lines, unpack,
                                write_labels, write_record)
from ordclip.errors import ConfigError, DataError
from ordclip.io import atomic_path

ARCHIVE_REQUEST = ("the MORPH II academic licence from UNC Wilmington "
                   "(https://ebill.uncw.edu/C20231_ustores/web/store_main.jsp?STOREID=4)")
LIST_REQUEST = ("L2RCLIP's datalist/morph, https://github.com/raywang335/L2RCLIP/tree/"
                "168fd4b8bf1ff2c2d66b17430d66c407fd48c35e/datalist/morph")

SETTINGS: dict[str, list[str]] = {
    "A": [f"Setting_A_fold{k}_{part}" for k in range(5) for part in ("train", "test")],
    "B": [f"Setting_B_fold{k}" for k in range(3)],
    "C": [f"morph_C_0{k}" for k in range(5)],
    "D": [f"morph_D_0{k}" for k in range(5)],
}


def parse_list(path: Path) -> list[tuple[int, str, int]]:
    """(line, image file name, age) of a MORPH list in either released format:
    - a table with a header naming ``age`` and ``filename`` (space- or comma-separated, the comma
      form with a leading unnamed index column), as in settings A and B;
    - ``<image path> <age>`` lines, as in settings C and D."""
    lines = read_lines(path)
    if not lines:
        raise DataError(f"{path}: empty list")
    first = lines[0][1]
    sep = "," if "," in first else None
    header = [h.strip() for h in first.split(sep)]
    out = []
    if "age" in header and "filename" in header:
        at_age, at_name = header.index("age"), header.index("filename")
        for line, text in lines[1:]:
            fields = [f.strip() for f in text.split(sep)]
            if len(fields) != len(header):
                raise DataError(f"{path} line {line}: {len(fields)} fields for the {len(header)} columns "
                                f"{header}")
            out.append((line, fields[at_name], _age(fields[at_age], path, line)))
    else:
        for line, text in lines:
            fields = text.split()
            if len(fields) != 2:
                raise DataError(f"{path} line {line}: expected '<image path> <age>', got {text!r}")
            out.append((line, PurePosixPath(fields[0].replace("\\", "/")).name, _age(fields[1], path, line)))
    if not out:
        raise DataError(f"{path}: no rows")
    return out


def _age(text: str, path: Path, line: int) -> int:
    if not text.isdigit():
        raise DataError(f"{path} line {line}: age {text!r} is not a whole number")
    return int(text)


def assign(setting: str, lists: dict[str, Path]) -> tuple[dict[str, dict], list[str], dict[str, tuple[Path, int]]]:
    """Per image file name: its age and protocol columns; the columns; where each name was read."""
    images: dict[str, dict] = {}
    seen: dict[str, tuple[Path, int]] = {}
    if setting == "A":
        columns = [f"split{k}" for k in range(5)]
    else:
        columns = ["fold"]
    for name in SETTINGS[setting]:
        path = lists[name]
        for line, filename, age in parse_list(path):
            key = filename.lower()
            row = images.setdefault(key, {"filename": filename, "label": age, **{c: "" for c in columns}})
            if row["label"] != age:
                first = seen[key]
                raise DataError(f"{path} line {line}: {filename} has age {age}, but {row['label']} at "
                                f"{first[0]} line {first[1]}")
            if setting == "A":
                k, part = int(name.split("_fold")[1][0]), name.rsplit("_", 1)[1]
                if row[f"split{k}"]:
                    raise DataError(f"{path} line {line}: {filename} is listed twice in fold {k}")
                row[f"split{k}"] = part
            else:
                if row["fold"] != "":
                    first = seen[key]
                    raise DataError(f"{path} line {line}: {filename} is also in {first[0]} line {first[1]}")
                row["fold"] = SETTINGS[setting].index(name)
            seen.setdefault(key, (path, line))
    return images, columns, seen


def fetch(dataset_cfg: dict, raw_dir: str) -> None:
    """Verify the placed archive and the lists; extract the listed images; write labels.csv with
    the setting's folds (``split0..4`` for setting A, ``fold`` for B-D)."""
    dataset, setting = dataset_cfg["name"], dataset_cfg.get("setting")
    if setting not in SETTINGS:
        raise ConfigError(f"datasets.{dataset}.setting: {setting!r}; expected one of {sorted(SETTINGS)}")
    sources, lists = {}, {}
    archive, sources["archive"] = obtain(dataset_cfg, "archive", "MORPH II images archive", ARCHIVE_REQUEST)
    for name in SETTINGS[setting]:
        lists[name], sources[name] = obtain(dataset_cfg, name, f"MORPH II setting {setting} list", LIST_REQUEST)
    images, columns, seen = assign(setting, lists)
    members = image_members(archive, 1)
    missing = [k for k in images if k not in members]
    if missing:
        path, line = seen[missing[0]]
        raise DataError(f"{path} line {line}: image {images[missing[0]]['filename']} is not in {archive} "
                        f"({len(missing)} listed images missing, {len(members)} images in the archive)")
    wanted = {members[k] for k in images}
    with atomic_path(raw_dir, is_dir=True) as raw:
        unpack(archive, raw / "images", keep=wanted.__contains__)
        rows = [{"path": f"images/{member_path(members[k])}", "label": r["label"], **{c: r[c] for c in columns}}
                for k, r in sorted(images.items(), key=lambda kv: members[kv[0]])]
        write_labels(raw, rows, columns)
        write_record(raw, sources, {"setting": setting, "images": len(rows), "labels": label_counts(rows)})
    print(f"ordclip: morph2 setting {setting}: {len(rows)} images", file=sys.stderr)

