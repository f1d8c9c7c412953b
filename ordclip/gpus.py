"""Which GPU a local job uses: a slot allocator for runs on one multi-GPU machine.

Snakemake counts GPUs (`--resources gpu=N`) but never says which one a job gets (Snakemake 9.27
has no such mechanism). A job that is to use CUDA calls :func:`claim_gpu` before torch touches
CUDA: it takes the first free slot among the GPUs it may use (K slots per GPU,
``ORDCLIP_RUNS_PER_GPU``, default 1) by locking a file, and sets CUDA_VISIBLE_DEVICES to that GPU
alone. The lock is held until the process exits (a killed job frees its slot with it). The lock
files are per machine and user, so two checkouts on one workstation share the GPUs too, and per
SLURM allocation inside one (SLURM_JOB_ID): a SLURM job's GPUs are its own, numbered from 0 in each
job, so a plugin-submitted job with one GPU simply takes it, and a local Snakemake run inside a
multi-GPU allocation spreads its jobs over the allocation's GPUs. A job that finds every slot
taken waits, saying so once a minute.
"""

from __future__ import annotations

import fcntl
import logging
import os
import subprocess
import tempfile
import time
from pathlib import Path

from ordclip.errors import ConfigError

log = logging.getLogger(__name__)

RUNS_PER_GPU_VAR = "ORDCLIP_RUNS_PER_GPU"
_held: list = []  # open lock files of this process: closing one (at exit) frees its slot


def slot_dir(env: dict | None = None) -> Path:
    """Where the slot locks live: one folder per machine and user (GPUs are the machine's), and per
    SLURM allocation within a SLURM job (its GPUs are its own)."""
    env = os.environ if env is None else env
    job = f"-slurm{env['SLURM_JOB_ID']}" if env.get("SLURM_JOB_ID") else ""
    return Path(tempfile.gettempdir()) / f"ordclip-gpu-slots-{os.getuid()}{job}"


def visible_gpus(env: dict | None = None) -> list[str]:
    """The GPU ids this process may use: CUDA_VISIBLE_DEVICES when set (a user restricting the
    run to some GPUs), else every GPU nvidia-smi lists; [] without either."""
    env = os.environ if env is None else env
    if "CUDA_VISIBLE_DEVICES" in env:
        return [g.strip() for g in env["CUDA_VISIBLE_DEVICES"].split(",") if g.strip()]
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=index", "--format=csv,noheader"], capture_output=True,
                             text=True, timeout=60, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return [line.strip() for line in out.splitlines() if line.strip()]


def runs_per_gpu(env: dict | None = None) -> int:
    env = os.environ if env is None else env
    raw = env.get(RUNS_PER_GPU_VAR, "1")
    try:
        k = int(raw)
    except ValueError:
        k = 0
    if k < 1:
        raise ConfigError(f"environment variable {RUNS_PER_GPU_VAR}={raw!r}: expected a whole number >= 1 "
                          "(how many local jobs may share one GPU)")
    return k


def try_claim(gpus: list[str], per_gpu: int, folder: Path, owner: str) -> str | None:
    """Lock the first free slot (GPUs in order, then slots); return its GPU id, or None if all are taken.
    Slots fill GPU by GPU breadth-first: slot 0 of every GPU before any GPU's slot 1."""
    folder.mkdir(parents=True, exist_ok=True)
    for slot in range(per_gpu):
        for gpu in gpus:
            f = open(folder / f"gpu{gpu}.slot{slot}.lock", "a+")
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                f.close()
                continue
            f.seek(0)
            f.truncate()
            f.write(owner + "\n")
            f.flush()
            _held.append(f)
            return gpu
    return None


def release() -> None:
    """Free every slot this process holds (a process that exits frees them anyway)."""
    while _held:
        _held.pop().close()


def holders(folder: Path) -> str:
    """Who holds the slots (each lock file names its job), for the waiting message."""
    lines = []
    for path in sorted(folder.glob("gpu*.slot*.lock")):
        text = path.read_text().strip()
        if text:
            lines.append(f"{path.stem}: {text}")
    return "; ".join(lines)


