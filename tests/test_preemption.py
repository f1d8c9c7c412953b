"""Preemption: SIGTERM/SIGUSR1 during training save a checkpoint and exit; the rerun resumes exactly."""

import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

import ordclip.train
from conftest import prepare_fading
from ordclip import layout
from ordclip.config import load_params
from ordclip.errors import Preempted
from ordclip.jobs import job_config
from ordclip.train import run

SMALL = """
datasets: {fading: {per_rank: 12}}
suites:
  demo:
    datasets: [fading]
    folds: 1
    overrides:
      ordinalclip: {epochs: 4, batch_size: 8}
"""
RUN = ("demo", "fading", "ordinalclip", 0)


def _job(params):
    return job_config(params, "train", **dict(zip(("suite", "dataset", "method", "fold"), RUN)))


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    """A working directory with fading generated, prepared and split, a tiny backbone, and the
    outputs of one uninterrupted ordinalclip run (the reference), whose run folder is then removed."""
    root = tmp_path_factory.mktemp("preempt")
    files = prepare_fading(root, SMALL)
    args = [a for f in files for a in ("--params", f)]
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        params = load_params(files)
        assert run(_job(params))
        run_dir = root / layout.run_dir(*RUN)
        reference = _results(run_dir)
        shutil.rmtree(run_dir)
    return root, args, params, reference


def _results(run_dir):
    with np.load(run_dir / "outputs.npz") as npz:
        outputs = {k: npz[k] for k in npz.files}
    return outputs, torch.load(run_dir / "model.pt", weights_only=True)["state"]


def _assert_same(results, reference):
    (outputs, state), (ref_outputs, ref_state) = results, reference
    assert outputs.keys() == ref_outputs.keys() and state.keys() == ref_state.keys()
    for key in ref_outputs:
        np.testing.assert_array_equal(outputs[key], ref_outputs[key], err_msg=key)
    assert all(torch.equal(state[k], ref_state[k]) for k in state)


class SignalAtStep(ordclip.train.ImagePipeline):
    """The training pipeline, sending this process ``signum`` when it prepares training batch ``at``."""

    signum, at, calls = signal.SIGUSR1, 0, 0

    def __call__(self, images, train, generator=None, view=None):
        if train:
            SignalAtStep.calls += 1
            if SignalAtStep.calls == SignalAtStep.at:
                os.kill(os.getpid(), SignalAtStep.signum)
        return super().__call__(images, train, generator, view=view)


@pytest.mark.parametrize("signum", [signal.SIGUSR1, signal.SIGTERM])
def test_signal_mid_epoch_checkpoints_and_resumes_exactly(small, monkeypatch, signum):
    root, _, params, reference = small
    monkeypatch.chdir(root)
    run_dir = root / layout.run_dir(*RUN)
    monkeypatch.setattr(ordclip.train, "ImagePipeline", SignalAtStep)
    # 36 training images in batches of 8: 5 steps per epoch; step 7 is the 2nd of epoch 2.
    monkeypatch.setattr(SignalAtStep, "signum", signum)
    monkeypatch.setattr(SignalAtStep, "at", 7)
    monkeypatch.setattr(SignalAtStep, "calls", 0)
    before = signal.getsignal(signum)
    with pytest.raises(Preempted) as stopped:
        run(_job(params))
    assert stopped.value.signum == signum and stopped.value.exit_code == 128 + signum
    assert signal.getsignal(signum) is before  # the previous handler is back
    ckpt = ordclip.train._load_resume(run_dir / "resume.pt", None)
    assert (ckpt["stage"], ckpt["stage_epoch"], ckpt["partial"]["next"]) == (0, 1, 16)
    assert len(ckpt["history"]) == 1 and not (run_dir / "model.pt").exists()

    monkeypatch.setattr(SignalAtStep, "at", 0)
    assert run(_job(params))
    assert SignalAtStep.calls == 4 * 5  # 7 steps, then the other 13: none repeated, none skipped
    _assert_same(_results(run_dir), reference)
    assert not (run_dir / "resume.pt").exists()
    shutil.rmtree(run_dir)


def test_sigterm_stops_the_cli_with_a_checkpoint_and_the_rerun_matches(small):
    """A real `python -m ordclip train` gets SIGTERM once its first epoch is logged: it exits 143
    (128 + SIGTERM) leaving resume.pt; running the same command again completes the run, with the
    outputs of an uninterrupted run."""
    root, args, _, reference = small
    run_dir = root / layout.run_dir(*RUN)
    cmd = [sys.executable, "-m", "ordclip", "train", *args, "--suite", "demo", "--dataset", "fading",
           "--method", "ordinalclip", "--fold", "0"]
    proc = subprocess.Popen(cmd, cwd=root, stderr=subprocess.PIPE, text=True)
    seen, deadline = [], time.time() + 120
    for line in proc.stderr:
        seen.append(line)
        if "epoch 1/4" in line:
            proc.send_signal(signal.SIGTERM)
            break
        assert time.time() < deadline, "".join(seen)
    rest = proc.communicate(timeout=120)[1]
    assert proc.returncode == 128 + signal.SIGTERM, "".join(seen) + rest
    assert "stopped by SIGTERM" in rest and "resume.pt" in rest
    assert (run_dir / "resume.pt").exists() and not (run_dir / "model.pt").exists()

    again = subprocess.run(cmd, cwd=root, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr
    assert "resuming from" in again.stderr
    _assert_same(_results(run_dir), reference)
    shutil.rmtree(run_dir)


def test_checkpoints_by_time_not_by_epoch(small, monkeypatch):
    """resume.pt is written once checkpoint_minutes have passed (default 5: never in a run of
    seconds), after every epoch with 0, and always when leaving early; the outputs are the same."""
    root, files, params, reference = small
    monkeypatch.chdir(root)
    run_dir = root / layout.run_dir(*RUN)
    saves = []
    save = ordclip.train._save_resume
    monkeypatch.setattr(ordclip.train, "_save_resume", lambda path, ident, at, *a, **k: (saves.append(at),
                                                                                          save(path, ident, at, *a, **k)))
    assert _job(params)["checkpoint_minutes"] == 5.0
    assert run(_job(params)) and saves == []
    _assert_same(_results(run_dir), reference)
    shutil.rmtree(run_dir)

    assert not run(_job(params), stop_after=2) and saves == [(0, 2)]   # leaving early: always
    assert run(_job(params)) and saves == [(0, 2)]
    _assert_same(_results(run_dir), reference)
    shutil.rmtree(run_dir)

    every = dict(params, suites={**params["suites"], "demo": {**params["suites"]["demo"], "checkpoint_minutes": 0}})
    saves.clear()
    assert run(_job(every)) and saves == [(0, 1), (0, 2), (0, 3), (1, 0)]
    _assert_same(_results(run_dir), reference)
    shutil.rmtree(run_dir)
