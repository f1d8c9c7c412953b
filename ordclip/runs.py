"""What a run is made of: its task, device, input paths, lineage record and output files."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import numpy as np

from ordclip import layout
from ordclip.config import config_hash
from ordclip.data.splits import read_index
from ordclip.errors import ConfigError
from ordclip.io import sha256_file
from ordclip.methods import METHODS
from ordclip.methods.base import Task


QUANTILE_WORDS = {2: ["low", "high"], 3: ["low", "medium", "high"], 4: ["very low", "low", "high", "very high"],
                  5: ["very low", "low", "medium", "high", "very high"]}


def quantile_starts(labels: np.ndarray, bins: int = 5) -> list[int]:
    """Start labels of (up to) ``bins`` bins holding about equal numbers of images: the lowest
    label, then the labels at the 1/bins, 2/bins, ... quantiles (duplicates merged)."""
    qs = np.quantile(np.asarray(labels), np.arange(1, bins) / bins, method="higher").astype(int)
    return sorted({int(np.min(labels)), *qs.tolist()})


def coarse_bins(dataset_cfg: dict, lo: int, hi: int, names: list[str], labels: np.ndarray) -> dict | None:
    """NumCLIP's coarse bins: ``coarse.starts``/``names`` from the config; a 5-level task defaults
    to its own levels and words, any other task to 5 quantile bins of its labels with generic
    ordinal words ("very low" .. "very high"; our choice). The prompt context defaults to the dataset's."""
    coarse = dict(dataset_cfg.get("coarse") or {})
    coarse.setdefault("context", dataset_cfg["prompt"]["context"])
    if "starts" not in coarse:
        if hi - lo + 1 == 5:
            coarse["starts"], coarse["names"] = list(range(lo, hi + 1)), list(names)
        else:
            coarse["starts"] = quantile_starts(labels)
            if len(coarse["starts"]) < 2:
                return None
            coarse["names"] = QUANTILE_WORDS[len(coarse["starts"])]
    if coarse["starts"][0] > lo:
        raise ConfigError(f"datasets.{dataset_cfg['name']}.coarse.starts: the first bin starts at "
                          f"{coarse['starts'][0]}, above the lowest label {lo}")
    return coarse


def make_task(dataset_cfg: dict, labels: np.ndarray) -> Task:
    """Ranks min..max (configured, or spanned by the labels) with their prompt words."""
    lo, hi = dataset_cfg.get("ranks") or (int(labels.min()), int(labels.max()))
    names = list(dataset_cfg.get("rank_names") or [str(v) for v in range(lo, hi + 1)])
    return Task(num_ranks=hi - lo + 1, rank_names=names, context=dataset_cfg["prompt"]["context"],
                min_label=lo, coarse=coarse_bins(dataset_cfg, lo, hi, names, labels),
                lowest_label=(dataset_cfg.get("dataset_ranks") or [lo])[0])


def task_for(cfg: dict) -> Task:
    bb, ds = cfg["backbone"], cfg["dataset"]
    labels = read_index(layout.prepared_index(ds["data"], bb["resize"]))["label"]
    return make_task(ds, labels)


def inputs(cfg: dict, fold: int) -> dict[str, str]:
    """The input files of a train run."""
    bb, ds = cfg["backbone"], cfg["dataset"]
    paths = {
        "images": layout.prepared_images(ds["data"], bb["resize"]),
        "index": layout.prepared_index(ds["data"], bb["resize"]),
        "split": layout.split_file(cfg["suite"], ds["name"], fold),
        "weights": layout.backbone_weights(bb["name"]),
    }
    if METHODS[cfg["method"]["kind"]]["trains_on"] == "features":
        paths["features"] = layout.features(cfg["suite"], ds["data"])
    return paths


def device_for(name: str, what: str = "ordclip job"):
    """The torch device of a job whose suite says ``device: name`` (auto | cuda | cpu). A local job
    that may use CUDA first claims a GPU of its own (ordclip.gpus.claim_gpu sets CUDA_VISIBLE_DEVICES
    before torch initialises CUDA); ``what`` names the job in the GPU slot lock."""
    import torch

    from ordclip import gpus

    if name in ("auto", "cuda"):
        gpus.claim_gpu(what)
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError(gpus.no_cuda_message(torch.__version__, torch.version.cuda, gpus.driver_version(),
                                               os.environ.get("CUDA_VISIBLE_DEVICES")))
    return torch.device(name)


def git_state(path: str | Path) -> dict:
    """The commit, dirty flag (tracked files changed) and top folder of the git repository holding
    ``path``; all None outside a git repository or without git."""
    try:
        top = subprocess.run(["git", "rev-parse", "--show-toplevel"], cwd=path, capture_output=True, text=True,
                             check=True)
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=path, capture_output=True, text=True, check=True)
        status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=path,
                                capture_output=True, text=True, check=True)
    except (OSError, subprocess.CalledProcessError):
        return {"commit": None, "dirty": None, "root": None}
    return {"commit": commit.stdout.strip(), "dirty": bool(status.stdout.strip()), "root": top.stdout.strip()}


LINEAGE_PACKAGES = ("torch", "torchvision", "open_clip_torch", "numpy", "scikit-learn", "snakemake", "dvc", "ordclip")


def package_versions(names: tuple[str, ...] = LINEAGE_PACKAGES) -> dict[str, str | None]:
    versions: dict[str, str | None] = {}
    for pkg in names:
        try:
            versions[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            versions[pkg] = None
    return versions


JOB_VARIABLES = ("SLURM_JOB_ID", "SLURM_CLUSTER_NAME", "CUDA_VISIBLE_DEVICES")


def job_environment() -> dict[str, str]:
    """Where a run ran: the host, and under SLURM the job id, cluster and the GPUs it was given."""
    return {"host": platform.node(), **{k.lower(): os.environ[k] for k in JOB_VARIABLES if k in os.environ}}


def lineage(cfg: dict, fold: int, input_paths: dict[str, str], output_paths: dict[str, str], device: str,
            seconds: float) -> dict:
    """The run.json record: code, configuration, inputs, final outputs and environment of one run.

    ``git`` is the repository of the ordclip code that ran; ``workdir_git`` the one of the working
    directory (Snakefile, params.yaml) when that is another repository. Files are identified by
    sha256, except the decoded image cache (``images``: its size; index.csv lists its images).
    """
    hashed = {k: {"path": p, "sha256": sha256_file(p)} for k, p in input_paths.items() if k != "images"}
    hashed["images"] = {"path": input_paths["images"], "bytes": os.path.getsize(input_paths["images"])}
    code = git_state(Path(__file__).resolve().parent)
    workdir = git_state(Path.cwd())
    return {
        "suite": cfg["suite"], "dataset": cfg["dataset"]["name"], "method": cfg["method"]["name"],
        "fold": fold, "seed": cfg["seed"], "seed_index": cfg.get("seed_index", 0), "git": code,
        **({"workdir_git": workdir} if workdir["root"] != code["root"] else {}),
        "config": cfg, "config_sha256": config_hash(cfg),
        "inputs": hashed, "outputs": {k: {"path": p, "sha256": sha256_file(p)} for k, p in output_paths.items()},
        "python": sys.version.split()[0], "platform": platform.platform(),
        "versions": package_versions(), "device": device, "job": job_environment(),
        "wall_seconds": round(seconds, 2),
    }
