"""FG-NET aging database: 1,002 face images of 82 subjects, ages 0-69, leave-one-person-out.

No list ships with it (L2RCLIP's datalist has none): the labels come from the file names,
``<subject><A><age>[letter].JPG``, e.g. ``001A02.JPG`` (subject 001 at age 2) and ``010A07a.JPG``
(a second image of subject 010 at age 7): three digits, the letter A, two digits, an optional
lower-case letter. The user places the archive (``files.archive``: any zip/tar, or a folder,
holding the JPEGs in any folders; its other files, e.g. the landmark ``.pts`` files, are ignored).
An image whose name is not of that form fails, naming it.

Protocol: leave-one-person-out, as the ``given`` protocol's ``fold`` column: fold k tests on the
images of the k-th subject in ascending id order (subject 001 is fold 0 in the full set) and trains
on the others; val is a per-rank fraction of train (``split.val``). 82 subjects give 82 folds; when
``split.folds`` is set and the archive holds another number of subjects, fetch fails.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path, PurePosixPath

from ordclip.data.fetch import image_members, label_counts, member_path, obtain, unpack, write_labels, write_record
from ordclip.errors import DataError
from ordclip.io import atomic_path

log = logging.getLogger(__name__)

REQUEST = ("the FG-NET aging database (Lanitis et al.), e.g. FGNET.zip as mirrored at "
           "https://yanweifu.github.io/FG_NET_data/ (not checked here: pin its sha256 once you have it)")
NAME = re.compile(r"^(\d{3})A(\d{2})([a-z]?)\.jpe?g$", re.IGNORECASE)


def parse_name(name: str, where: str) -> tuple[str, int]:
    """(subject id, age) of an FG-NET file name; any other name fails naming ``where``."""
    match = NAME.match(PurePosixPath(name).name)
    if match is None:
        raise DataError(f"{where}: image {name!r} is not named like an FG-NET image "
                        f"(<3-digit subject>A<2-digit age>[letter].JPG, e.g. 001A02.JPG or 010A07a.JPG)")
    return match[1], int(match[2])


def index_images(archive: Path) -> list[dict]:
    """``{member, subject, label}`` of every image in the archive or folder, by member name; the
    same file name twice (case-insensitive) fails naming both (ordclip.data.fetch.image_members)."""
    out = []
    for member in sorted(image_members(archive, 1).values()):
        subject, age = parse_name(member, str(archive))
        out.append({"member": member, "subject": subject, "label": age})
    if not out:
        raise DataError(f"{archive}: no images")
    return out


def fetch(dataset_cfg: dict, raw_dir: str) -> None:
    """Verify the placed archive (when pinned); extract its images; write labels.csv with the
    leave-one-person-out ``fold`` column."""
    dataset = dataset_cfg["name"]
    sources = {}
    archive, sources["archive"] = obtain(dataset_cfg, "archive", "FG-NET images archive", REQUEST)
    images = index_images(archive)
    subjects = sorted({r["subject"] for r in images})
    n_folds = (dataset_cfg.get("split") or {}).get("folds")
    if n_folds is not None and n_folds != len(subjects):
        raise DataError(f"{archive}: {len(images)} images of {len(subjects)} subjects, but "
                        f"datasets.{dataset}.split.folds is {n_folds} (leave-one-person-out: one fold per subject)")
    fold_of = {s: k for k, s in enumerate(subjects)}
    with atomic_path(raw_dir, is_dir=True) as raw:
        unpack(archive, raw / "images", keep={r["member"] for r in images}.__contains__)
        rows = [{"path": f"images/{member_path(r['member'])}", "label": r["label"], "fold": fold_of[r["subject"]]}
                for r in images]
        write_labels(raw, rows, ["fold"])
        write_record(raw, sources, {"images": len(rows), "subjects": len(subjects),
                                    "fold_subjects": {str(k): s for k, s in enumerate(subjects)},
                                    "labels": label_counts(rows)})
    log.info(f"fgnet: {len(rows)} images of {len(subjects)} subjects ({len(subjects)} leave-one-person-out "
             f"folds)")
