"""MORPH II (Album 2) age estimation, ages 16-77, with the split lists L2RCLIP released.

The images are licensed: the user places the archive (any zip/tar holding the JPEGs, in any
folders; ``files.archive``). The lists come from L2RCLIP's ``datalist/morph`` (pinned URL + sha256,
or a local path). ``setting`` picks the protocol. What the released lists hold (counted from the
blobs at the pinned commit; docs/datasets.md has the tables):
- A: ``Setting_A_fold{0-4}_{train,test}``: Caucasian images (race column 0 throughout), a random
  80/20 split per fold (4,394 / 1,098 of 5,492); the image sets differ between folds (5,942 images
  over the 5 folds), so each fold is a ``split<k>`` column.
- B: ``Setting_B_fold{0-2}``: three image-disjoint lists of 7,000, each balanced the same way:
  race codes 0 and 1 about 1:1 (3,478 : 3,522, 3,533 : 3,467, 3,489 : 3,511) and gender
  male : female about 3:1 (5,281 : 1,719, 5,282 : 1,718, 5,271 : 1,729, by the M/F letter of the
  file names; the gender column codes male 0 here but 1 in setting A), ages 16-77 (list 1: 16-67),
  mean age 33.4-33.6. 21,000 images, all in settings C/D with the same ages, 5,910 of them also in
  setting A. The lists are not subject-disjoint: of 8,992 subject ids (the file name before
  ``_``), 4,240 (15,054 images) are in two or three lists.
  This is the shape of the S1/S2/S3 protocol (disjoint sets balanced by race and gender), which
  trains on one set and tests on the others; the lists cannot say which way L2RCLIP ran them (it
  released no loader that reads them: datasets/morph.py:163,185 split ``<path> <age>`` lines). So
  ``orientation`` must be given for B: ``train_one`` (fold k trains on list k and tests on the two
  others, 7,000 / 14,000; ``split<k>`` columns) or ``test_one`` (fold k tests on list k and trains
  on the two others, 14,000 / 7,000; a ``fold`` column).
- C: ``morph_C_0{0-4}``: all 55,134 images in 5 disjoint random folds (11,026-11,027 each; 12,365
  of the 13,617 subjects are in several folds); fold k tests on list k, trains on the four others.
- D: ``morph_D_0{0-4}``: all 55,134 images in 5 folds (11,012-11,046) grouped by subject: of the
  13,617 subject ids (the file name before ``_``), 180 (852 images) are in two or three folds, the
  rest in one. Fold k tests on list k. fetch.json counts the subjects in several folds.
Lists name images by file name; each is found in the archive by its base name (case-insensitive).
"""

from __future__ import annotations

import logging
import re
from pathlib import Path, PurePosixPath

from ordclip.data.fetch import (image_members, label_counts, member_path, obtain, read_lines, unpack,
                                write_labels, write_record)
from ordclip.errors import ConfigError, DataError
from ordclip.io import atomic_path

log = logging.getLogger(__name__)

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


ORIENTATIONS = ("train_one", "test_one")
SUBJECT = re.compile(r"^(\d+)_\d+[mf]\d+\.jpe?g$", re.IGNORECASE)


def subject_of(filename: str) -> str | None:
    """The subject id of a MORPH file name ``<subject>_<n><M|F><age>.JPG``, or None for another name."""
    match = SUBJECT.match(filename)
    return match[1] if match else None