def claim_gpu(what: str, env: dict | None = None, folder: Path | None = None, wait_s: float | None = None) -> str | None:
    """Give this job a GPU of its own: set CUDA_VISIBLE_DEVICES to the GPU of a free slot and return
    its id; None (nothing changed) where no GPU is visible. ``what`` names the job in the lock file.
    ``wait_s``: give up after that many seconds (None: wait as long as it takes)."""
    env = os.environ if env is None else env
    gpus = visible_gpus(env)
    if not gpus:
        return None
    per_gpu = runs_per_gpu(env)
    folder = slot_dir(env) if folder is None else folder
    owner = f"pid {os.getpid()} {what}"
    start, last_note = time.time(), None
    while True:
        gpu = try_claim(gpus, per_gpu, folder, owner)
        if gpu is not None:
            env["CUDA_VISIBLE_DEVICES"] = gpu
            log.info(f"{what}: GPU {gpu} (slot lock in {folder})")
            return gpu
        now = time.time()
        if wait_s is not None and now - start >= wait_s:
            raise TimeoutError(f"no free GPU slot among GPUs {','.join(gpus)} x {per_gpu} after {wait_s:.0f} s")
        if last_note is None or now - last_note >= 60:
            log.info(f"{what}: all {len(gpus) * per_gpu} GPU slots are taken ({holders(folder)}); waiting. "
                     f"Snakemake's --resources gpu=N should not exceed the GPUs x {RUNS_PER_GPU_VAR}")
            last_note = now
        time.sleep(2)


# The oldest NVIDIA driver each CUDA major version of torch runs on (NVIDIA's CUDA toolkit release
# notes, table "CUDA Toolkit and minimum required driver version", minor version compatibility).
MIN_DRIVER = {"11": "450.80.02", "12": "525.60.13", "13": "580"}


def driver_version() -> str | None:
    """The NVIDIA kernel driver's version, from /proc/driver/nvidia/version or nvidia-smi; None without one."""
    import re

    try:
        m = re.search(r"Kernel Module\s+(?:for \S+\s+)?([0-9][0-9.]*)", Path("/proc/driver/nvidia/version").read_text())
        if m:
            return m.group(1)
    except OSError:
        pass
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=60, check=True).stdout.split()
    except (OSError, subprocess.SubprocessError):
        return None
    return out[0] if out else None


def no_cuda_message(torch_version: str, torch_cuda: str | None, driver: str | None, visible: str | None) -> str:
    """Why `device: cuda` found no device, with what this torch build needs and what the machine has."""
    if torch_cuda is None:
        return (f"suites.<suite>.device: 'cuda' requested, but torch {torch_version} is a CPU-only build. "
                "Install the environment from requirements.lock (CUDA 13) or requirements-cu12.lock (CUDA 12)")
    need = MIN_DRIVER.get(torch_cuda.split(".")[0])
    have = f"driver {driver}" if driver else "no NVIDIA driver found (no /proc/driver/nvidia/version, no nvidia-smi)"
    msg = (f"suites.<suite>.device: 'cuda' requested, but torch sees no CUDA device. torch {torch_version} is built "
           f"for CUDA {torch_cuda}, which needs an NVIDIA driver {need or '(unknown)'} or newer; this machine has {have}")
    if visible is not None:
        msg += f", CUDA_VISIBLE_DEVICES={visible!r}"
    msg += "."
    if driver and need and _older(driver, need):
        msg += (" The driver is too old for this torch: install the CUDA 12 environment "
                "(make env-cu12, or pip install -r requirements-cu12.lock; README, Environment) or use the container.")
    return msg


def _older(version: str, than: str) -> bool:
    def key(v: str) -> tuple[int, ...]:
        return tuple(int(x) for x in v.split(".") if x.isdigit())

    return key(version) < key(than)
