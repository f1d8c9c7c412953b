"""Obtaining raw dataset files: verified downloads, files the user places, safe extraction.

Every file a dataset needs is named in its ``files:`` mapping, as either
- ``{url, sha256}`` (or ``{url, md5}`` where only an MD5 is published): downloaded once into
  data/downloads/<dataset>/ and verified before use; or
- ``{path, sha256 (optional)}``: placed there by the user (licensed or request-only data); a file
  (archive or list) is verified when a sha256 is given, a folder is read as it is.
Archives (zip, tar, tar.gz/.bz2/.xz) are extracted only after every member has been checked: no
absolute paths, no ``..``, no links leaving the destination, no device files.
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import os
import re
import shutil
import stat
import tarfile
import urllib.error
import urllib.request
import zipfile
from pathlib import Path, PurePosixPath
from typing import Callable, Iterable

from ordclip import layout
from ordclip.errors import ConfigError, DataError

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")


def file_hash(path: str | os.PathLike, algorithm: str = "sha256") -> str:
    """Hex digest of a file (sha256 or md5)."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, algorithm).hexdigest()


def _mismatch(path: str | os.PathLike, sha256: str | None, md5: str | None) -> tuple[str, str | None]:
    """(the file's sha256, a description of the checksum it fails or None)."""
    actual = file_hash(path)
    if sha256 is not None and actual != sha256.lower():
        return actual, f"sha256 mismatch: expected {sha256}, got {actual}"
    if md5 is not None:
        actual_md5 = file_hash(path, "md5")
        if actual_md5 != md5.lower():
            return actual, f"md5 mismatch: expected {md5}, got {actual_md5}"
    return actual, None


def verify(path: str | os.PathLike, sha256: str | None = None, md5: str | None = None) -> str:
    """Check a file against its expected sha256 (and/or md5); return its sha256.

    A mismatch raises DataError naming the file, the expected and the actual hash."""
    actual, problem = _mismatch(path, sha256, md5)
    if problem:
        raise DataError(f"{path}: {problem}")
    return actual


DOWNLOAD_RETRIES = 2


def _fetch_url(url: str, work: Path, name: str, known_hash: str, timeout: float, retries: int) -> Path:
    """Download ``url`` into the folder ``work`` as ``name`` and check it against ``known_hash``
    (pooch's form: ``sha256:<hex>`` or ``md5:<hex>``); return its path. http(s) goes through pooch:
    retries with back-off, a progress bar, its own hash check, and the bytes land in a temporary
    file moved onto the name only when complete and matching. file:// URLs are copied, then hashed
    with pooch.file_hash."""
    import pooch

    algorithm, expected = known_hash.split(":")
    try:
        if url.startswith("file://"):
            with urllib.request.urlopen(url, timeout=timeout) as response, open(work / name, "wb") as out:
                shutil.copyfileobj(response, out, 1 << 20)
            got = pooch.file_hash(str(work / name), alg=algorithm)
            if got != expected:
                raise ValueError(f"{algorithm.upper()} hash of downloaded file ({url}) does not match the known hash: "
                                 f"expected {known_hash} but got {got}")
        else:
            import requests

            fetcher = pooch.create(path=work, base_url="", registry={name: known_hash}, urls={name: url},
                                   retry_if_failed=retries)
            try:
                fetcher.fetch(name, downloader=pooch.HTTPDownloader(progressbar=True, timeout=timeout))
            except requests.exceptions.RequestException as exc:
                raise DataError(f"{url}: download failed after {1 + retries} attempt(s): {exc}") from None
    except (urllib.error.URLError, OSError) as exc:
        raise DataError(f"{url}: download failed: {exc}") from None
    return work / name


