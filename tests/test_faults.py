"""Fault injection: kills, damaged files and bad input. Each ends in a named error, or in a resume
whose final outputs equal an uninterrupted run's, with nothing finished lost (FAULTS.md)."""

import io
import hashlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tarfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import assert_same_arrays, prepare_fading, run_arrays
from ordclip import layout
from ordclip.config import load_params
from ordclip.data.fetch import download, extract, source_files, unpack
from ordclip.data.prepare import prepare, read_label_table
from ordclip.data.splits import write_split
from ordclip.errors import ConfigError, DataError
from ordclip.evaluate import evaluate
from ordclip.io import atomic_path, checksum_path
from ordclip.jobs import job_config
from ordclip.train import RESUME_FILE, run
from test_pipeline import _snakemake

pytestmark = pytest.mark.faults

SMALL = """
datasets: {fading: {per_rank: 12}}
suites:
  demo:
    backbone: tiny          # the random backbone, as prepare_fading's reference runs (no pretraining)
    datasets: [fading]
    folds: 1
    checkpoint_minutes: 0   # resume.pt after every epoch: these tests kill around each checkpoint write
    overrides:
      ordinalclip: {epochs: 3, batch_size: 8}
"""
RUN = ("demo", "fading", "ordinalclip", 0)
KEYS = dict(zip(("suite", "dataset", "method", "fold"), RUN))

# Runs `python -m ordclip` with SIGKILL sent to itself at a chosen event. Events, counted from the
# start: each training step, each flush of a file or folder by ordclip.io, each os.replace.
# ORDCLIP_KILL_AT=N kills at the N-th event (before it happens); ORDCLIP_KILL_AFTER_RENAME=NAME
# right after the rename that puts NAME in place; ORDCLIP_KILL_AT_FLUSH=PREFIX at the first flush of
# a file whose name starts with PREFIX (checkpoints are written by a background thread, so where
# their events fall among the training steps is not fixed).
KILLER = r"""
import os, signal, sys
from pathlib import Path
import ordclip.io, ordclip.train

kill_at = int(os.environ.get("ORDCLIP_KILL_AT", "0"))
after = os.environ.get("ORDCLIP_KILL_AFTER_RENAME")
flush_of = os.environ.get("ORDCLIP_KILL_AT_FLUSH")
count = 0

def tick():
    global count
    count += 1
    if count == kill_at:
        os.kill(os.getpid(), signal.SIGKILL)

real_replace, real_fsync = os.replace, ordclip.io._fsync

def replace(src, dst, *a, **k):
    tick()
    real_replace(src, dst, *a, **k)
    if after and Path(dst).name == after:
        os.kill(os.getpid(), signal.SIGKILL)

def fsync(path):
    tick()
    if flush_of and Path(path).name.startswith(flush_of):
        os.kill(os.getpid(), signal.SIGKILL)
    real_fsync(path)

os.replace, ordclip.io._fsync = replace, fsync

class Pipeline(ordclip.train.ImagePipeline):
    def __call__(self, images, train, generator=None, view=None):
        if train:
            tick()
        return super().__call__(images, train, generator, view=view)

ordclip.train.ImagePipeline = Pipeline
from ordclip.cli import main
sys.exit(main(sys.argv[1:]))
"""


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    """A workspace with fading generated, prepared (36 px), split and a tiny backbone, and the
    outputs of one uninterrupted ordinalclip run (the reference; its run folder is then removed)."""
    root = tmp_path_factory.mktemp("faults")
    files = prepare_fading(root, SMALL)
    args = [a for f in files for a in ("--params", f)]
    (root / "killer.py").write_text(KILLER)
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        params = load_params(files)
        assert run(job_config(params, "train", **KEYS))
        run_dir = root / layout.run_dir(*RUN)
        reference = run_arrays(run_dir)
        shutil.rmtree(run_dir)
    return root, args, params, reference


def _assert_same(run_dir: Path, reference: dict, epochs: int = 3) -> None:
    log = [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines()]
    assert [h["name"] for h in log] == [f"train epoch {e}" for e in range(1, epochs + 1)]
    assert_same_arrays(run_arrays(run_dir), reference)


