"""The generic training loop for every method, and fitting of the feature-based methods.

A run writes model.pt (the validation-selected weights), outputs.npz (val and test outputs of
every candidate: each epoch, or each C of a linear probe; and each candidate's prototypes, the
per-rank vectors it scores images against), log.jsonl and run.json. Training
checkpoints to resume.pt at the end of an epoch once ``checkpoint_minutes`` (a suite setting,
default 5) have passed since the last checkpoint (with a sha256 of its content; deleted once every
output is in place) and resumes from it; same seed, same result, however often it checkpoints. On SIGTERM or
SIGUSR1 (SLURM preemption, the time limit) it finishes the current step, checkpoints mid-epoch and
raises Preempted; the next call resumes at that step.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import math
import os
import signal
import sys
import threading
import time
from pathlib import Path

import numpy as np
import torch

from ordclip import layout
from ordclip.config import config_hash
from ordclip.data.loader import ImagePipeline, Part, load_fold, to_device
from ordclip.data.splits import read_index, read_split
from ordclip.errors import ConfigError, Preempted
from ordclip.evaluate import select
from ordclip.io import (BackgroundWriter, atomic_path, clean_temporaries, load_numpy, save_torch, sha256_file,
                        write_json, write_text)
from ordclip.methods import METHODS, load
from ordclip.methods.base import Stage, Task
from ordclip.metrics import mode_predictions, selection_score, summarize
from ordclip.models.backbone import compile_towers, create_backbone, tokenizer
from ordclip.optim import RAdam
from ordclip.runs import device_for, inputs, lineage, task_for

log = logging.getLogger(__name__)

OPTIMIZERS = {
    # OrdinalCLIP's RAdam: decoupled weight decay, no step while ρ_t < 5 (ordclip/optim.py)
    "radam": RAdam,
    # torch's RAdam (L2 weight decay in the gradient, un-rectified early steps): a named variant
    "radam_torch": torch.optim.RAdam,
    "adam": torch.optim.Adam,
    "adamw": torch.optim.AdamW,
    "sgd": lambda groups, **kw: torch.optim.SGD(groups, momentum=0.9, **kw),
}


STOP_SIGNALS = (signal.SIGTERM, signal.SIGUSR1)


@contextlib.contextmanager
def stop_requests(signals: tuple[signal.Signals, ...] = STOP_SIGNALS):
    """Record ``signals`` instead of dying of them, for the duration of the block.

    Yields the list of signal numbers received so far; the training loop checks it after each step.
    The previous handlers are restored on exit. Outside the main thread (where Python cannot set
    handlers) nothing is installed and the list stays empty.
    """
    received: list[int] = []
    if threading.current_thread() is not threading.main_thread():
        yield received
        return

    def record(signum, frame):
        received.append(signum)

    previous = {s: signal.signal(s, record) for s in signals}
    try:
        yield received
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


def make_optimizer(stage: Stage, cfg: dict) -> torch.optim.Optimizer:
    """The method's optimizer over the stage's groups with a learning rate > 0; a group's own
    ``weight_decay`` (e.g. L2RCLIP's biases) replaces the method's."""
    groups = [{"params": g.params, "lr": g.lr, "name": g.name,
               **({"weight_decay": g.weight_decay} if g.weight_decay is not None else {})}
              for g in stage.groups if g.lr > 0]
    if not groups:
        raise ConfigError(f"methods.{cfg['name']}.lr: every learning rate of stage {stage.name!r} is 0")
    return OPTIMIZERS[cfg["optimizer"]](groups, weight_decay=cfg["weight_decay"])


def make_scheduler(opt: torch.optim.Optimizer, epochs: int, cfg: dict):
    sched = cfg["scheduler"]
    if sched["name"] == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs)
    if sched["name"] == "multistep":
        return torch.optim.lr_scheduler.MultiStepLR(opt, milestones=sched["milestones"], gamma=sched["gamma"])
    return torch.optim.lr_scheduler.LambdaLR(opt, lambda _: 1.0)


def set_trainable(method: torch.nn.Module, stage: Stage) -> None:
    """Only the parameters of the stage's groups with a learning rate > 0 get gradients."""
    for p in method.parameters():
        p.requires_grad_(False)
    for g in stage.groups:
        for p in g.params:
            p.requires_grad_(g.lr > 0)


def trainable_names(method: torch.nn.Module, stages: list[Stage]) -> list[str]:
    ids = {id(p) for s in stages for g in s.groups if g.lr > 0 for p in g.params}
    return [n for n, p in method.named_parameters() if id(p) in ids]


def trainable_state(method: torch.nn.Module, names: list[str]) -> dict[str, torch.Tensor]:
    params = dict(method.named_parameters())
    return {n: params[n].detach().cpu().clone() for n in names}


def amp_context(device: torch.device, precision: str):
    if device.type == "cuda" and precision in ("auto", "bf16"):
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


@torch.no_grad()
def predict_part(method, part: Part, pipeline: ImagePipeline, amp, batch_size: int = 256) -> dict[str, np.ndarray]:
    """The method's outputs (logits, and value if it regresses) for every image of a part."""
    method.eval()
    with amp:
        state = method.eval_state()
    view = getattr(method, "eval_view", None)
    chunks: dict[str, list] = {}
    for start in range(0, len(part.index), batch_size):
        with amp:
            out = method.predict(pipeline(part.images[start:start + batch_size], train=False, view=view), state)
        for k, v in out.items():
            chunks.setdefault(k, []).append(v.float().cpu())
    return {k: torch.cat(v).numpy() for k, v in chunks.items()}


def _clock(seconds: float) -> str:
    """1h02m03s / 4m05s / 6s."""
    s = int(round(seconds))
    h, m, s = s // 3600, s % 3600 // 60, s % 60
    return f"{h}h{m:02d}m{s:02d}s" if h else f"{m}m{s:02d}s" if m else f"{s}s"


class Progress:
    """Training progress as whole lines (job logs are files, not terminals): one line per epoch from
    the loop, and inside a long epoch a line every ``every`` seconds, each with the steps done, the
    time elapsed and the estimated time left (from this call's own pace)."""

    def __init__(self, name: str, total: int, done: int, every: float = 60.0, file=sys.stderr):
        self.name, self.total, self.done, self.every, self.file = name, total, done, every, file
        self.start_done, self.t0 = done, time.time()
        self.last = self.t0

    def eta(self) -> str:
        pace = (time.time() - self.t0) / max(self.done - self.start_done, 1)
        return _clock(pace * (self.total - self.done)) if self.done > self.start_done else "?"

    def status(self) -> str:
        return (f"step {self.done}/{self.total} elapsed {_clock(time.time() - self.t0)} eta {self.eta()}")

    def update(self, n: int = 1) -> None:
        self.done += n
        now = time.time()
        if now - self.last >= self.every and self.done < self.total:
            self.line(f"{self.name} {self.status()}")

    def line(self, text: str) -> None:
        print(text, file=self.file, flush=True)
        self.last = time.time()


def prototype_labels(unit: str, task: Task, count: int) -> np.ndarray:
    """The label of each of ``count`` prototype rows: ``rank`` r is label min_label + r (the method's
    rank space), NumCLIP's ``bin`` k its start label (coarse.starts)."""
    if unit == "rank":
        labels = task.min_label + np.arange(task.num_ranks)
    elif unit == "bin" and task.coarse is not None:
        labels = np.asarray(task.coarse["starts"])
    else:
        raise ConfigError(f"prototype unit {unit!r}: expected rank, or bin with coarse bins")
    if len(labels) != count:
        raise ConfigError(f"{count} prototypes for {len(labels)} {unit}s ({labels.tolist()[:5]}…)")
    return labels.astype(np.int64)


@torch.no_grad()
def prototypes_of(method) -> np.ndarray:
    """(P, D) the method's prototypes (method.prototypes()) in float32: computed outside autocast
    even when images are scored in bf16 (our choice: bf16 rounding would make ties, which the
    ordinality counts as violations)."""
    method.eval()
    return method.prototypes().float().cpu().numpy()


def _quick_metrics(outputs: dict[str, np.ndarray], y: np.ndarray) -> dict:
    return {mode: summarize(pred, y) for mode, pred in mode_predictions(outputs).items()}


def train_batch(part: Part, pipeline: ImagePipeline, gen: torch.Generator, stage: Stage, order: torch.Tensor,
                perm: torch.Tensor, start: int, batch_size: int, inputs: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """The training batch at ``start`` of the epoch's order: (images augmented for the stage's
    view, or rows of ``inputs``; ranks). ``order`` is the epoch's permutation on the ranks'
    device, ``perm`` the same on the host (the rows of streamed images)."""
    idx = order[start:start + batch_size]
    y = part.ranks[idx]
    if inputs is not None:
        return inputs[idx], y
    rows = idx if part.images.device == idx.device else perm[start:start + batch_size]
    return pipeline(part.images[rows], train=True, generator=gen, view=stage.view), y


def train_step(method, stage: Stage, opt: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor,
               amp) -> dict[str, torch.Tensor]:
    """One optimisation step: the method's loss terms, their weighted sum L = Σ_k w_k · L_k,
    backward, the optimizer's step. Returns the terms, detached, in float32, on the device (the
    host reads nothing: no sync)."""
    with amp:
        terms = method.losses(x, y, stage)
    unknown = set(terms) - set(stage.loss_weights)
    if unknown:
        raise ConfigError(f"loss_weights: no weight for loss term(s) {sorted(unknown)} of stage {stage.name!r}")
    total = sum(stage.loss_weights[k] * v.float() for k, v in terms.items())
    opt.zero_grad(set_to_none=True)
    total.backward()
    opt.step()
    return {k: v.detach().float() for k, v in terms.items()}


def _train_epoch(method, stage, part, pipeline, opt, gen, batch_size, amp, bar, stop: list[int],
                 partial: dict | None = None, inputs: torch.Tensor | None = None
                 ) -> tuple[dict[str, float] | None, dict | None]:
    """One epoch over the train part: (mean loss terms, None) once it is complete.

    ``inputs``: the method's per-image inputs for the stage (stage_inputs), rows of which replace
    the augmented images.

    If a stop was requested (``stop`` non-empty) before the last step, it returns after the current
    step with (None, partial): the epoch's order, next batch start and loss sums, from which a later
    call (``partial=``) continues exactly where this one stopped.
    """
    method.train()
    n = len(part.index)
    if partial is None:
        perm, first, sums = torch.randperm(n, generator=gen), 0, {}
    else:
        perm, first, sums = partial["perm"], partial["next"], dict(partial["sums"])
    order = to_device(perm, part.ranks.device)  # once per epoch; each step slices it on the device
    for start in range(first, n, batch_size):
        x, y = train_batch(part, pipeline, gen, stage, order, perm, start, batch_size, inputs)
        terms = train_step(method, stage, opt, x, y, amp)
        for k, v in terms.items():
            sums[k] = sums.get(k, 0) + v * len(y)
        bar.update(1)
        if stop and start + batch_size < n:
            return None, {"perm": perm, "next": start + batch_size, "sums": {k: v.cpu() for k, v in sums.items()}}
    return {k: float(v) / n for k, v in sums.items()}, None


def _write_outputs(path: Path, names: list[str], parts: dict[str, dict], per_part: dict[str, list[dict]],
                   prototypes: list[np.ndarray], labels: np.ndarray, unit: str) -> None:
    """outputs.npz: candidate names; per part the dataset indices, ranks and stacked outputs; and
    ``prototypes`` (candidates, P, D) with ``prototype_labels`` (P,) and ``prototype_unit``
    (rank | bin), from which evaluate computes the ordinality (ordclip.metrics.prototype_ordinality)."""
    arrays = {"candidates": np.array(names), "prototypes": np.stack(prototypes).astype(np.float32),
              "prototype_labels": labels, "prototype_unit": np.array(unit)}
    for part in ("val", "test"):
        arrays[f"{part}_index"] = parts[part]["index"]
        arrays[f"{part}_y"] = parts[part]["y"]
        for key in per_part[part][0]:
            arrays[f"{part}_{key}"] = np.stack([o[key] for o in per_part[part]]).astype(np.float32)
    with atomic_path(path, checked=True) as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)


def _write_log(path: Path, history: list[dict]) -> None:
    write_text(path, "".join(json.dumps(h, allow_nan=False) + "\n" for h in history))


def run(job: dict, stop_after: int | None = None) -> bool:
    """Train (or fit) one run (ordclip.jobs.job_config "train") and write its files under layout.run_dir.

    ``stop_after``: train at most this many epochs in this call, then return False leaving only
    the resume checkpoint (a time-boxed job); the next call resumes. True once the run is complete.
    """
    from ordclip.jobs import code_hash, code_record

    cfg, fold = job["run"], job["fold"]
    out = Path(layout.run_dir(cfg["suite"], cfg["dataset"]["name"], cfg["method"]["name"], fold, cfg.get("seed_index", 0)))
    out.mkdir(parents=True, exist_ok=True)
    for name in (*layout.RUN_TRAIN_FILES, RESUME_FILE):
        clean_temporaries(out / name)
    t0 = time.time()
    paths = inputs(cfg, fold)
    code = code_record("train", job)
    identity = {"config_sha256": config_hash(cfg), "code_sha256": code_hash("train", job),
                "inputs": {k: sha256_file(p) for k, p in sorted(paths.items())}}
    if METHODS[cfg["method"]["kind"]]["trains_on"] == "features":
        device = "cpu"
        _fit_features(cfg, paths, out)
    else:
        with stop_requests() as stop:
            device = _train_images(cfg, fold, paths, out, stop, stop_after, identity,
                                   60.0 * job["checkpoint_minutes"])
        if device is None:
            return False
    final = {name.split(".")[0]: str(out / name) for name in ("model.pt", "outputs.npz")}
    record = lineage(cfg, fold, paths, final, str(device), time.time() - t0)
    record["code"] = {"sha256": identity["code_sha256"], "files": code}
    write_json(out / "run.json", record)
    (out / RESUME_FILE).unlink(missing_ok=True)  # only now: every output is in place
    return True


def _fit_features(cfg: dict, paths: dict[str, str], out: Path) -> None:
    feats = load_numpy(paths["features"], "embed")
    ranks = read_index(paths["index"])["rank"] + cfg["dataset"].get("rank_offset", 0)
    split = read_split(paths["split"])
    task = task_for(cfg)
    x = feats["image_features"]
    parts = {p: (x[idx], ranks[idx]) for p, idx in split.items()}
    heads, candidates = load(cfg["method"]["kind"]).fit(
        parts, feats["text_features"], float(feats["logit_scale"]), task.num_ranks, cfg["method"])
    select_on = cfg["method"]["select_on"]
    best = select([c["val"] for c in candidates], parts["val"][1], select_on)
    history = [{"candidate": i, "name": c["name"], "val": _quick_metrics(c["val"], parts["val"][1]),
                "test": _quick_metrics(c["test"], parts["test"][1])} for i, c in enumerate(candidates)]
    _write_log(out / "log.jsonl", history)
    fold_parts = {p: {"index": split[p], "y": parts[p][1]} for p in ("val", "test")}
    # prototypes: each candidate's weight rows (zero-shot: the rank prompts' text features ×
    # exp(logit_scale); linear probe: its class weights, 0 for a rank without training images)
    _write_outputs(out / "outputs.npz", [c["name"] for c in candidates], fold_parts,
                   {p: [c[p] for c in candidates] for p in ("val", "test")}, [h["weight"] for h in heads],
                   prototype_labels("rank", task, len(heads[0]["weight"])), "rank")
    state = {k: torch.from_numpy(np.asarray(v, dtype=np.float32)) for k, v in heads[best].items()}
    with atomic_path(out / "model.pt") as tmp:
        save_torch({"format": "ordclip-run/1", "method": cfg["method"], "candidate": candidates[best]["name"],
                    "state": state}, tmp)


def build_method(cfg: dict, device: torch.device, weights: str) -> torch.nn.Module:
    """The run's method module on its backbone, before training."""
    bb, mcfg = cfg["backbone"], cfg["method"]
    backbone = create_backbone(bb, weights)
    return load(mcfg["kind"]).build(backbone, tokenizer(bb), task_for(cfg), mcfg).to(device)


def load_trained(cfg: dict, model_pt: str | Path, weights: str, device: str = "cpu") -> torch.nn.Module:
    """A trained method: its backbone from ``weights`` with the run's trained parameters loaded."""
    method = build_method(cfg, torch.device(device), weights)
    ckpt = torch.load(model_pt, map_location=device, weights_only=True)
    missing, unexpected = method.load_state_dict(ckpt["state"], strict=False)
    if unexpected:
        raise ConfigError(f"{model_pt}: parameters {unexpected[:3]} do not belong to method {cfg['method']['name']}")
    return method.eval()


RESUME_FILE = "resume.pt"
RESUME_MAGIC = b"ordclip-resume/2 sha256="


def _host_copy(obj):
    """``obj`` with every tensor copied to host memory (new storage: the training goes on changing
    the originals in place), containers copied; other values shared."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().to("cpu", copy=True)
    if isinstance(obj, dict):
        return {k: _host_copy(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_host_copy(v) for v in obj)
    return obj


def _save_resume(path: Path, identity: dict, at: tuple[int, int], method, names: list[str], opt, sched,
                 gen: torch.Generator, history: list[dict], best: dict, per_part: dict[str, list[dict]],
                 protos: list[np.ndarray], partial: dict | None = None, writer: BackgroundWriter | None = None) -> None:
    """Write resume.pt atomically: the state from which training continues at stage/epoch ``at``
    (and, with ``partial``, at that step inside the epoch). ``opt``/``sched`` None: a new stage.

    The file is a header line ``ordclip-resume/2 sha256=<hex>`` followed by the torch.save bytes,
    whose sha256 _load_resume checks before it unpickles anything. The state is copied to host
    memory here; with ``writer`` its serialisation, checksum and atomic write run in the
    writer's background thread (the caller must ``writer.wait()`` before relying on the file)."""
    state = {
        "identity": identity, "stage": at[0], "stage_epoch": at[1],
        "model": trainable_state(method, names),
        "optimizer": _host_copy(opt.state_dict()) if opt is not None else None,
        "scheduler": _host_copy(sched.state_dict()) if sched is not None else None, "generator": gen.get_state(),
        "torch_rng": torch.get_rng_state(), "history": list(history), "best": dict(best),
        "outputs": {p: [{k: torch.from_numpy(v) for k, v in o.items()} for o in lst]
                    for p, lst in per_part.items()},
        "prototypes": [torch.from_numpy(p) for p in protos],
        "partial": _host_copy(partial),
    }

    def write() -> None:
        buf = io.BytesIO()
        torch.save(state, buf)
        payload = buf.getvalue()
        with atomic_path(path, size=len(RESUME_MAGIC) + 65 + len(payload)) as tmp:
            with open(tmp, "wb") as f:
                f.write(RESUME_MAGIC + hashlib.sha256(payload).hexdigest().encode() + b"\n")
                f.write(payload)

    if writer is None:
        write()
    else:
        writer.submit(write)


def _set_aside(path: Path, reason: str) -> None:
    """Move an unusable checkpoint to ``<name>.unreadable[.N]`` (kept for inspection) and log why."""
    aside = path.with_name(path.name + ".unreadable")
    n = 1
    while aside.exists():
        aside, n = path.with_name(f"{path.name}.unreadable.{n}"), n + 1
    os.replace(path, aside)
    log.warning(f"{path}: {reason}; moved it to {aside}; training starts from scratch")


def _load_resume(path: Path, identity: dict | None) -> dict | None:
    """The checkpoint at ``path`` if it can be used to resume this run, else None with the reason logged.

    Usable: the header's sha256 matches the bytes that follow, they load with weights_only=True, and
    it was made by the same run: configuration, code and input hashes equal ``identity`` (see
    resume_mismatch). An unreadable or damaged file is moved aside (see _set_aside); one of another
    run is left to be overwritten. ``identity`` None: the integrity checks only."""
    if not path.exists():
        return None
    data = path.read_bytes()
    header, newline, payload = data.partition(b"\n")
    if not header.startswith(RESUME_MAGIC) or not newline:
        _set_aside(path, f"not an ordclip resume checkpoint ({len(data)} bytes, no {RESUME_MAGIC.decode()!r} "
                         "header: truncated, or written by another program)")
        return None
    recorded, actual = header[len(RESUME_MAGIC):].decode("ascii", "replace"), hashlib.sha256(payload).hexdigest()
    if recorded != actual:
        _set_aside(path, f"damaged: its content has sha256 {actual}, the header records {recorded}")
        return None
    try:
        ckpt = torch.load(io.BytesIO(payload), map_location="cpu", weights_only=True)
    except Exception as exc:  # a checksum-valid file torch cannot read (another torch version, say)
        _set_aside(path, f"cannot be loaded by torch ({type(exc).__name__}: {exc})")
        return None
    why = None if identity is None else resume_mismatch(ckpt.get("identity"), identity)
    if why is not None:
        log.info(f"{path} is not this run ({why}); starting afresh")
        return None
    return ckpt


def resume_mismatch(saved: dict | None, identity: dict) -> str | None:
    """Why a resume checkpoint made under ``saved`` (its identity) is not the same run as
    ``identity`` (configuration, code and input hashes), or None when it is."""
    if saved is None:
        return "it records no configuration, code and input hashes (an older format)"
    if saved.get("config_sha256") != identity["config_sha256"]:
        return "the run's configuration changed"
    if saved.get("code_sha256") != identity["code_sha256"]:
        return "the code the run executes changed"
    changed = sorted(k for k in {*saved.get("inputs", {}), *identity["inputs"]}
                     if saved.get("inputs", {}).get(k) != identity["inputs"].get(k))
    if changed:
        return f"its input file(s) changed: {', '.join(changed)}"
    return None


def _train_images(cfg: dict, fold: int, paths: dict[str, str], out: Path, stop: list[int],
                  stop_after: int | None, identity: dict, checkpoint_seconds: float) -> torch.device | None:
    """Train a run on images. resume.pt is written at the end of an epoch once ``checkpoint_seconds``
    have passed since this call started or last wrote it (0: after every epoch), and always before
    leaving early: on a stop signal (mid-epoch too) and after ``stop_after`` epochs. Writing it
    changes no result: the state it saves is only read back by a later call. The state is copied
    to host memory at once and written by a background thread while training goes on; this call
    returns (or raises) only once the last write is complete."""
    writer = BackgroundWriter()
    try:
        return _train_images_writing(cfg, fold, paths, out, stop, stop_after, identity, checkpoint_seconds, writer)
    finally:
        writer.wait()


def _train_images_writing(cfg: dict, fold: int, paths: dict[str, str], out: Path, stop: list[int],
                          stop_after: int | None, identity: dict, checkpoint_seconds: float,
                          writer: BackgroundWriter) -> torch.device | None:
    """_train_images with its checkpoints written by ``writer``."""
    mcfg, bb, ds = cfg["method"], cfg["backbone"], cfg["dataset"]
    device = device_for(cfg["device"], f"train {ds['name']}/{mcfg['name']}/fold{fold}")
    amp = amp_context(device, cfg.get("precision", "auto"))
    torch.manual_seed(cfg["seed"])
    parts = load_fold(paths["images"], paths["index"], paths["split"], device)
    for part in parts.values():  # ranks of the method's rank space (ordclip.config.apply_rank_space)
        part.ranks = part.ranks + ds.get("rank_offset", 0)
    if len(parts["train"].index) == 0 or len(parts["val"].index) == 0:
        raise ConfigError(f"{paths['split']}: fold {fold} has an empty train or val part")
    method = build_method(cfg, device, paths["weights"])
    if cfg.get("compile"):
        if device.type != "cuda":
            raise ConfigError(f"suites.{cfg['suite']}.compile: torch.compile is used for CUDA runs only; this run is "
                              f"on {device} (set compile: false, or device: cuda)")
        compile_towers(method.model.backbone if hasattr(method, "model") else method.backbone)
    pipeline = ImagePipeline(bb["image_size"], bb["normalize"], ds.get("hflip", True), device)
    stages = method.stages()
    names = trainable_names(method, stages)
    gen = torch.Generator().manual_seed(cfg["seed"])

    history: list[dict] = []
    per_part: dict[str, list[dict]] = {"val": [], "test": []}
    protos: list[np.ndarray] = []
    best = {"score": math.inf, "candidate": -1, "state": None}
    start_stage, start_epoch, opt_state, sched_state, partial = 0, 0, None, None, None
    resume_path = out / RESUME_FILE
    ckpt = _load_resume(resume_path, identity)
    if ckpt is not None:
        method.load_state_dict(ckpt["model"], strict=False)
        history, best = ckpt["history"], ckpt["best"]
        per_part = {p: [{k: v.numpy() for k, v in o.items()} for o in lst] for p, lst in ckpt["outputs"].items()}
        protos = [p.numpy() for p in ckpt["prototypes"]]
        start_stage, start_epoch = ckpt["stage"], ckpt["stage_epoch"]
        opt_state, sched_state = ckpt["optimizer"], ckpt["scheduler"]
        gen.set_state(ckpt["generator"])
        torch.set_rng_state(ckpt["torch_rng"])
        partial = ckpt.get("partial")
        at = f", step {partial['next'] // mcfg['batch_size']}" if partial else ""
        log.info(f"resuming from {resume_path}: stage {start_stage}, epoch {start_epoch}{at}")
        del ckpt

    batch_size = mcfg["batch_size"]
    steps = [s.epochs * math.ceil(len(parts["train"].index) / batch_size) for s in stages]
    done = sum(steps[:start_stage]) + start_epoch * math.ceil(len(parts["train"].index) / batch_size)
    done += partial["next"] // batch_size if partial else 0
    bar = Progress(f"{ds['name']}/{mcfg['name']}/fold{fold}", sum(steps), done)
    y_val = parts["val"].ranks.cpu().numpy()
    y_test = parts["test"].ranks.cpu().numpy()
    epochs_this_call = 0
    last_save = time.monotonic()  # resume.pt: at an epoch's end once this long has passed since the last
    for si in range(start_stage, len(stages)):
        stage = stages[si]
        set_trainable(method, stage)
        opt = make_optimizer(stage, mcfg)
        sched = make_scheduler(opt, stage.epochs, mcfg)
        first = start_epoch if si == start_stage else 0
        if si == start_stage and opt_state is not None:
            opt.load_state_dict(opt_state)
            sched.load_state_dict(sched_state)
        stage_inputs = getattr(method, "stage_inputs", None)
        inputs = stage_inputs(stage, parts["train"], pipeline, amp) if stage_inputs is not None else None
        for epoch in range(first, stage.epochs):
            t = time.time()
            lrs = {g["name"]: g["lr"] for g in opt.param_groups}
            losses, partial = _train_epoch(method, stage, parts["train"], pipeline, opt, gen, batch_size, amp, bar,
                                           stop, partial, inputs)
            if partial is not None:
                _save_resume(resume_path, identity, (si, epoch), method, names, opt, sched, gen, history, best,
                             per_part, protos, partial, writer=writer)
                raise Preempted(stop[0], str(resume_path))
            sched.step()
            val = predict_part(method, parts["val"], pipeline, amp)
            test = predict_part(method, parts["test"], pipeline, amp)
            per_part["val"].append(val)
            per_part["test"].append(test)
            protos.append(prototypes_of(method))
            score = selection_score(val, y_val, mcfg["select_on"])
            candidate = len(history)
            if score < best["score"]:
                best = {"score": score, "candidate": candidate, "state": trainable_state(method, names)}
            history.append({
                "candidate": candidate, "name": f"{stage.name} epoch {epoch + 1}", "stage": stage.name,
                "epoch": epoch + 1, "lr": lrs, "loss": losses, "val": _quick_metrics(val, y_val),
                "test": _quick_metrics(test, y_test), "seconds": round(time.time() - t, 3),
            })
            _write_log(out / "log.jsonl", history)
            nxt = (si, epoch + 1) if epoch + 1 < stage.epochs else (si + 1, 0)
            opt_state = None
            epochs_this_call += 1
            saved = time.monotonic() - last_save >= checkpoint_seconds
            if saved:
                _save_resume(resume_path, identity, nxt, method, names, opt if nxt[0] == si else None,
                             sched if nxt[0] == si else None, gen, history, best, per_part, protos, writer=writer)
                last_save = time.monotonic()
            # printed once the epoch's log is in place; a checkpoint due is then still being written by
            # the writer thread (resume.pt appears whole, by rename, when it is done)
            bar.line(f"{stage.name} epoch {epoch + 1}/{stage.epochs} loss "
                     + " ".join(f"{k}={v:.4f}" for k, v in losses.items())
                     + f" val {mcfg['select_on']}={abs(score):.3f} epoch {_clock(time.time() - t)} {bar.status()}")
            # leaving early (one look at the signals: a later one is handled at the next step) always checkpoints
            stopping = bool(stop)
            leaving = nxt[0] < len(stages) and (stopping or (stop_after is not None and epochs_this_call >= stop_after))
            if leaving and not saved:
                _save_resume(resume_path, identity, nxt, method, names, opt if nxt[0] == si else None,
                             sched if nxt[0] == si else None, gen, history, best, per_part, protos, writer=writer)
            if leaving:
                if stopping:
                    raise Preempted(stop[0], str(resume_path))
                return None
    _write_log(out / "log.jsonl", history)  # again: a run resumed after its last epoch has no log yet
    fold_parts = {p: {"index": parts[p].index, "y": parts[p].ranks.cpu().numpy()} for p in ("val", "test")}
    unit = method.prototype_unit
    _write_outputs(out / "outputs.npz", [h["name"] for h in history], fold_parts, per_part, protos,
                   prototype_labels(unit, task_for(cfg), len(protos[0])), unit)
    with atomic_path(out / "model.pt") as tmp:
        save_torch({"format": "ordclip-run/1", "method": mcfg, "candidate": history[best["candidate"]]["name"],
                    "state": best["state"]}, tmp)
    return device