def download(url: str, dest: str | os.PathLike, sha256: str | None, md5: str | None = None,
             timeout: float = 60.0, retries: int = DOWNLOAD_RETRIES) -> str:
    """Download ``url`` to ``dest`` and verify it; return the file's sha256.

    A ``dest`` that already verifies is reused without any network access; one that does not is
    removed and downloaded again. The download (pooch, with ``retries``, a progress bar and its
    ``known_hash`` check: the sha256, else the md5) goes to the work folder ``.<name>.download``
    beside ``dest`` and is renamed onto ``dest`` only once it matches, so a failed or mismatching
    download leaves nothing at ``dest``; the work folder is removed afterwards, and at the next
    start if a kill left it. ``md5`` is for files whose publisher gives only an MD5: the sha256 is
    then printed, to be pinned."""
    if sha256 is None and md5 is None:
        raise ConfigError(f"{url}: no checksum given; a download needs a sha256 (or at least an md5)")
    dest = Path(dest)
    if dest.is_file():
        digest, problem = _mismatch(dest, sha256, md5)
        if problem is None:
            _warn_md5_only(url, sha256, digest)
            return digest
        log.info(f"{dest}: {problem}; downloading it again")
        dest.unlink()
    work = dest.parent / f".{dest.name}.download"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    known_hash = f"sha256:{sha256.lower()}" if sha256 is not None else f"md5:{md5.lower()}"
    try:
        log.info(f"downloading {url} -> {dest}")
        try:
            fetched = _fetch_url(url, work, dest.name, known_hash, timeout, retries)
        except ValueError as exc:  # pooch's hash mismatch: "... expected <alg>:<hex> but got <hex>. ..."
            found = re.search(r"expected (\w+):(\w+) but got (\w+)", str(exc))
            problem = (f"{found[1]} mismatch: expected {found[2]}, got {found[3]}" if found
                       else f"checksum mismatch ({exc})")
            raise DataError(f"{url}: {problem}; the download was discarded (not saved as {dest})") from None
        digest = file_hash(fetched)
        with open(fetched, "rb") as f:
            os.fsync(f.fileno())
        os.replace(fetched, dest)
        _warn_md5_only(url, sha256, digest)
        return digest
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _warn_md5_only(url: str, sha256: str | None, digest: str) -> None:
    if sha256 is None:
        log.warning(f"{url} is verified by its md5 only; its sha256 is {digest}: pin it as sha256 in params.yaml")


def placed(path: str | os.PathLike, dataset: str, what: str, request: str) -> DataError:
    """The error for a file the user must place and has not: what, where, and where to get it."""
    return DataError(f"datasets.{dataset}: expected {Path(path).name} ({what}) at {path}; "
                     f"get it from {request}; then rerun")


def obtain(dataset_cfg: dict, name: str, what: str, request: str) -> tuple[Path, dict]:
    """The local path of the dataset's file ``name`` (downloaded and verified, or placed by the
    user and verified when a sha256 is given), and a record of where it came from."""
    dataset = dataset_cfg["name"]
    entry = (dataset_cfg.get("files") or {}).get(name)
    if entry is None:
        raise ConfigError(f"datasets.{dataset}.files.{name}: missing ({what}); give {{url, sha256}} or {{path}}")
    if "url" in entry:
        dest = Path(layout.downloads_dir()) / dataset / PurePosixPath(entry["url"].split("?")[0]).name
        digest = download(entry["url"], dest, entry.get("sha256"), entry.get("md5"))
        return dest, {"url": entry["url"], "file": str(dest), "sha256": digest}
    path = Path(entry["path"])
    if not path.exists():
        raise placed(path, dataset, what, request)
    if path.is_dir():
        if "sha256" in entry:
            raise ConfigError(f"datasets.{dataset}.files.{name}: {path} is a folder; a sha256 applies to a file")
        return path, {"path": str(path), "folder": True}
    try:
        digest = verify(path, entry.get("sha256"))
    except DataError as exc:
        raise DataError(f"datasets.{dataset}.files.{name}: {exc}") from None
    return path, {"path": str(path), "sha256": digest, "pinned": "sha256" in entry}


def member_path(name: str) -> str:
    """An archive member's name as a clean relative path (``./a//b`` -> ``a/b``)."""
    return "/".join(p for p in PurePosixPath(name.replace("\\", "/")).parts if p not in ("", "."))