def assign(setting: str, lists: dict[str, Path], orientation: str | None = None
           ) -> tuple[dict[str, dict], list[str], dict[str, tuple[Path, int]]]:
    """Per image file name: its age, the list it is in (B-D) and its protocol columns; the columns;
    where each name was read. Setting A: ``split<k>`` = train/test/empty from the fold's two lists;
    B with ``orientation`` train_one: ``split<k>`` = train on list k, test on the others; B with
    test_one, C and D: ``fold`` = the list's number (fold k tests on list k)."""
    images: dict[str, dict] = {}
    seen: dict[str, tuple[Path, int]] = {}
    for name in SETTINGS[setting]:
        path = lists[name]
        for line, filename, age in parse_list(path):
            key = filename.lower()
            row = images.setdefault(key, {"filename": filename, "label": age})
            if row["label"] != age:
                first = seen[key]
                raise DataError(f"{path} line {line}: {filename} has age {age}, but {row['label']} at "
                                f"{first[0]} line {first[1]}")
            if setting == "A":
                k, part = int(name.split("_fold")[1][0]), name.rsplit("_", 1)[1]
                if row.get(f"split{k}"):
                    raise DataError(f"{path} line {line}: {filename} is listed twice in fold {k}")
                row[f"split{k}"] = part
            else:
                if "list" in row:
                    first = seen[key]
                    raise DataError(f"{path} line {line}: {filename} is also in {first[0]} line {first[1]}")
                row["list"] = SETTINGS[setting].index(name)
            seen.setdefault(key, (path, line))
    n = len(SETTINGS[setting])
    if setting == "A":
        columns = [f"split{k}" for k in range(5)]
        for row in images.values():
            for c in columns:
                row.setdefault(c, "")
    elif setting == "B" and orientation == "train_one":
        columns = [f"split{k}" for k in range(n)]
        for row in images.values():
            row.update({f"split{k}": "train" if row["list"] == k else "test" for k in range(n)})
    else:
        columns = ["fold"]
        for row in images.values():
            row["fold"] = row["list"]
    return images, columns, seen


def shared_subjects(images: dict[str, dict]) -> dict | None:
    """Subjects (by file name) and how many of them, with their images, are in more than one list;
    None when a listed name is not a MORPH file name (no subject to read)."""
    lists_of: dict[str, set[int]] = {}
    count: dict[str, int] = {}
    for row in images.values():
        subject = subject_of(row["filename"])
        if subject is None:
            return None
        lists_of.setdefault(subject, set()).add(row["list"])
        count[subject] = count.get(subject, 0) + 1
    shared = [s for s, where in lists_of.items() if len(where) > 1]
    return {"subjects": len(lists_of), "subjects_in_several_lists": len(shared),
            "images_of_those_subjects": sum(count[s] for s in shared)}


def fetch(dataset_cfg: dict, raw_dir: str) -> None:
    """Verify the placed archive and the lists; extract the listed images; write labels.csv with
    the setting's folds (see assign)."""
    dataset, setting = dataset_cfg["name"], dataset_cfg.get("setting")
    orientation = dataset_cfg.get("orientation")
    if setting not in SETTINGS:
        raise ConfigError(f"datasets.{dataset}.setting: {setting!r}; expected one of {sorted(SETTINGS)}")
    if setting == "B" and orientation not in ORIENTATIONS:
        raise ConfigError(f"datasets.{dataset}.orientation: {orientation!r}; setting B needs one of "
                          f"{list(ORIENTATIONS)} (train on one list and test on the two others, or the reverse; "
                          f"the lists do not say which)")
    if setting != "B" and orientation is not None:
        raise ConfigError(f"datasets.{dataset}.orientation: {orientation!r} applies to setting B only "
                          f"(setting {setting})")
    sources, lists = {}, {}
    archive, sources["archive"] = obtain(dataset_cfg, "archive", "MORPH II images archive", ARCHIVE_REQUEST)
    for name in SETTINGS[setting]:
        lists[name], sources[name] = obtain(dataset_cfg, name, f"MORPH II setting {setting} list", LIST_REQUEST)
    images, columns, seen = assign(setting, lists, orientation)
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
        summary = {"setting": setting, "images": len(rows), "labels": label_counts(rows)}
        if setting == "B":
            summary["orientation"] = orientation
        subjects = shared_subjects(images) if setting != "A" else None
        if subjects is not None:
            summary.update(subjects)
        write_record(raw, sources, summary)
    shared = (f"; {subjects['subjects_in_several_lists']} of {subjects['subjects']} subjects "
              f"({subjects['images_of_those_subjects']} images) are in more than one list" if subjects else "")
    log.info(f"morph2 setting {setting}"
             + (f" ({orientation})" if orientation else "") + f": {len(rows)} images{shared}")

