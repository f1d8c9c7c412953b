"""Downloads (against a local HTTP server), checksums, placed files and safe archive extraction."""

import hashlib
import io
import stat
import tarfile
import zipfile
from pathlib import Path

import pytest
from local_http import serve

from ordclip.data.fetch import download, extract, obtain, placed, source_files, verify
from ordclip.errors import ConfigError, DataError

PAYLOAD = b"ordinal regression " * 1000


@pytest.fixture(autouse=True)
def no_proxy(monkeypatch):
    for var in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)


@pytest.fixture
def www(tmp_path):
    root = tmp_path / "www"
    root.mkdir()
    (root / "lists.txt").write_bytes(PAYLOAD)
    with serve(root) as (url, requests):
        yield url, requests


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_download_verifies_and_reuses_a_verified_file(tmp_path, www):
    url, requests = www
    dest = tmp_path / "dl" / "lists.txt"
    assert download(f"{url}/lists.txt", dest, sha(PAYLOAD)) == sha(PAYLOAD)
    assert dest.read_bytes() == PAYLOAD and requests == ["/lists.txt"]
    assert download(f"{url}/lists.txt", dest, sha(PAYLOAD)) == sha(PAYLOAD)
    assert requests == ["/lists.txt"]                 # verified copy reused, no second request


def test_download_bad_checksum_names_everything_and_keeps_nothing(tmp_path, www):
    url, _ = www
    dest = tmp_path / "dl" / "lists.txt"
    wrong = "0" * 64
    with pytest.raises(DataError) as err:
        download(f"{url}/lists.txt", dest, wrong)
    message = str(err.value)
    assert f"{url}/lists.txt" in message and str(dest) in message
    assert f"expected {wrong}" in message and f"got {sha(PAYLOAD)}" in message
    assert not dest.exists() and list(dest.parent.iterdir()) == []   # no bad file, no temp file


def test_download_replaces_a_corrupt_existing_file(tmp_path, www, capsys):
    url, requests = www
    dest = tmp_path / "lists.txt"
    dest.write_bytes(b"truncated")
    download(f"{url}/lists.txt", dest, sha(PAYLOAD))
    assert dest.read_bytes() == PAYLOAD and len(requests) == 1
    assert "sha256 mismatch" in capsys.readouterr().err


def test_download_by_md5_prints_the_sha256_to_pin(tmp_path, www, capsys):
    url, _ = www
    download(f"{url}/lists.txt", tmp_path / "lists.txt", None, md5=hashlib.md5(PAYLOAD).hexdigest())
    err = capsys.readouterr().err
    assert "md5 only" in err and sha(PAYLOAD) in err
    with pytest.raises(DataError, match="md5 mismatch: expected 0{32}"):
        download(f"{url}/lists.txt", tmp_path / "again.txt", None, md5="0" * 32)


def test_download_errors(tmp_path, www):
    url, _ = www
    with pytest.raises(DataError, match="download failed"):
        download(f"{url}/absent.txt", tmp_path / "absent.txt", sha(b""))
    assert not (tmp_path / "absent.txt").exists()
    with pytest.raises(ConfigError, match="no checksum"):
        download(f"{url}/lists.txt", tmp_path / "x.txt", None)


def test_verify(tmp_path):
    (tmp_path / "f").write_bytes(PAYLOAD)
    assert verify(tmp_path / "f", sha(PAYLOAD)) == sha(PAYLOAD)
    with pytest.raises(DataError, match=f"f: sha256 mismatch: expected {'1' * 64}, got {sha(PAYLOAD)}"):
        verify(tmp_path / "f", "1" * 64)


def test_placed_message():
    err = placed("data/archives/morph2/morph2.zip", "morph2", "MORPH II images archive", "UNC Wilmington")
    assert str(err) == ("datasets.morph2: expected morph2.zip (MORPH II images archive) at "
                        "data/archives/morph2/morph2.zip; get it from UNC Wilmington; then rerun")


def test_obtain_placed_and_downloaded(in_tmp, www):
    url, _ = www
    cfg = {"name": "toy", "files": {
        "absent": {"path": "data/archives/toy/absent.zip"},
        "lists": {"url": f"{url}/lists.txt", "sha256": sha(PAYLOAD)},
        "mine": {"path": "mine.txt", "sha256": "2" * 64},
        "folder": {"path": "photos", "sha256": "2" * 64},
    }}
    with pytest.raises(DataError, match=r"expected absent.zip \(toy images\) at data/archives/toy/absent.zip; "
                                        r"get it from the toy page; then rerun"):
        obtain(cfg, "absent", "toy images", "the toy page")
    path, record = obtain(cfg, "lists", "lists", "-")
    assert path == Path("data/downloads/toy/lists.txt") and record["sha256"] == sha(PAYLOAD)
    (in_tmp / "mine.txt").write_text("x")
    with pytest.raises(DataError, match="datasets.toy.files.mine: mine.txt: sha256 mismatch"):
        obtain(cfg, "mine", "my file", "-")
    (in_tmp / "photos").mkdir()
    with pytest.raises(ConfigError, match="is a folder; a sha256 applies to a file"):
        obtain(cfg, "folder", "photos", "-")
    with pytest.raises(ConfigError, match=r"datasets.toy.files.other: missing"):
        obtain(cfg, "other", "other", "-")