def _check_member(name: str, dest: Path, archive: Path) -> Path:
    """The destination of an archive member, refusing absolute paths and ``..``."""
    pure = PurePosixPath(name.replace("\\", "/"))
    if name.startswith(("/", "\\")) or pure.is_absolute() or (pure.parts and pure.parts[0].endswith(":")):
        raise DataError(f"{archive}: member {name!r} has an absolute path; refusing to extract")
    if ".." in pure.parts:
        raise DataError(f"{archive}: member {name!r} leaves the destination (..); refusing to extract")
    return dest / member_path(name)


def _inside(path: Path, root: Path) -> bool:
    return os.path.commonpath([os.path.abspath(path), os.path.abspath(root)]) == os.path.abspath(root)


def source_files(source: str | os.PathLike) -> list[str]:
    """Relative names of the files in an archive (zip or tar) or a folder, without extracting."""
    source = Path(source)
    if source.is_dir():
        return [p.relative_to(source).as_posix() for p in folder_files(source)]
    if zipfile.is_zipfile(source):
        with zipfile.ZipFile(source) as zf:
            return [i.filename for i in zf.infolist() if not i.is_dir()]
    with _open_tar(source) as tf:
        return [m.name for m in tf.getmembers() if m.isfile() or m.islnk()]


def folder_files(source: Path) -> list[Path]:
    """The files under a placed folder, sorted. A symbolic link whose target lies outside the folder
    (or does not exist) is refused with a DataError naming it: it would copy files from elsewhere."""
    root = source.resolve()
    files = []
    for path in sorted(source.rglob("*")):
        if path.is_symlink():
            target = path.resolve()
            if not target.exists() or not _inside(target, root):
                raise DataError(f"{source}: {path.relative_to(source).as_posix()!r} is a symbolic link to "
                                f"{os.readlink(path)!r}, outside the folder (or missing); copy the file in, or "
                                f"remove the link")
        if path.is_file():
            files.append(path)
    return files


def _open_tar(archive: Path) -> tarfile.TarFile:
    try:
        return tarfile.open(archive, "r:*")
    except (tarfile.TarError, OSError) as exc:
        raise DataError(f"{archive}: not a zip or tar archive (tar, tar.gz, tar.bz2, tar.xz): {exc}") from None


def extract(archive: str | os.PathLike, dest: str | os.PathLike,
            keep: Callable[[str], bool] | None = None) -> list[str]:
    """Extract a zip or tar archive into ``dest``; return the member names of the files written.

    Every member is checked before anything is written: an absolute path, a ``..`` component, a
    symbolic or hard link whose target lies outside ``dest``, a hard link to a member absent from
    the archive, or a device/FIFO file refuses the whole archive with a DataError naming the member
    (tar members also pass Python's "data" extraction filter). ``keep`` selects the files to
    extract by member name."""
    archive, dest = Path(archive), Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    written: list[str] = []
    if zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as zf:
            infos = zf.infolist()
            for info in infos:
                _check_member(info.filename, dest, archive)
                mode = info.external_attr >> 16
                if stat.S_ISLNK(mode):
                    raise DataError(f"{archive}: member {info.filename!r} is a symbolic link; refusing to extract")
                if stat.S_IFMT(mode) not in (0, stat.S_IFREG, stat.S_IFDIR):
                    raise DataError(f"{archive}: member {info.filename!r} is a special file; refusing to extract")
            for info in infos:
                if info.is_dir() or (keep is not None and not keep(info.filename)):
                    continue
                target = _check_member(info.filename, dest, archive)
                target.parent.mkdir(parents=True, exist_ok=True)
                with zf.open(info) as src, open(target, "wb") as out:
                    shutil.copyfileobj(src, out, 1 << 20)
                written.append(info.filename)
        return written
    with _open_tar(archive) as tf:
        members = tf.getmembers()
        earlier: set[str] = set()
        for m in members:
            target = _check_member(m.name, dest, archive)
            if m.isdev() or m.isfifo():
                raise DataError(f"{archive}: member {m.name!r} is a device or FIFO file; refusing to extract")
            if m.issym():
                link = target.parent / m.linkname
                if os.path.isabs(m.linkname) or not _inside(link, dest):
                    raise DataError(f"{archive}: member {m.name!r} links outside the destination "
                                    f"({m.linkname!r}); refusing to extract")
            if m.islnk():
                _check_member(m.linkname, dest, archive)
            try:
                tarfile.data_filter(m, str(dest))  # Python's "data" extraction filter (PEP 706)
            except tarfile.FilterError as exc:
                raise DataError(f"{archive}: member {m.name!r} refused by the tar 'data' filter "
                                f"({type(exc).__name__}: {exc}); refusing to extract") from None
            if m.islnk() and member_path(m.linkname) not in earlier:
                raise DataError(f"{archive}: member {m.name!r} is a hard link to {m.linkname!r}, which is not an "
                                f"earlier member of the archive; refusing to extract")
            earlier.add(member_path(m.name))
        for m in members:
            if not (m.isfile() or m.islnk()) or (keep is not None and not keep(m.name)):
                continue
            target = _check_member(m.name, dest, archive)
            target.parent.mkdir(parents=True, exist_ok=True)
            src = tf.extractfile(m)
            if src is None:
                raise DataError(f"{archive}: member {m.name!r} cannot be read")
            with src, open(target, "wb") as out:
                shutil.copyfileobj(src, out, 1 << 20)
            written.append(m.name)
    return written