def _leftovers(folder: Path) -> list[str]:
    """Temporary files of interrupted writes, and a resume checkpoint, left in a finished run folder."""
    return sorted(p.name for p in folder.iterdir() if p.name.startswith(".") and not p.name.endswith(".sha256")
                  or p.name == RESUME_FILE)


def _train_cmd(root: Path, args: list[str]) -> list[str]:
    return [sys.executable, str(root / "killer.py"), "train", *args, "--suite", "demo", "--dataset", "fading",
            "--method", "ordinalclip", "--fold", "0"]


# ---------------------------------------------------------------- kills during training

@pytest.mark.parametrize("seed", [11, 12])
def test_kill9_at_seeded_random_points_then_resume_equals_uninterrupted(small, seed):
    """SIGKILL at seeded random events (steps, flushes, renames) of successive attempts; the next
    attempt completes, with the reference outputs and no temporary file or checkpoint left."""
    root, args, _, reference = small
    run_dir = root / layout.run_dir(*RUN)
    rng = random.Random(seed)
    points = [rng.randint(1, 48), rng.randint(1, 30), rng.randint(1, 15)]  # a run has about 50 events
    killed = 0
    for point in points:
        proc = subprocess.run(_train_cmd(root, args), cwd=root, env={**os.environ, "ORDCLIP_KILL_AT": str(point)},
                              capture_output=True, text=True, timeout=300)
        assert proc.returncode in (0, -signal.SIGKILL), proc.stderr[-3000:]
        killed += proc.returncode == -signal.SIGKILL
        if proc.returncode == 0:
            break
    assert killed >= 1
    final = subprocess.run(_train_cmd(root, args), cwd=root, capture_output=True, text=True, timeout=300)
    assert final.returncode == 0, final.stderr[-3000:]
    assert "unreadable" not in final.stderr
    _assert_same(run_dir, reference)
    assert (run_dir / "run.json").is_file() and _leftovers(run_dir) == []
    shutil.rmtree(run_dir)