# ---- archives -------------------------------------------------------------------------------------

def _tar(path: Path, mode: str, members: list[tuple[tarfile.TarInfo, bytes | None]]) -> Path:
    with tarfile.open(path, mode) as tf:
        for info, data in members:
            if data is not None:
                info.size = len(data)
            tf.addfile(info, io.BytesIO(data) if data is not None else None)
    return path


def _file(name: str, data: bytes = b"x") -> tuple[tarfile.TarInfo, bytes]:
    return tarfile.TarInfo(name), data


def _link(name: str, target: str, kind=tarfile.SYMTYPE) -> tuple[tarfile.TarInfo, None]:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, target
    return info, None


@pytest.mark.parametrize("suffix, mode", [(".tar", "w"), (".tar.gz", "w:gz"), (".tar.bz2", "w:bz2"),
                                          (".tar.xz", "w:xz")])
def test_extract_tar_kinds(tmp_path, suffix, mode):
    archive = _tar(tmp_path / f"a{suffix}", mode, [_file("./top/a.jpg", b"A"), _file("top/sub/b.jpg", b"B"),
                                                   _link("top/inside", "a.jpg")])
    written = extract(archive, tmp_path / "out")
    assert sorted(written) == ["./top/a.jpg", "top/sub/b.jpg"]
    assert (tmp_path / "out/top/a.jpg").read_bytes() == b"A" and (tmp_path / "out/top/sub/b.jpg").read_bytes() == b"B"
    assert not (tmp_path / "out/top/inside").exists()    # links are never created
    assert source_files(archive) == ["./top/a.jpg", "top/sub/b.jpg"]


def test_extract_zip_and_keep(tmp_path):
    with zipfile.ZipFile(tmp_path / "a.zip", "w") as zf:
        zf.writestr("imgs/a.jpg", b"A")
        zf.writestr("imgs/b.jpg", b"B")
        zf.writestr("imgs/", b"")
    written = extract(tmp_path / "a.zip", tmp_path / "out", keep=lambda name: name.endswith("b.jpg"))
    assert written == ["imgs/b.jpg"] and not (tmp_path / "out/imgs/a.jpg").exists()


@pytest.mark.parametrize("member, message", [
    (_file("../evil.txt"), "leaves the destination"),
    (_file("ok/../../evil.txt"), "leaves the destination"),
    (_file("/tmp/ordclip-evil.txt"), "absolute path"),
    (_link("link", "../../outside"), "links outside"),
    (_link("link", "/etc/passwd"), "links outside"),
    (_link("hard", "../outside", tarfile.LNKTYPE), "leaves the destination"),
    (_link("dev", "", tarfile.CHRTYPE), "device or FIFO"),
    (_link("fifo", "", tarfile.FIFOTYPE), "device or FIFO"),
])
def test_extract_refuses_unsafe_tar_members(tmp_path, member, message):
    archive = _tar(tmp_path / "bad.tar", "w", [_file("good.jpg"), member])
    with pytest.raises(DataError, match=message):
        extract(archive, tmp_path / "out" / "dest")
    assert list((tmp_path / "out" / "dest").iterdir()) == []          # refused before writing anything
    assert not (tmp_path / "evil.txt").exists() and not (tmp_path / "out" / "evil.txt").exists()


@pytest.mark.parametrize("name, mode, message", [
    ("../evil.txt", stat.S_IFREG | 0o644, "leaves the destination"),
    ("/abs.txt", stat.S_IFREG | 0o644, "absolute path"),
    ("link", stat.S_IFLNK | 0o777, "symbolic link"),
])
def test_extract_refuses_unsafe_zip_members(tmp_path, name, mode, message):
    with zipfile.ZipFile(tmp_path / "bad.zip", "w") as zf:
        zf.writestr("good.jpg", b"x")
        info = zipfile.ZipInfo(name)
        info.external_attr = mode << 16
        zf.writestr(info, b"../../outside")
    with pytest.raises(DataError, match=message):
        extract(tmp_path / "bad.zip", tmp_path / "out")
    assert list((tmp_path / "out").iterdir()) == []


def test_extract_rejects_a_non_archive(tmp_path):
    (tmp_path / "notes.txt").write_text("plain text")
    with pytest.raises(DataError, match="not a zip or tar archive"):
        extract(tmp_path / "notes.txt", tmp_path / "out")
