"""Local GPU assignment (ordclip/gpus.py) with faked GPU ids: each local job gets a GPU of its own,
K jobs per GPU on request, nothing under SLURM; and the no-CUDA error names the driver needed."""

import os
import subprocess
import sys
import textwrap

import pytest

from ordclip import gpus
from ordclip.errors import ConfigError


@pytest.fixture(autouse=True)
def _release():
    yield
    gpus.release()


def test_four_jobs_on_four_gpus_get_four_devices(tmp_path):
    env = {"CUDA_VISIBLE_DEVICES": "0,1,2,3"}
    got = []
    for k in range(4):
        job_env = dict(env)
        assert gpus.claim_gpu(f"job{k}", env=job_env, folder=tmp_path, wait_s=0) is not None
        got.append(job_env["CUDA_VISIBLE_DEVICES"])
    assert got == ["0", "1", "2", "3"]
    with pytest.raises(TimeoutError, match="no free GPU slot among GPUs 0,1,2,3 x 1"):
        gpus.claim_gpu("job4", env=dict(env), folder=tmp_path, wait_s=0)


def test_runs_per_gpu_puts_several_jobs_on_one_gpu_on_purpose(tmp_path):
    env = {"CUDA_VISIBLE_DEVICES": "2,5", "ORDCLIP_RUNS_PER_GPU": "2"}
    got = [gpus.claim_gpu(f"job{k}", env=dict(env), folder=tmp_path, wait_s=0) for k in range(4)]
    assert got == ["2", "5", "2", "5"]  # one job per GPU before any GPU gets a second
    assert gpus.try_claim(["2", "5"], 2, tmp_path, "job4") is None
    assert "gpu2.slot0: job0" in gpus.holders(tmp_path).replace(f"pid {os.getpid()} ", "")


def test_a_slot_is_freed_when_its_job_exits(tmp_path):
    """Separate processes, as Snakemake's jobs are: a claim held by a live process blocks, and the
    slot is free again once that process is gone (killed or finished)."""
    code = textwrap.dedent(f"""
        import os, sys, time
        from ordclip import gpus
        env = {{"CUDA_VISIBLE_DEVICES": "0,1"}}
        print(gpus.claim_gpu(sys.argv[1], env=env, folder=__import__("pathlib").Path({str(tmp_path)!r}), wait_s=0),
              flush=True)
        time.sleep(float(sys.argv[2]))
    """)
    holder = subprocess.Popen([sys.executable, "-c", code, "a", "30"], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "0"
        second = subprocess.run([sys.executable, "-c", code, "b", "0"], capture_output=True, text=True, check=True)
        assert second.stdout.strip() == "1"  # GPU 0 is held by the first job
    finally:
        holder.kill()
        holder.wait()
    third = subprocess.run([sys.executable, "-c", code, "c", "0"], capture_output=True, text=True, check=True)
    assert third.stdout.strip() == "0"  # the killed job's slot is free


def test_slurm_allocations_have_their_own_slots_and_no_gpu_is_left_alone(tmp_path, monkeypatch):
    monkeypatch.setattr(gpus.tempfile, "gettempdir", lambda: str(tmp_path))
    # Two SLURM jobs on one node each see their one GPU as "0": each takes it.
    for job in ("41", "42"):
        env = {"SLURM_JOB_ID": job, "CUDA_VISIBLE_DEVICES": "0"}
        assert gpus.claim_gpu("job", env=env, wait_s=0) == "0" and env["CUDA_VISIBLE_DEVICES"] == "0"
        assert (gpus.slot_dir(env) / "gpu0.slot0.lock").is_file() and f"slurm{job}" in gpus.slot_dir(env).name
    # A local run inside one 4-GPU allocation spreads its jobs over the allocation's GPUs.
    got = [gpus.claim_gpu(f"job{k}", env={"SLURM_JOB_ID": "43", "CUDA_VISIBLE_DEVICES": "0,1,2,3"}, wait_s=0)
           for k in range(4)]
    assert got == ["0", "1", "2", "3"]
    env = {"CUDA_VISIBLE_DEVICES": ""}
    assert gpus.claim_gpu("job", env=env, folder=tmp_path) is None
    assert env == {"CUDA_VISIBLE_DEVICES": ""}


def test_a_restricted_cuda_visible_devices_is_the_pool(tmp_path):
    assert gpus.visible_gpus({"CUDA_VISIBLE_DEVICES": "1, 3"}) == ["1", "3"]
    env = {"CUDA_VISIBLE_DEVICES": "1,3"}
    assert gpus.claim_gpu("job", env=env, folder=tmp_path, wait_s=0) == "1" and env["CUDA_VISIBLE_DEVICES"] == "1"


@pytest.mark.parametrize("value", ["0", "two", "-1"])
def test_bad_runs_per_gpu_names_the_variable(value):
    with pytest.raises(ConfigError, match=f"ORDCLIP_RUNS_PER_GPU='{value}'"):
        gpus.runs_per_gpu({"ORDCLIP_RUNS_PER_GPU": value})


def test_no_cuda_error_names_torch_cuda_and_the_driver_it_needs():
    msg = gpus.no_cuda_message("2.14.1", "13.0", "535.104.05", None)
    assert "torch 2.14.1 is built for CUDA 13.0" in msg and "driver 580 or newer" in msg
    assert "driver 535.104.05" in msg and "requirements-cu12.lock" in msg
    msg = gpus.no_cuda_message("2.14.1", "12.8", "535.104.05", "")
    assert "525.60.13" in msg and "too old" not in msg and "CUDA_VISIBLE_DEVICES=''" in msg
    assert "no NVIDIA driver found" in gpus.no_cuda_message("2.14.1", "13.0", None, None)
    assert "CPU-only build" in gpus.no_cuda_message("2.14.1+cpu", None, None, None)


def test_device_for_cuda_without_a_device_says_why(monkeypatch):
    import torch

    from ordclip.runs import device_for

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")  # no GPU, no slot claim
    with pytest.raises(ConfigError, match=f"built for CUDA {torch.version.cuda}, which needs an NVIDIA driver"):
        device_for("cuda")
