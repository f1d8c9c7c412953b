"""Faults a careful user meets (issue 23): a full disk, more folds than the data allows, a target
after --configfile, bad rows of a bring-your-own CSV, two Snakemake runs at once (FAULTS.md)."""

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from ordclip.errors import DiskFullError
from ordclip.io import atomic_path

pytestmark = pytest.mark.faults

ROOT = Path(__file__).resolve().parents[1]


def test_disk_full_names_the_file_and_keeps_the_previous_one(tmp_path):
    """ENOSPC as the kernel gives it (/dev/full) while resume.pt is written: the error names the
    file, the bytes it needs and what was kept; the previous resume.pt and no temporary remain."""
    previous = tmp_path / "resume.pt"
    previous.write_bytes(b"p" * 5000)
    with pytest.raises(DiskFullError) as err:
        with atomic_path(previous) as tmp:
            tmp.write_bytes(b"n" * 3000)
            with open("/dev/full", "wb") as full:
                full.write(b"x" * 100)
                full.flush()
    message = str(err.value)
    assert str(previous) in message and "the disk is full" in message
    assert "needs more than 3,000 bytes free, about the previous file's 5,000" in message
    assert "the previous resume.pt (5,000 bytes) is kept unchanged" in message
    assert previous.read_bytes() == b"p" * 5000 and sorted(os.listdir(tmp_path)) == ["resume.pt"]


PROBE = textwrap.dedent("""
    import sys, numpy as np, torch
    from pathlib import Path
    from ordclip.errors import DiskFullError
    from ordclip.io import atomic_path, write_text
    d = Path(sys.argv[1])
    write_text(d / "resume.pt", "previous")
    for name, write in [("resume.pt", lambda t: t.write_bytes(b"x" * 3_000_000)),
                        ("outputs.npy", lambda t: np.save(t, np.zeros(1_000_000))),
                        ("model.pt", lambda t: torch.save({"w": torch.zeros(1_000_000)}, t))]:
        try:
            with atomic_path(d / name) as tmp:
                write(tmp)
        except DiskFullError as exc:
            print(name, "|", exc)
    print(sorted(p.name for p in d.iterdir()), (d / "resume.pt").read_text())
""")


@pytest.mark.skipif(shutil.which("unshare") is None or subprocess.run(["unshare", "-rm", "true"]).returncode != 0,
                    reason="needs unprivileged user and mount namespaces (unshare -rm) for a small tmpfs")
def test_disk_full_on_a_real_full_filesystem(tmp_path):
    """A 1 MiB tmpfs filled by a plain write (ENOSPC), numpy (a short write, no errno) and torch.save
    (a RuntimeError): each is a DiskFullError naming its file; nothing but the previous file is left."""
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    (tmp_path / "probe.py").write_text(PROBE)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(["unshare", "-rm", "sh", "-c", f"mount -t tmpfs -o size=1m tmpfs {mnt} && "
                           f"{sys.executable} {tmp_path / 'probe.py'} {mnt}"], capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert [line.split(" | ")[0] for line in lines[:3]] == ["resume.pt", "outputs.npy", "model.pt"], proc.stdout
    for line in lines[:3]:
        assert f"{mnt}/" in line and "the disk is full" in line and "bytes free" in line
    assert "the previous resume.pt (8 bytes) is kept unchanged" in lines[0]
    assert "no earlier model.pt existed" in lines[2]
    assert lines[3] == "['resume.pt'] previous"
