"""The content of a bring-your-own dataset's files (kind csv): its labels CSV and every image it names.

Snakemake sees the CSV but not the images, which live in the user's folder. So the prepare job's
configuration carries :func:`source_digest` (ordclip.jobs.job_config): an image changed in place
changes the digest, and Snakemake replans prepare and everything after it. The images' hashes are
kept between plans in a cache keyed by (size, modification time), so a plan re-reads only images
that changed. The prepare job writes what it was built from (:func:`write_record`), and the audit
re-hashes every image against that record.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
from pathlib import Path

RECORD = ".sources.json"  # beside the image cache: {"csv": sha256, "images": {path: sha256}}


def _sha256(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def image_paths(labels_csv: str | Path) -> list[str] | None:
    """The distinct ``path`` values of a labels CSV, sorted; None when it cannot be read (the
    prepare job reports why, naming the row)."""
    try:
        text = Path(labels_csv).read_bytes().decode("utf-8-sig")
        rows = csv.DictReader(io.StringIO(text))
        return sorted({row["path"] for row in rows if row.get("path")})
    except (OSError, UnicodeDecodeError, KeyError, csv.Error):
        return None


def image_hashes(labels_csv: str | Path, image_root: str | Path, cache: str | Path | None = None) -> dict[str, str]:
    """{path as the CSV names it: sha256 of the image, or "missing"}. ``cache``: a JSON file of
    earlier hashes, used where an image's size and modification time are unchanged, and updated."""
    root = Path(image_root)
    known: dict = {}
    if cache is not None and Path(cache).is_file():
        try:
            known = json.loads(Path(cache).read_text())
        except json.JSONDecodeError:
            known = {}
    out, fresh = {}, {}
    for rel in image_paths(labels_csv) or []:
        path = root / rel
        try:
            st = path.stat()
        except OSError:
            out[rel] = "missing"
            continue
        key = [st.st_size, st.st_mtime_ns]
        hit = known.get(str(path))
        digest = hit[2] if hit and hit[:2] == key else _sha256(path)
        out[rel] = digest
        fresh[str(path)] = [*key, digest]
    if cache is not None and fresh != {k: known.get(k) for k in fresh}:
        from ordclip.io import write_text

        write_text(cache, json.dumps({**known, **fresh}))
    return out


def digest(labels_csv: str | Path, hashes: dict[str, str]) -> str:
    """sha256 over the labels CSV's bytes and each image's path and hash (:func:`image_hashes`)."""
    h = hashlib.sha256()
    try:
        h.update(_sha256(Path(labels_csv)).encode())
    except OSError:
        h.update(b"no labels csv")
    h.update(json.dumps(hashes, sort_keys=True).encode())
    return h.hexdigest()


def source_digest(labels_csv: str | Path, image_root: str | Path, cache: str | Path | None = None) -> str:
    """:func:`digest` of the CSV and the images it names now."""
    return digest(labels_csv, image_hashes(labels_csv, image_root, cache))


def write_record(labels_csv: str | Path, hashes: dict[str, str], folder: str | Path) -> None:
    """Record, beside a prepared image cache, the CSV and the images (:func:`image_hashes`) it was built from."""
    from ordclip.io import write_json

    write_json(Path(folder) / RECORD, {"csv": _sha256(Path(labels_csv)), "images": hashes})


def changed_sources(labels_csv: str | Path, image_root: str | Path, folder: str | Path) -> list[str]:
    """What differs between the files a prepared cache was built from and those there now: the
    CSV and each image by name; [] when the cache has no record (not a bring-your-own dataset)."""
    record_path = Path(folder) / RECORD
    if not record_path.is_file():
        return []
    record = json.loads(record_path.read_text())
    out = []
    if not Path(labels_csv).is_file() or _sha256(Path(labels_csv)) != record["csv"]:
        out.append(f"{labels_csv} (labels CSV)")
    now = image_hashes(labels_csv, image_root)
    for rel, digest in sorted(record["images"].items()):
        if now.get(rel, "missing") != digest:
            out.append(os.path.join(str(image_root), rel))
    return out
