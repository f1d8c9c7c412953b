"""Atomic, durable file output: every result is written to a temporary sibling, flushed to disk,
then renamed; checked files carry a record of their size and sha256 for the jobs that read them.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
import threading
from pathlib import Path
from typing import Any, Callable, Iterator

from ordclip.errors import DataError, DiskFullError

log = logging.getLogger(__name__)


def _fsync(path: Path) -> None:
    """Flush a file's (or a folder's entries') data to the disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_tree(root: Path) -> None:
    for path in sorted(root.rglob("*"), reverse=True):
        if path.is_file() and not path.is_symlink():
            _fsync(path)
        elif path.is_dir() and not path.is_symlink():
            _fsync(path)
    _fsync(root)


def _temp_pattern(path: Path, is_dir: bool) -> re.Pattern:
    """Names atomic_path gives its temporary siblings of ``path`` (mkstemp's 8 random characters)."""
    suffix = "" if is_dir else re.escape(path.suffix)
    return re.compile(re.escape(f".{path.name}.") + r"[A-Za-z0-9_]{8}" + suffix)


def clean_temporaries(path: str | os.PathLike, is_dir: bool = False) -> list[Path]:
    """Remove the temporary siblings of ``path`` that a killed earlier writer left; return them.

    Only one job writes a given output (Snakemake's rule), so a temporary of ``path`` that exists
    when the job starts writing it again belongs to a writer that died."""
    path = Path(path)
    if not path.parent.is_dir():
        return []
    pattern = _temp_pattern(path, is_dir)
    stale = [p for p in path.parent.iterdir() if pattern.fullmatch(p.name)]
    for p in stale:
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p, ignore_errors=True)
        else:
            p.unlink(missing_ok=True)
        log.info(f"removed {p}, left by an interrupted write of {path}")
    return stale


def _size(path: Path) -> int:
    """Bytes of a file, or of every file under a folder (0 if absent)."""
    if path.is_dir() and not path.is_symlink():
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())
    return path.stat().st_size if path.is_file() else 0


# Below this many free bytes, a failed write counts as a full disk even without ENOSPC: numpy's
# tofile reports a short write ("N requested and M written") and torch.save a stream error instead.
FULL_BELOW = 1 << 20


def _disk_full(exc: BaseException, folder: Path) -> bool:
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    if isinstance(exc, (OSError, RuntimeError)):
        try:
            return shutil.disk_usage(folder).free < FULL_BELOW
        except OSError:
            return False
    return False


