"""Split protocols: which images of a dataset are train / val / test in each fold."""

from __future__ import annotations

import csv
import random
from pathlib import Path
from typing import Callable

import numpy as np

from ordclip.io import atomic_path


def stratified(ranks: np.ndarray, fold: int, seed: int, cfg: dict) -> np.ndarray:
    """A random split per rank with the configured fractions; fold k draws with seed (seed, k)."""
    rng = np.random.default_rng([seed, fold])
    out = np.full(len(ranks), "", dtype=object)
    for r in np.unique(ranks):
        idx = rng.permutation(np.flatnonzero(ranks == r))
        n_train, n_val = round(cfg["train"] * len(idx)), round(cfg["val"] * len(idx))
        n_test = min(round(cfg["test"] * len(idx)), len(idx) - n_train - n_val)
        out[idx[:n_train]] = "train"
        out[idx[n_train:n_train + n_val]] = "val"
        out[idx[n_train + n_val:n_train + n_val + n_test]] = "test"
    return out


PROTOCOLS: dict[str, Callable[[np.ndarray, int, int, dict], np.ndarray]] = {"stratified": stratified}


def read_index(index_csv: str | Path) -> dict[str, np.ndarray]:
    with open(index_csv, newline="") as f:
        rows = list(csv.DictReader(f))
    return {
        "index": np.array([int(r["index"]) for r in rows]),
        "path": np.array([r["path"] for r in rows], dtype=object),
        "label": np.array([int(r["label"]) for r in rows]),
        "rank": np.array([int(r["rank"]) for r in rows]),
    }


def fewshot(split: np.ndarray, ranks: np.ndarray, shots: int, seed: int) -> np.ndarray:
    """Keep ``shots`` train images per rank, drawn as OrdinalCLIP's ``generate_fewshot_dataset``
    does: per label present in train (ascending), ``random.sample`` of that label's images under the
    run seed; a label with fewer images keeps them all. Val and test are unchanged."""
    rng = random.Random(seed)
    out = split.copy()
    for r in np.unique(ranks[split == "train"]):
        members = np.flatnonzero((split == "train") & (ranks == r)).tolist()
        if len(members) > shots:
            keep = set(rng.sample(members, shots))
            out[[i for i in members if i not in keep]] = ""
    return out


def write_split(index_csv: str | Path, fold: int, cfg: dict, out: str | Path) -> None:
    """Write ``index,split`` for every image the fold uses."""
    ranks = read_index(index_csv)["rank"]
    split = PROTOCOLS[cfg["protocol"]](ranks, fold, cfg["seed"], cfg)
    if "shots" in cfg:
        split = fewshot(split, ranks, cfg["shots"], cfg["seed"])
    with atomic_path(out) as tmp:
        with open(tmp, "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["index", "split"])
            writer.writerows((i, s) for i, s in enumerate(split) if s)


def read_split(split_csv: str | Path) -> dict[str, np.ndarray]:
    """Image indices of each part ('train', 'val', 'test') of a fold."""
    with open(split_csv, newline="") as f:
        rows = list(csv.DictReader(f))
    return {part: np.array([int(r["index"]) for r in rows if r["split"] == part], dtype=np.int64)
            for part in ("train", "val", "test")}