@pytest.mark.parametrize("name", ["run.json", "model.pt", "resume.pt"])
def test_kill9_right_after_an_output_is_renamed_keeps_the_checkpoint(small, name):
    """A kill just after run.json (or model.pt, or a checkpoint) is in place: resume.pt is still
    there (it is deleted only after every output), and the rerun finishes with the reference outputs."""
    root, args, _, reference = small
    run_dir = root / layout.run_dir(*RUN)
    proc = subprocess.run(_train_cmd(root, args), cwd=root, env={**os.environ, "ORDCLIP_KILL_AFTER_RENAME": name},
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-3000:]
    assert (run_dir / RESUME_FILE).is_file()
    again = subprocess.run(_train_cmd(root, args), cwd=root, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "resuming from" in again.stderr
    _assert_same(run_dir, reference)
    assert _leftovers(run_dir) == []
    shutil.rmtree(run_dir)


def test_temporaries_of_a_killed_write_are_removed_at_the_next_start(small):
    """A kill after a temporary file is flushed and before its rename leaves ``.NAME.XXXXXXXX``;
    the next start of the same job removes it."""
    root, args, _, reference = small
    run_dir = root / layout.run_dir(*RUN)
    # killed at the flush of resume.pt's temporary, after the first epoch
    proc = subprocess.run(_train_cmd(root, args), cwd=root, env={**os.environ, "ORDCLIP_KILL_AT_FLUSH": ".resume.pt."},
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == -signal.SIGKILL
    stale = [p.name for p in run_dir.iterdir() if p.name.startswith(".resume.pt.")]
    assert len(stale) == 1, sorted(p.name for p in run_dir.iterdir())
    again = subprocess.run(_train_cmd(root, args), cwd=root, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr[-3000:]
    assert f"removed {run_dir.relative_to(root) / stale[0]}" in again.stderr
    _assert_same(run_dir, reference)
    assert _leftovers(run_dir) == []
    shutil.rmtree(run_dir)


def test_kill9_of_snakemake_then_rerun_equals_uninterrupted(repo_copy, tmp_path_factory):
    """kill -9 of Snakemake and its jobs while a run trains; after --unlock, the rerun with
    --rerun-incomplete resumes the run and ends with the uninterrupted run's outputs and metrics.
    Then a truncated outputs.npz: the next run rebuilds it."""
    longer = SMALL.replace("epochs: 3", "epochs: 12")     # time to kill it after epoch 1, mid-run
    ref = tmp_path_factory.mktemp("reference")
    files = prepare_fading(ref, longer)
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(ref)
        assert run(job_config(load_params(files), "train", **KEYS))
    reference = run_arrays(ref / layout.run_dir(*RUN))
    (repo_copy / "small.yaml").write_text(longer)
    target = layout.run_file(*RUN, "metrics.json")
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    cmd = [sys.executable, "-m", "snakemake", target, "--cores", "1", "--configfile", "small.yaml"]
    proc = subprocess.Popen(cmd, cwd=repo_copy, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    log = repo_copy / layout.log_file("demo", "train", "fading", "ordinalclip", "fold0")
    run_dir = repo_copy / layout.run_dir(*RUN)
    deadline = time.time() + 300
    # resume.pt is written in a background thread after the epoch's line is printed: wait for the
    # file itself (it appears whole, by rename) and kill while the run still has epochs to go
    while not (log.is_file() and "epoch 1/12" in log.read_text() and (run_dir / RESUME_FILE).is_file()):
        assert proc.poll() is None and time.time() < deadline, "the train job did not checkpoint epoch 1"
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert "epoch 12/12" not in log.read_text(), "the run ended before the kill: the test needs more epochs"
    assert (run_dir / RESUME_FILE).is_file() and not (run_dir / "metrics.json").exists()
    assert _snakemake(repo_copy, "--unlock", "--configfile", "small.yaml").returncode == 0
    again = _snakemake(repo_copy, target, "--cores", "1", "--rerun-incomplete", "--configfile", "small.yaml")
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert "resuming from" in log.read_text()
    _assert_same(run_dir, reference, epochs=12)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["val_selected"]["candidate"].startswith("train epoch")

    # a truncated outputs.npz: its size differs from its record, so the same snakemake command
    # retrains the run (ordclip/repair.py) before evaluate reads it
    _damage(run_dir / "outputs.npz", "truncated")
    rebuilt = _snakemake(repo_copy, target, "--cores", "1", "--configfile", "small.yaml")
    assert rebuilt.returncode == 0, rebuilt.stdout[-3000:] + rebuilt.stderr[-3000:]
    assert "outputs.npz (size " in rebuilt.stderr and "the job runs again" in rebuilt.stderr
    _assert_same(run_dir, reference, epochs=12)
    assert json.loads((run_dir / "metrics.json").read_text()) == metrics


# ---------------------------------------------------------------- damaged checkpoints and caches

def _damage(path: Path, how: str) -> None:
    data = path.read_bytes()
    if how == "truncated":
        path.write_bytes(data[: len(data) // 2])
    elif how == "empty":
        path.write_bytes(b"")
    elif how == "random":
        path.write_bytes(np.random.default_rng(0).integers(0, 256, len(data), dtype=np.uint8).tobytes())
    elif how == "flipped":  # one byte of the payload: only the checksum can tell
        i = len(data) - 100
        path.write_bytes(data[:i] + bytes([data[i] ^ 0xFF]) + data[i + 1:])


@pytest.mark.parametrize("how", ["truncated", "empty", "random", "flipped"])
def test_unreadable_resume_checkpoint_is_set_aside_and_training_restarts(small, monkeypatch, capsys, how):
    root, _, params, reference = small
    monkeypatch.chdir(root)
    run_dir = root / layout.run_dir(*RUN)
    assert run(job_config(params, "train", **KEYS), stop_after=1) is False
    _damage(run_dir / RESUME_FILE, how)
    damaged = (run_dir / RESUME_FILE).read_bytes()
    capsys.readouterr()
    assert run(job_config(params, "train", **KEYS))
    err = capsys.readouterr().err
    assert f"{run_dir.relative_to(root) / RESUME_FILE}: " in err and "moved it to" in err and "from scratch" in err
    assert (run_dir / "resume.pt.unreadable").read_bytes() == damaged      # kept for inspection
    _assert_same(run_dir, reference)
    shutil.rmtree(run_dir)


def test_checkpoint_of_another_run_is_not_used_and_kept(small, monkeypatch, capsys):
    from ordclip.train import _load_resume

    root, _, params, _ = small
    monkeypatch.chdir(root)
    run_dir = root / layout.run_dir(*RUN)
    assert run(job_config(params, "train", **KEYS), stop_after=1) is False
    ckpt = _load_resume(run_dir / RESUME_FILE, None)
    assert (ckpt["stage"], ckpt["stage_epoch"], len(ckpt["history"])) == (0, 1, 1)
    other = {**ckpt["identity"], "config_sha256": "0" * 64}
    assert _load_resume(run_dir / RESUME_FILE, other) is None
    assert "is not this run (the run's configuration changed); starting afresh" in capsys.readouterr().err
    assert (run_dir / RESUME_FILE).is_file()
    shutil.rmtree(run_dir)


def test_a_changed_input_discards_the_checkpoint(small, monkeypatch, capsys):
    """A run stopped after an epoch whose split is then corrected starts afresh on the new split,
    saying why, and ends as an uninterrupted run on that split does."""
    root, _, params, _ = small
    monkeypatch.chdir(root)
    job = job_config(params, "train", **KEYS)
    run_dir = root / layout.run_dir(*RUN)
    split = root / layout.split_file("demo", "fading", 0)
    original = split.read_text()
    try:
        assert run(job, stop_after=1) is False
        lines = original.splitlines()
        train = next(i for i, line in enumerate(lines) if line.endswith(",train"))
        val = next(i for i, line in enumerate(lines) if line.endswith(",val"))
        lines[train], lines[val] = lines[train].replace(",train", ",val"), lines[val].replace(",val", ",train")
        split.write_text("\n".join(lines) + "\n")
        capsys.readouterr()
        assert run(job)
        assert "is not this run (its input file(s) changed: split); starting afresh" in capsys.readouterr().err
        resumed = (run_dir / "outputs.npz").read_bytes()
        shutil.rmtree(run_dir)
        assert run(job)
        assert (run_dir / "outputs.npz").read_bytes() == resumed
        assert json.loads((run_dir / "run.json").read_text())["inputs"]["split"]["sha256"] == hashlib.sha256(
            split.read_bytes()).hexdigest()
    finally:
        split.write_text(original)
        shutil.rmtree(run_dir, ignore_errors=True)


@pytest.fixture
def finished(small, tmp_path, monkeypatch):
    """A copy of the small workspace holding one finished run (train + evaluate)."""
    root, _, params, _ = small
    ws = tmp_path / "ws"
    shutil.copytree(root, ws)
    monkeypatch.chdir(ws)
    assert run(job_config(params, "train", **KEYS))
    evaluate(job_config(params, "evaluate", **KEYS))
    return ws, params


def test_truncated_outputs_npz_names_the_file_and_the_rule_that_rebuilds_it(finished):
    ws, params = finished
    outputs = ws / layout.run_file(*RUN, "outputs.npz")
    _damage(outputs, "truncated")
    with pytest.raises(DataError, match=r"outputs.npz: damaged \(has \d+ bytes, \d+ were written by rule 'train'\); "
                                        r"moved to .*outputs.npz.damaged; rerun snakemake: rule 'train' rebuilds it"):
        evaluate(job_config(params, "evaluate", **KEYS))
    assert not outputs.exists() and (ws / layout.run_file(*RUN, "outputs.npz.damaged")).is_file()
    assert (ws / layout.run_file(*RUN, "metrics.json")).is_file()   # the finished results are kept


def test_truncated_outputs_npz_without_a_record_is_a_named_error(finished):
    ws, params = finished
    outputs = ws / layout.run_file(*RUN, "outputs.npz")
    checksum_path(outputs).unlink()          # as written before records existed
    _damage(outputs, "truncated")
    with pytest.raises(DataError, match=r"outputs.npz: cannot be read .*rule 'train' rebuilds it"):
        evaluate(job_config(params, "evaluate", **KEYS))


@pytest.mark.parametrize("how", ["truncated", "flipped"])
def test_damaged_image_cache_names_the_file_and_rule_prepare(finished, how):
    ws, params = finished
    images = ws / layout.prepared_images("fading", 36)
    _damage(images, how)
    shutil.rmtree(ws / layout.run_dir(*RUN))
    with pytest.raises(DataError, match=r"images.npy: damaged .*rule 'prepare' rebuilds it"):
        run(job_config(params, "train", **KEYS))
    assert not images.exists()        # moved aside: Snakemake's next run rebuilds it


# ---------------------------------------------------------------- atomic writes

def test_atomic_path_flushes_file_and_folder_around_the_rename(tmp_path, monkeypatch):
    import ordclip.io

    events = []
    real_fsync, real_replace = ordclip.io._fsync, os.replace
    monkeypatch.setattr(ordclip.io, "_fsync", lambda p: (events.append(("fsync", Path(p).name)), real_fsync(p)))
    monkeypatch.setattr(os, "replace", lambda a, b: (events.append(("replace", Path(b).name)), real_replace(a, b)))
    with atomic_path(tmp_path / "out.json") as tmp:
        tmp.write_text("{}")
    assert [e[0] for e in events] == ["fsync", "replace", "fsync"]
    assert events[0][1].startswith(".out.json.") and events[1][1] == "out.json" and events[2][1] == tmp_path.name


def test_atomic_path_removes_temporaries_of_the_same_output_only(tmp_path):
    stale = tmp_path / ".model.pt.abcd1234.pt"
    other = tmp_path / ".model.pt.bak.abcd1234.pt"     # another file's temporary
    stale.write_bytes(b"half")
    other.write_bytes(b"half")
    with atomic_path(tmp_path / "model.pt") as tmp:
        tmp.write_bytes(b"whole")
    assert not stale.exists() and other.exists() and (tmp_path / "model.pt").read_bytes() == b"whole"


# ---------------------------------------------------------------- bad labels and datasets

def _images(root: Path, n: int, same: bool = False) -> list[str]:
    names = []
    for i in range(n):
        color = (0, 0, 0) if same else (i * 4 % 256, i * 7 % 256, i * 11 % 256)
        Image.new("RGB", (8, 8), color).save(root / f"img{i}.png")
        names.append(f"img{i}.png")
    return names


def test_duplicate_paths_are_an_error_naming_both_lines(tmp_path):
    names = _images(tmp_path, 60)
    rows = [f"{n},{i % 5}" for i, n in enumerate(names)] * 2             # 120 rows for 60 images
    (tmp_path / "labels.csv").write_text("path,label\n" + "\n".join(rows) + "\n")
    with pytest.raises(DataError, match=r"(?s)labels.csv: 60 repeated images.*lines 2 and 62: image 'img0.png' is listed twice .*duplicates: drop"):
        read_label_table(tmp_path / "labels.csv", tmp_path)
    kept, _ = read_label_table(tmp_path / "labels.csv", tmp_path, duplicates="drop")
    assert [r["path"] for r in kept] == names


def test_every_repeated_image_is_in_one_error(tmp_path):
    """60 images listed twice: one error counts all 60 pairs and lists the first 20 by their lines."""
    names = _images(tmp_path, 60)
    rows = [f"{n},{i % 5}" for i, n in enumerate(names)] * 2
    (tmp_path / "labels.csv").write_text("path,label\n" + "\n".join(rows) + "\n")
    with pytest.raises(DataError) as err:
        read_label_table(tmp_path / "labels.csv", tmp_path)
    message = str(err.value)
    assert "labels.csv: 60 repeated images; fix them all and rerun" in message
    assert "lines 2 and 62: image 'img0.png'" in message and "lines 21 and 81: image 'img19.png'" in message
    assert "img20.png" not in message and "... and 40 more" in message and message.endswith("duplicates: drop to keep the first of identical rows")


def test_duplicate_with_a_conflicting_label_fails_even_when_dropping(tmp_path, capsys):
    _images(tmp_path, 3)
    (tmp_path / "labels.csv").write_text("path,label\nimg0.png,1\nimg1.png,2\n./img0.png,3\n")
    with pytest.raises(DataError, match=r"lines 2 and 4: image './img0.png' is listed twice, with different label "
                                        r"\(1 vs 3\)"):
        read_label_table(tmp_path / "labels.csv", tmp_path, duplicates="drop")


def test_dropped_duplicates_are_counted_and_identical_images_reported(tmp_path, capsys):
    _images(tmp_path, 4, same=True)                       # four byte-identical files
    (tmp_path / "labels.csv").write_text("path,label\nimg0.png,1\nimg1.png,2\nimg0.png,1\nimg2.png,3\n")
    prepare(tmp_path / "labels.csv", tmp_path, 8, None, tmp_path / "x.npy", tmp_path / "index.csv", "drop")
    err = capsys.readouterr().err
    assert "dropped 1 repeated row(s)" in err
    assert "2 image(s) are byte-identical" in err and "lines 2 (img0.png) and 3 (img1.png)" in err
    assert len(np.load(tmp_path / "x.npy")) == 3


def test_duplicates_option_is_in_the_schema():
    params = load_params([Path(__file__).resolve().parents[1] / "params.yaml"],
                         {"datasets": {"fading": {"duplicates": "drop"}}})
    assert params["datasets"]["fading"]["duplicates"] == "drop"
    with pytest.raises(ConfigError, match=r"datasets.fading.duplicates: 'keep' is not one of"):
        load_params([Path(__file__).resolve().parents[1] / "params.yaml"], {"datasets": {"fading": {"duplicates": "keep"}}})


def test_labels_not_utf8_name_file_and_line(tmp_path):
    _images(tmp_path, 2)
    (tmp_path / "labels.csv").write_bytes("path,label\nimg0.png,1\nimg1.png,2 # caf\xe9\n".encode("latin-1"))
    with pytest.raises(DataError, match=r"labels.csv line 3: not UTF-8 \(byte 0xe9"):
        read_label_table(tmp_path / "labels.csv", tmp_path)


def _index(tmp_path: Path, counts: dict[int, int]) -> Path:
    rows = [(label, i) for label, n in counts.items() for i in range(n)]
    lines = [f"{i},img{i}.png,{label},{label - min(counts)}" for i, (label, _) in enumerate(rows)]
    (tmp_path / "index.csv").write_text("index,path,label,rank\n" + "\n".join(lines) + "\n")
    return tmp_path / "index.csv"


@pytest.mark.parametrize("counts, problem", [
    ({3: 30}, r"only 1 rank in its train part"),
    ({1: 2, 2: 2, 3: 2}, r"empty (val|test)"),
    ({1: 1, 2: 1}, r"empty (val|test)"),
])
def test_split_refuses_too_small_datasets_with_counts_per_rank(tmp_path, counts, problem):
    cfg = {"protocol": "stratified", "train": 0.6, "val": 0.2, "test": 0.2, "seed": 0}
    with pytest.raises(DataError, match=problem + r".*images per label: " + ", ".join(f"{k}: {v}" for k, v in counts.items())
                       + r".*the 'stratified' protocol needs at least 4 images per rank"):
        write_split(_index(tmp_path, counts), 0, cfg, tmp_path / "fold0.csv")
    assert not (tmp_path / "fold0.csv").exists()


def test_split_accepts_the_smallest_usable_dataset(tmp_path):
    cfg = {"protocol": "stratified", "train": 0.6, "val": 0.2, "test": 0.2, "seed": 0}
    write_split(_index(tmp_path, {1: 4, 2: 4}), 0, cfg, tmp_path / "fold0.csv")
    assert (tmp_path / "fold0.csv").read_text().count("\n") == 1 + 8


# ---------------------------------------------------------------- params files

def test_yaml_syntax_error_names_file_and_line(tmp_path):
    (tmp_path / "bad.yaml").write_text("seed: 1\nsuites:\n  demo: {folds: [1, 2}\n")
    with pytest.raises(ConfigError, match=r"bad.yaml line 3, column \d+: not valid YAML"):
        load_params([tmp_path / "bad.yaml"])


def test_snakemake_names_file_and_line_of_a_yaml_error_in_params_yaml(repo_copy):
    with open(repo_copy / "params.yaml", "a") as f:
        f.write("extra: [1, 2\n")
    proc = _snakemake(repo_copy, "-n")
    assert proc.returncode != 0
    n_lines = (repo_copy / "params.yaml").read_text().count("\n")
    assert f"params.yaml line {n_lines + 1}, column 1: not valid YAML: while parsing a flow sequence (from line " \
           f"{n_lines}" in proc.stdout + proc.stderr


def test_a_name_too_long_for_a_file_name_is_refused_by_the_schema():
    root = Path(__file__).resolve().parents[1]
    params = load_params([root / "params.yaml"])
    long = "m" * 248
    with pytest.raises(ConfigError, match=r"methods: '" + long + "' is too long"):
        load_params([root / "params.yaml"], {"methods": {**params["methods"], long: params["methods"]["coop"]}})


# ---------------------------------------------------------------- archives and placed folders

def test_hard_link_to_a_member_absent_from_the_archive_is_refused(tmp_path):
    with tarfile.open(tmp_path / "a.tar", "w") as tf:
        info = tarfile.TarInfo("imgs/a.jpg")
        info.size = 1
        tf.addfile(info, io.BytesIO(b"A"))
        link = tarfile.TarInfo("imgs/b.jpg")
        link.type, link.linkname = tarfile.LNKTYPE, "imgs/missing.jpg"
        tf.addfile(link)
    with pytest.raises(DataError, match=r"member 'imgs/b.jpg' is a hard link to 'imgs/missing.jpg', which is not"):
        extract(tmp_path / "a.tar", tmp_path / "out")
    assert list((tmp_path / "out").iterdir()) == []


def test_placed_folder_with_a_symlink_leading_outside_is_refused(tmp_path):
    (tmp_path / "secret.jpg").write_bytes(b"S")
    placed = tmp_path / "placed"
    (placed / "imgs").mkdir(parents=True)
    (placed / "imgs/a.jpg").write_bytes(b"A")
    (placed / "imgs/inside.jpg").symlink_to("a.jpg")
    assert source_files(placed) == ["imgs/a.jpg", "imgs/inside.jpg"]        # a link inside is fine
    (placed / "imgs/b.jpg").symlink_to(tmp_path / "secret.jpg")
    for call in (lambda: source_files(placed), lambda: unpack(placed, tmp_path / "out")):
        with pytest.raises(DataError, match=r"'imgs/b.jpg' is a symbolic link to .*secret.jpg', outside the folder"):
            call()
    assert not (tmp_path / "out" / "imgs" / "b.jpg").exists()


# ---------------------------------------------------------------- downloads

class _Flaky(BaseHTTPRequestHandler):
    """Fails the first request of each path with 503, then serves PAYLOAD."""

    PAYLOAD = b"weights" * 1000
    seen: list[str] = []

    def log_message(self, format, *args):  # noqa: A002
        pass

    def do_GET(self):
        _Flaky.seen.append(self.path)
        if _Flaky.seen.count(self.path) == 1:
            self.send_error(503)
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(self.PAYLOAD)))
        self.end_headers()
        self.wfile.write(self.PAYLOAD)


def test_download_retries_a_failed_request_and_cleans_a_killed_download(tmp_path):
    import hashlib

    _Flaky.seen = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Flaky)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/w.pt"
        dest = tmp_path / "dl" / "w.pt"
        left = dest.parent / ".w.pt.download"      # what a killed download leaves
        left.mkdir(parents=True)
        (left / "w.pt").write_bytes(b"half")
        digest = download(url, dest, hashlib.sha256(_Flaky.PAYLOAD).hexdigest())
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
    assert digest == hashlib.sha256(_Flaky.PAYLOAD).hexdigest() and dest.read_bytes() == _Flaky.PAYLOAD
    assert _Flaky.seen == ["/w.pt", "/w.pt"]                    # one failure, one retry
    assert sorted(p.name for p in dest.parent.iterdir()) == ["w.pt"]
