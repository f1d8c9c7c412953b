"""Faults a careful user meets (issue 23): a full disk, more folds than the data allows, a target
after --configfile, bad rows of a bring-your-own CSV, two Snakemake runs at once (FAULTS.md)."""

import os
import re
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
    # A writer that knows its size (resume.pt's) gets the exact figure instead of the lower bound.
    with pytest.raises(DiskFullError) as err:
        with atomic_path(previous, size=9000) as tmp:
            tmp.write_bytes(b"n" * 3000)
            with open("/dev/full", "wb") as full:
                full.write(b"x" * 100)
                full.flush()
    assert "so writing it needs 9,000 bytes free;" in str(err.value) and "more than" not in str(err.value)


PROBE = textwrap.dedent("""
    import sys, numpy as np, torch
    from pathlib import Path
    from ordclip.errors import DiskFullError
    from ordclip.io import BackgroundWriter, atomic_path, write_text
    from ordclip.train import _save_resume
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
    writer = BackgroundWriter()  # training's own resume.pt write, in its background thread
    _save_resume(d / "resume.pt", {}, (0, 1), torch.nn.Linear(600, 600), ["weight"], None, None,
                 torch.Generator(), [], {}, {}, [], writer=writer)
    try:
        writer.wait()
    except DiskFullError as exc:
        print("train resume.pt", "|", exc)
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
    assert [line.split(" | ")[0] for line in lines[:4]] == ["resume.pt", "outputs.npy", "model.pt",
                                                             "train resume.pt"], proc.stdout
    for line in lines[:4]:
        assert f"{mnt}/" in line and "the disk is full" in line and "bytes free" in line
    assert "the previous resume.pt (8 bytes) is kept unchanged" in lines[0]
    assert "no earlier model.pt existed" in lines[2]
    # The trainer knows the size of the checkpoint it writes (a 600 x 600 float32 weight and more).
    need = re.search(r"so writing it needs ([\d,]+) bytes free;", lines[3])
    assert need and int(need[1].replace(",", "")) > 600 * 600 * 4, lines[3]
    assert "the previous resume.pt (8 bytes) is kept unchanged" in lines[3]
    assert lines[4] == "['resume.pt'] previous"


def _snakemake(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
           "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "snakemake", *args], cwd=cwd, env=env, capture_output=True, text=True)


@pytest.mark.parametrize("counts, cfg", [
    ({1: 40, 2: 40, 3: 7}, {"protocol": "kfold", "folds": 60, "val": 0.1}),
    ({1: 5, 2: 9}, {"protocol": "kfold", "folds": 6, "val": 0.2}),
    ({0: 3, 1: 3, 2: 2}, {"protocol": "stratified", "folds": 3, "train": 0.6, "val": 0.15, "test": 0.25}),
    ({0: 8, 1: 1}, {"protocol": "stratified", "folds": 2, "train": 0.6, "val": 0.15, "test": 0.25}),
    ({0: 30, 1: 40}, {"protocol": "per_class", "folds": 2, "train": 20, "val": 5, "test": 10}),
    ({0: 40, 1: 40}, {"protocol": "per_class", "folds": 2, "train": 20, "val": 5, "test": 10}),
])
def test_fold_check_agrees_with_the_split_jobs(tmp_path, counts, cfg):
    """The plan-time check (fold_problems, from counts only) refuses exactly the folds the split job
    refuses on images with those counts."""
    import numpy as np

    from ordclip.data.splits import PROTOCOLS, check_usable, fold_problems
    from ordclip.errors import DataError

    cfg = {**cfg, "seed": 7}
    labels = np.array([label for label, n in counts.items() for _ in range(n)])
    index = {"rank": labels - labels.min(), "label": labels}
    refused = []
    for fold in range(cfg["folds"]):
        try:
            check_usable(PROTOCOLS[cfg["protocol"]](index, fold, cfg["seed"], cfg), index, fold, cfg, tmp_path)
        except DataError:
            refused.append(fold)
    assert sorted(fold_problems(counts, cfg)) == refused


def test_plan_refuses_more_folds_than_the_data_allows(repo_copy):
    """k-fold with 60 folds on 40 images per rank: `snakemake -n` stops before any job, naming the
    suite, dataset, folds, ranks and numbers (the split jobs of folds 40..59 would fail one by one)."""
    (repo_copy / "folds.yaml").write_text(textwrap.dedent("""
        datasets:
          shapes: {kind: synthetic, generator: counting, ranks: [1, 10], per_rank: 40, image_size: 64, seed: 5,
                   prompt: {context: "the number of shapes is"},
                   split: {protocol: kfold, val: 0.1}}
        suites:
          many: {datasets: [shapes], methods: [zeroshot, coop], backbone: tiny, folds: 60}
    """))
    proc = _snakemake(repo_copy, "-n", "results/many/table1.csv", "--configfile", "params.yaml", "folds.yaml")
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0, out
    assert ("suites.many, dataset 'shapes': split protocol 'kfold' with 60 folds: folds 40..59: empty test part; "
            "the dataset has 400 images in 10 ranks, the fewest 40 (labels 1, 2, 3, 4, 5 ...), the most 40; "
            "at most 40 folds fit: set suites.many.folds to 40") in out
    assert not (repo_copy / "results").exists()
    assert _snakemake(repo_copy, "-n", "results/table1.csv").returncode == 0


def test_a_target_after_configfile_says_to_put_it_first(repo_copy):
    """`snakemake -n --configfile my.yaml results/demo/table1.metrics.json`: the JSON target is read as
    a second config file; the error names it and says to put the target before --configfile (it
    used to be a schema message about its keys)."""
    (repo_copy / "my.yaml").write_text("suites: {demo: {folds: 2}}\n")
    target = repo_copy / "results/demo/table1.metrics.json"
    target.parent.mkdir(parents=True)
    target.write_text('{"ordinality": {"coop": 0.9}, "report": "x"}\n')
    proc = _snakemake(repo_copy, "-n", "--configfile", "my.yaml", "results/demo/table1.metrics.json")
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert ("--configfile results/demo/table1.metrics.json: not a params file: it is a file the pipeline writes "
            "(under results/); none of its keys (ordinality, report) is a section of params.yaml") in out
    assert "put the target before --configfile" in out and "Additional properties" not in out
    assert _snakemake(repo_copy, "-n", "results/table1.csv", "--configfile", "my.yaml").returncode == 0


def test_configfile_check_names_a_yaml_of_no_known_section(tmp_path):
    from ordclip.config import check_configfiles
    from ordclip.errors import ConfigError

    good, bad = tmp_path / "good.yaml", tmp_path / "notes.yaml"
    good.write_text("suites: {demo: {folds: 2}}\n")
    bad.write_text("title: my notes\nruns: 3\n")
    check_configfiles([good], tmp_path)
    with pytest.raises(ConfigError, match=r"--configfile notes.yaml: not a params file: none of its keys "
                                          r"\(title, runs\) is a section of params.yaml"):
        check_configfiles([good, bad], tmp_path)
    # A params file the user keeps under data/ or results/ is still a params file.
    (tmp_path / "data").mkdir()
    kept = tmp_path / "data" / "faces.yaml"
    kept.write_text("datasets: {faces: {kind: csv}}\n")
    check_configfiles([good, kept], tmp_path)
    (tmp_path / "data" / "notes.yaml").write_text("title: x\n")
    with pytest.raises(ConfigError, match=r"--configfile data/notes.yaml: not a params file: it is a file the "
                                          r"pipeline writes \(under data/\); none of its keys \(title\)"):
        check_configfiles([tmp_path / "data" / "notes.yaml"], tmp_path)
    # A cell's JSON has `suite` and `seeds` beside its own keys: under results/ it is still a target.
    cell = tmp_path / "results" / "demo" / "cells" / "fading" / "coop.json"
    cell.parent.mkdir(parents=True)
    cell.write_text('{"suite": "demo", "dataset": "fading", "seeds": 1, "runs": [], "metrics": {}}\n')
    with pytest.raises(ConfigError, match=r"--configfile results/demo/cells/fading/coop.json: not a params file: it "
                                          r"is a file the pipeline writes \(under results/\); its keys dataset, seeds, "
                                          r"runs, metrics are no sections of params.yaml .*put the target before"):
        check_configfiles([good, cell], tmp_path)


def _faces(root: Path, n_bad: int) -> Path:
    """labels.csv over 2 labels x 6 images, then ``n_bad`` bad rows of three kinds."""
    from PIL import Image

    root.mkdir(parents=True)
    lines = ["path,label"]
    for i in range(12):
        Image.new("RGB", (8, 8), (20 * i, 0, 0)).save(root / f"img{i}.png")
        lines.append(f"img{i}.png,{20 + i % 2}")
    for i in range(n_bad):
        lines.append([f"img{i}.png,twenty", f"gone{i}.png,20", f"img{i}.png,20,extra"][i % 3])
    (root / "labels.csv").write_text("\n".join(lines) + "\n")
    return root / "labels.csv"


def test_csv_errors_name_every_bad_row_up_to_a_limit(tmp_path):
    from ordclip.data.prepare import MAX_BAD_ROWS, read_label_table
    from ordclip.errors import DataError

    labels = _faces(tmp_path / "faces", 3)
    with pytest.raises(DataError) as err:
        read_label_table(labels, tmp_path / "faces")
    assert str(err.value) == (f"{labels}: 3 bad rows; fix them all and rerun:\n"
                              f"  line 14: label 'twenty' is not an integer\n"
                              f"  line 15: image {tmp_path / 'faces/gone1.png'} not found\n"
                              f"  line 16: 3 fields for 2 columns")
    labels = _faces(tmp_path / "many", MAX_BAD_ROWS + 7)
    with pytest.raises(DataError) as err:
        read_label_table(labels, tmp_path / "many")
    message = str(err.value)
    assert message.startswith(f"{labels}: {MAX_BAD_ROWS + 7} bad rows;") and message.endswith("... and 7 more")
    assert message.count("\n  line ") == MAX_BAD_ROWS


def test_undecodable_images_are_all_named(tmp_path):
    from ordclip.data.prepare import prepare
    from ordclip.errors import DataError

    labels = _faces(tmp_path / "faces", 0)
    for i in (3, 7):
        (tmp_path / f"faces/img{i}.png").write_bytes(b"not a png")
    with pytest.raises(DataError) as err:
        prepare(labels, tmp_path / "faces", 8, None, tmp_path / "out/images.npy", tmp_path / "out/index.csv")
    message = str(err.value)
    assert message.startswith(f"{labels}: 2 undecodable images;")
    assert "line 5: cannot decode image img3.png" in message and "line 9: cannot decode image img7.png" in message
    assert not (tmp_path / "out/images.npy").exists() and os.listdir(tmp_path / "out") == []


def test_plan_names_a_missing_image_root_and_csv(repo_copy, tmp_path):
    """A bring-your-own dataset whose image root (or CSV) does not exist stops `snakemake -n` with
    the key and path, before Snakemake's MissingInputException."""
    labels = _faces(tmp_path / "faces", 0)

    def plan(csv, image_root):
        (repo_copy / "my.yaml").write_text(
            f"datasets: {{faces: {{kind: csv, csv: {csv}, image_root: {image_root}}}}}\n"
            "suites: {mine: {datasets: [faces], methods: [zeroshot], backbone: tiny, folds: 3}}\n")
        return _snakemake(repo_copy, "-n", "results/table1.csv", "--configfile", "my.yaml", "--config", "suite=mine")

    proc = plan(labels, tmp_path / "nowhere")
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0 and "MissingInputException" not in out
    assert (f"datasets.faces.image_root: {tmp_path / 'nowhere'} is not a folder (used by suite mine); it is the "
            f"folder of your images") in out
    proc = plan(tmp_path / "faces/none.csv", tmp_path / "faces")
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0 and "MissingInputException" not in out
    assert f"datasets.faces.csv: {tmp_path / 'faces/none.csv'} not found (used by suite mine)" in out
    proc = plan(labels, tmp_path / "faces")
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_a_second_run_names_the_run_that_holds_the_folder(repo_copy):
    """Run A generates the fading set; its job is stopped (SIGSTOP) mid-way, so A holds the lock.
    Run B of the same target, and B with --rerun-incomplete, say that A (by pid) holds the folder
    before Snakemake's own IncompleteFiles / lock error; after A ends, B's plan has no such line."""
    import signal
    import time

    import psutil

    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
           "PYTHONPATH": str(ROOT)}
    a = subprocess.Popen([sys.executable, "-m", "snakemake", "--cores", "1", "data/raw/fading"], cwd=repo_copy, env=env,
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    job = None
    try:
        deadline = time.monotonic() + 120
        while job is None and time.monotonic() < deadline and a.poll() is None:
            for child in psutil.Process(a.pid).children(recursive=True):
                try:
                    cmd = child.cmdline()
                except psutil.Error:
                    continue
                if cmd[1:4] == ["-m", "ordclip", "generate"]:
                    job = child
            time.sleep(0.05)
        assert job is not None, "run A's generate job did not start"
        job.send_signal(signal.SIGSTOP)
        for extra in ([], ["--rerun-incomplete"]):
            b = _snakemake(repo_copy, "--cores", "1", "data/raw/fading", *extra)
            out = b.stdout + b.stderr
            assert b.returncode != 0, out
            assert f"ordclip: another Snakemake run holds this folder: pid {a.pid} (started " in out, out
            assert "data/raw/fading" in out and "do not use --rerun-incomplete meanwhile" in out
            assert out.index("another Snakemake run holds") < out.index(
                "IncompleteFilesException" if not extra else "cannot be locked")
        job.send_signal(signal.SIGCONT)
        assert a.wait(timeout=300) == 0
    finally:
        if a.poll() is None:
            os.killpg(a.pid, signal.SIGKILL)
            a.wait()
    b = _snakemake(repo_copy, "-n", "data/raw/fading")
    assert b.returncode == 0 and "another Snakemake run" not in b.stdout + b.stderr