def disk_full_error(path: Path, written: int, exc: BaseException | None = None,
                    size: int | None = None) -> DiskFullError:
    """The error of an atomic write of ``path`` that ran out of space after ``written`` bytes of its
    temporary (already removed): the file, the space it needs (``size`` where the writer knows it,
    else a lower bound), the space left and what was kept."""
    free = shutil.disk_usage(path.parent).free
    previous = _size(path)
    kept = (f"the previous {path.name} ({previous:,} bytes) is kept unchanged" if path.exists()
            else f"no earlier {path.name} existed")
    if size is not None:
        need = f"writing it needs {size:,} bytes free"
    else:
        hint = f", about the previous file's {previous:,}" if previous > written else ""
        need = f"writing it needs more than {written:,} bytes free{hint}"
    cause = "" if exc is None or (isinstance(exc, OSError) and exc.errno) else f" ({type(exc).__name__}: {exc})"
    return DiskFullError(f"{path}: the disk is full{cause}; it filled after {written:,} bytes of the new file, so "
                         f"{need}; {free:,} bytes are free on "
                         f"{path.parent} now (the partial temporary was removed); {kept}; "
                         f"free space there and run the job again")


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, is_dir: bool = False, checked: bool = False,
                size: int | None = None) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` only on success.

    Before the rename the file (every file of a folder) and its folder are flushed to disk, so a
    crash or power loss leaves either the old or the new complete file, never a partial one.
    Temporaries left by an earlier, killed writer of ``path`` are removed first. ``checked``: also
    write the size and sha256 record that verified_input() checks (see checksum_path). A full disk
    (ENOSPC) raises DiskFullError naming the file and the space it needs (``size``: the bytes the
    caller will write, where it knows them); the earlier file stays."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    clean_temporaries(path, is_dir)
    try:
        if is_dir:
            tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
        else:
            fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=path.suffix, dir=path.parent)
            os.close(fd)
            tmp = Path(name)
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise disk_full_error(path, 0, size=size) from None
        raise
    try:
        yield tmp
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, (0o777 if is_dir else 0o666) & ~umask)
        if is_dir:
            _fsync_tree(tmp)
        else:
            _fsync(tmp)
        if checked:
            write_checksum(path, tmp)
        if is_dir and path.exists():
            shutil.rmtree(path)
        os.replace(tmp, path)
        _fsync(path.parent)
    except BaseException as exc:
        written, full = _size(tmp), _disk_full(exc, path.parent)
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            tmp.unlink(missing_ok=True)
        if full:
            raise disk_full_error(path, written, exc, size=size) from None
        raise


class BackgroundWriter:
    """Runs writes in a background thread, one at a time, so that the caller goes on meanwhile.

    ``submit(fn)`` first waits for the previous write, then starts ``fn`` (which must not touch
    anything the caller changes afterwards: give it its own copy of the data). ``wait()`` blocks
    until the current write is done and re-raises its exception, if it had one; call it before
    anything that relies on the file being in place (and before the process ends)."""

    def __init__(self) -> None:
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    def _run(self, fn: Callable[[], None]) -> None:
        try:
            fn()
        except BaseException as exc:  # re-raised in the caller's thread by wait()
            self._error = exc

    def submit(self, fn: Callable[[], None]) -> None:
        self.wait()
        self._thread = threading.Thread(target=self._run, args=(fn,), name="ordclip-writer")
        self._thread.start()

    def wait(self) -> None:
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        if self._error is not None:
            error, self._error = self._error, None
            raise error


def write_json(path: str | os.PathLike, obj: Any) -> None:
    """Write ``obj`` as indented JSON, atomically. NaN/inf are refused (not valid JSON)."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=False, allow_nan=False) + "\n")


def save_torch(obj: Any, path: str | os.PathLike) -> None:
    """torch.save into an open file, so the archive's inner folder is torch's fixed "archive" and
    not the (temporary) file's name: the same object gives the same bytes (recorded hashes repeat)."""
    import torch

    with open(path, "wb") as f:
        torch.save(obj, f)


def write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def sha256_file(path: str | os.PathLike) -> str:
    """Hex sha256 of a file's bytes."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def checksum_path(path: str | os.PathLike) -> Path:
    """The record of a checked file's size and sha256: ``.<name>.sha256`` beside it (JSON)."""
    path = Path(path)
    return path.parent / f".{path.name}.sha256"


def write_checksum(path: str | os.PathLike, content: str | os.PathLike | None = None) -> None:
    """Record the size and sha256 of ``content`` (default: ``path`` itself) as ``path``'s record."""
    content = Path(path if content is None else content)
    record = {"file": Path(path).name, "bytes": content.stat().st_size, "sha256": sha256_file(content)}
    record_path = checksum_path(path)
    fd, name = tempfile.mkstemp(prefix=f"{record_path.name}.", dir=record_path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(json.dumps(record) + "\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(name, record_path)
    except BaseException:
        Path(name).unlink(missing_ok=True)
        raise


def verified_input(path: str | os.PathLike, rule: str) -> Path:
    """``path`` after checking it against the size and sha256 recorded when rule ``rule`` wrote it.

    A file that differs (truncated, overwritten, damaged) is moved aside to ``<name>.damaged`` (kept
    for inspection) and a DataError names it and the rule that rebuilds it: rerunning Snakemake
    then rebuilds the file before this job runs again. A file without a record (written before
    records existed) is used as it is."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: missing; rule {rule!r} builds it (rerun snakemake)")
    record_path = checksum_path(path)
    if not record_path.is_file():
        return path
    try:
        record = json.loads(record_path.read_text())
        expected_bytes, expected_sha = int(record["bytes"]), str(record["sha256"])
    except (ValueError, KeyError, TypeError) as exc:
        raise DataError(f"{record_path}: unreadable size/sha256 record of {path} ({exc}); delete it and "
                        f"{path}, then rerun snakemake (rule {rule!r} rebuilds them)") from None
    size = path.stat().st_size
    if size != expected_bytes:
        problem = f"has {size} bytes, {expected_bytes} were written"
    elif sha256_file(path) != expected_sha:
        problem = f"has sha256 {sha256_file(path)}, {expected_sha} was written"
    else:
        return path
    aside = path.with_name(path.name + ".damaged")
    os.replace(path, aside)
    record_path.unlink(missing_ok=True)
    raise DataError(f"{path}: damaged ({problem} by rule {rule!r}); moved to {aside}; rerun snakemake: "
                    f"rule {rule!r} rebuilds it, then this job runs again (if you replaced the file on purpose, "
                    f"e.g. by dvc checkout, move it back and delete {record_path})")


def load_numpy(path: str | os.PathLike, rule: str, mmap_mode: str | None = None):
    """A .npy array (memory-mapped with ``mmap_mode``) or the arrays of a .npz (a dict), read
    after verified_input(); a file numpy cannot read fails with a DataError naming it and ``rule``."""
    import zipfile

    import numpy as np

    path = verified_input(path, rule)
    try:
        if path.suffix == ".npz":
            with np.load(path) as npz:
                return {k: npz[k] for k in npz.files}
        return np.load(path, mmap_mode=mmap_mode)
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as exc:
        raise DataError(f"{path}: cannot be read ({type(exc).__name__}: {exc}); it is damaged: delete it and "
                        f"rerun snakemake (rule {rule!r} rebuilds it)") from None