def unpack(source: Path, dest: Path, keep: Callable[[str], bool] | None = None) -> list[str]:
    """Extract an archive, or copy the files of a folder, into ``dest``; return the relative names
    of the files written (``keep`` selects them by relative name)."""
    if not source.is_dir():
        return extract(source, dest, keep)
    written = []
    for path in folder_files(source):
        rel = path.relative_to(source).as_posix()
        if keep is None or keep(rel):
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, dest / rel)
            written.append(rel)
    return written


def is_image(name: str) -> bool:
    """An image file name (hidden files and macOS resource forks excluded)."""
    base = PurePosixPath(name).name
    return not base.startswith(".") and base.lower().endswith(IMAGE_SUFFIXES)


def index_by_tail(names: Iterable[str], depth: int, where: str, strip_suffix: bool = False) -> dict[str, str]:
    """Map the last ``depth`` path components of each name (lower-cased; without the file
    extension when ``strip_suffix``) to the name. Two names with the same key fail."""
    out: dict[str, str] = {}
    for name in names:
        parts = list(PurePosixPath(name).parts[-depth:])
        if strip_suffix:
            parts[-1] = PurePosixPath(parts[-1]).stem
        key = "/".join(parts).lower()
        if key in out and out[key] != name:
            raise DataError(f"{where}: two files match {key!r}: {out[key]} and {name}")
        out[key] = name
    return out


def image_members(source: Path, depth: int, strip_suffix: bool = False) -> dict[str, str]:
    """The images of an archive or folder, indexed by their last ``depth`` path components
    (see index_by_tail): how adapters find the files their lists name."""
    return index_by_tail((m for m in source_files(source) if is_image(m)), depth, str(source), strip_suffix)


def read_lines(path: Path) -> list[tuple[int, str]]:
    """(line number, text) of the non-blank lines of a text list (CRLF or LF, UTF-8 with BOM ok)."""
    from ordclip.data.prepare import decode_text

    text = decode_text(path)
    return [(i, line.strip()) for i, line in enumerate(text.splitlines(), start=1) if line.strip()]


def write_labels(raw: Path, rows: list[dict], columns: list[str]) -> None:
    """Write ``labels.csv`` (path,label and the protocol columns) into the raw folder."""
    with open(raw / "labels.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["path", "label", *columns], extrasaction="raise")
        writer.writeheader()
        writer.writerows(rows)


def write_record(raw: Path, sources: dict, summary: dict) -> None:
    """Write ``fetch.json``: where each file came from (with its sha256) and what was indexed."""
    (raw / "fetch.json").write_text(json.dumps({"files": sources, **summary}, indent=2) + "\n")


def label_counts(rows: list[dict]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for row in rows:
        counts[str(row["label"])] = counts.get(str(row["label"]), 0) + 1
    return dict(sorted(counts.items(), key=lambda kv: int(kv[0])))
