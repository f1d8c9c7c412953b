"""Image Aesthetics (Schifanella et al., ICWSM 2015, the Flickr "beauty" dataset): 5 levels (1-5),
4 categories (animals, nature, people, urban), each a dataset of its own.

The photos come from Flickr by their ids (the dataset gives ids and votes, not images): the user
places them (``files.images``: a folder or a zip/tar; any layout, ``<flickr id>.<ext>``). The list
(``files.list``) holds ``<flickr id>.<ext> <level>`` lines for the category, whitespace- or
tab-separated, the level 1.0-5.0 a whole number, as L2RCLIP's ``datalist/crowdbeauty/
<category>_datasets.txt``. A listed photo is found by its id (the file name without extension:
L2RCLIP's lists say .png, Flickr downloads are often .jpg). A listed photo that is missing fails,
unless ``allow_missing: true`` (Flickr photos disappear): then it is left out and counted in
fetch.json. The 5 folds are made later by the split protocol.

``lists: fixed`` reads instead L2RCLIP's fixed split of the category, ``files.train`` and
``files.test`` (``<category>_train.txt``, ``<category>_test.txt``: 80/20, together the category's
``_datasets.txt``), the protocol NumCLIP trains and tests with (its aesthetics.yaml:5-7); labels.csv
then carries a ``split0`` column (train/test) for the ``given`` protocol, one fold.
"""

from __future__ import annotations

import logging
from pathlib import Path, PurePosixPath

from ordclip.data.fetch import (image_members, label_counts, member_path, obtain, read_lines, unpack,
                                write_labels, write_record)
from ordclip.errors import ConfigError, DataError
from ordclip.io import atomic_path

log = logging.getLogger(__name__)

CATEGORIES = ("animals", "nature", "people", "urban")
IMAGES_REQUEST = ("Flickr, by the photo ids of beauty-icwsm15-dataset.tsv "
                  "(http://www.di.unito.it/~schifane/dataset/beauty-icwsm15/)")
LIST_REQUEST = ("L2RCLIP's datalist/crowdbeauty/<category>_datasets.txt, https://github.com/raywang335/L2RCLIP/tree/"
                "168fd4b8bf1ff2c2d66b17430d66c407fd48c35e/datalist/crowdbeauty")


def parse_list(path) -> list[tuple[int, str, int]]:
    """(line, photo id, level) of a category list."""
    out, seen = [], {}
    for line, text in read_lines(path):
        fields = text.split()
        if len(fields) != 2:
            raise DataError(f"{path} line {line}: expected '<photo file> <level>', got {text!r}")
        try:
            score = float(fields[1])
        except ValueError:
            raise DataError(f"{path} line {line}: level {fields[1]!r} is not a number") from None
        if not score.is_integer() or not 1 <= score <= 5:
            raise DataError(f"{path} line {line}: level {fields[1]!r} is not a whole level 1-5")
        photo = PurePosixPath(fields[0]).stem
        if photo.lower() in seen:
            raise DataError(f"{path} line {line}: photo {photo} is also at line {seen[photo.lower()]}")
        seen[photo.lower()] = line
        out.append((line, photo, int(score)))
    if not out:
        raise DataError(f"{path}: empty list")
    return out


LISTS = {"cv": ("list",), "fixed": ("train", "test")}


def _listed(dataset_cfg: dict, category: str, sources: dict) -> tuple[list[tuple[Path, int, str, int]], list[str]]:
    """The listed (list file, line, photo, level), and the part of each (train/test; [] for cv)."""
    dataset, kind = dataset_cfg["name"], dataset_cfg.get("lists", "cv")
    if kind not in LISTS:
        raise ConfigError(f"datasets.{dataset}.lists: {kind!r}; expected one of {sorted(LISTS)}")
    listed, parts, where = [], [], {}
    for name in LISTS[kind]:
        request = LIST_REQUEST.replace("_datasets.txt", f"_{name}.txt") if kind == "fixed" else LIST_REQUEST
        path, sources[name] = obtain(dataset_cfg, name, f"Image Aesthetics {name} list of {category}", request)
        for line, photo, level in parse_list(path):
            if photo.lower() in where:
                raise DataError(f"{path} line {line}: photo {photo} is also in {where[photo.lower()]}")
            where[photo.lower()] = f"{path} line {line}"
            listed.append((path, line, photo, level))
            parts += [name] if kind == "fixed" else []
    return listed, parts


def fetch(dataset_cfg: dict, raw_dir: str) -> None:
    """Verify the list(s) (and the images archive when pinned); copy or extract the listed photos;
    write labels.csv."""
    dataset, category = dataset_cfg["name"], dataset_cfg.get("category")
    if category not in CATEGORIES:
        raise ConfigError(f"datasets.{dataset}.category: {category!r}; expected one of {list(CATEGORIES)}")
    sources = {}
    listed, parts = _listed(dataset_cfg, category, sources)
    images, sources["images"] = obtain(dataset_cfg, "images", "Image Aesthetics photos", IMAGES_REQUEST)
    members = image_members(images, 1, strip_suffix=True)
    missing = [(path, line, photo) for path, line, photo, _ in listed if photo.lower() not in members]
    if missing and not dataset_cfg.get("allow_missing", False):
        path, line, photo = missing[0]
        raise DataError(f"{path} line {line}: photo {photo} is not in {images} ({len(missing)} of {len(listed)} "
                        f"listed photos missing; set datasets.{dataset}.allow_missing: true to leave them out)")
    found = [(photo, level, parts[i] if parts else None) for i, (_, _, photo, level) in enumerate(listed)
             if photo.lower() in members]
    wanted = {members[photo.lower()] for photo, _, _ in found}
    with atomic_path(raw_dir, is_dir=True) as raw:
        unpack(images, raw / "images", keep=wanted.__contains__)
        rows = [{"path": f"images/{member_path(members[photo.lower()])}", "label": level,
                 **({"split0": part} if parts else {})} for photo, level, part in found]
        write_labels(raw, rows, ["split0"] if parts else [])
        write_record(raw, sources, {"category": category, "lists": dataset_cfg.get("lists", "cv"), "images": len(rows),
                                    "labels": label_counts(rows),
                                    "missing_left_out": [photo for _, _, photo in missing]})
    log.info(f"aesthetics {category}: {len(rows)} photos"
             + (f", {len(missing)} listed photos missing and left out" if missing else ""))
