"""Split protocols: which images of a dataset are train / val / test in each fold.

- ``stratified``: per rank, the configured fractions at random; fold k draws with seed (seed, k).
- ``per_class``: per rank, fixed counts at random (e.g. HCI: 210/5/50 per decade, 10 splits).
- ``given``: the dataset's own assignment, carried from its labels into index.csv: a ``fold``
  column (fold k tests on the images of fold k, trains on the others) or ``split<k>`` columns
  (train/val/test per image). Where the source has no val part, a ``val`` fraction per rank is
  moved from train to val with seed (seed, k).
"""

from __future__ import annotations

import csv
import random
from pathlib import Path
from typing import Callable

import numpy as np

from ordclip.data.prepare import protocol_columns
from ordclip.errors import DataError
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


def per_class(ranks: np.ndarray, fold: int, seed: int, cfg: dict) -> np.ndarray:
    """``cfg['train']``, ``['val']``, ``['test']`` images of every rank at random (the rest unused);
    fold k draws with seed (seed, k). A rank with too few images fails."""
    counts = [cfg["train"], cfg["val"], cfg["test"]]
    rng = np.random.default_rng([seed, fold])
    out = np.full(len(ranks), "", dtype=object)
    for r in np.unique(ranks):
        idx = rng.permutation(np.flatnonzero(ranks == r))
        if len(idx) < sum(counts):
            raise DataError(f"rank {r} has {len(idx)} images; the per_class split needs "
                            f"{'+'.join(map(str, counts))} = {sum(counts)}")
        start = 0
        for part, n in zip(("train", "val", "test"), counts):
            out[idx[start:start + n]] = part
            start += n
    return out


def kfold(ranks: np.ndarray, fold: int, seed: int, cfg: dict) -> np.ndarray:
    """Stratified K-fold cross-validation: each rank's images, permuted once with the seed, are cut
    into ``cfg['folds']`` near-equal parts; fold k tests on part k. Of the other parts,
    ``round(cfg['val'] * n)`` of the rank's n images go to val (drawn with seed (seed, k)), the
    rest to train."""
    n_folds = cfg["folds"]
    if not 0 <= fold < n_folds:
        raise DataError(f"fold {fold} is outside 0..{n_folds - 1}")
    order, pick = np.random.default_rng(seed), np.random.default_rng([seed, fold])
    out = np.full(len(ranks), "", dtype=object)
    for r in np.unique(ranks):
        parts = np.array_split(order.permutation(np.flatnonzero(ranks == r)), n_folds)
        rest = pick.permutation(np.concatenate([p for k, p in enumerate(parts) if k != fold]))
        n_val = round(cfg["val"] * sum(len(p) for p in parts))
        out[parts[fold]] = "test"
        out[rest[:n_val]] = "val"
        out[rest[n_val:]] = "train"
    return out


def carve_val(split: np.ndarray, ranks: np.ndarray, fraction: float, rng: np.random.Generator) -> np.ndarray:
    """Move ``round(fraction * n)`` of each rank's n train images to val (at random)."""
    out = split.copy()
    for r in np.unique(ranks):
        idx = rng.permutation(np.flatnonzero((split == "train") & (ranks == r)))
        out[idx[:round(fraction * len(idx))]] = "val"
    return out


def given(index: dict[str, np.ndarray], fold: int, seed: int, cfg: dict) -> np.ndarray:
    """The dataset's own fold ``fold``: its ``split<fold>`` column, or test = ``fold`` column == k
    and train = the other folds; then ``cfg['val']`` of train per rank to val where the source
    has no val part."""
    n_folds = cfg.get("folds")
    splits = [c for c in index if c.startswith("split")]
    if splits:
        if n_folds is not None and len(splits) != n_folds:
            raise DataError(f"the dataset gives {len(splits)} folds ({', '.join(splits)}); "
                            f"split.folds is {n_folds}")
        if f"split{fold}" not in index:
            raise DataError(f"no column split{fold} for fold {fold} (columns: {', '.join(splits)})")
        split = index[f"split{fold}"].astype(object)
    elif "fold" in index:
        present = sorted(set(index["fold"].tolist()))
        if n_folds is not None and present != list(range(n_folds)):
            raise DataError(f"the fold column holds folds {present}; split.folds is {n_folds} "
                            f"(folds 0..{n_folds - 1} expected)")
        if fold not in present:
            raise DataError(f"no image is in fold {fold} (folds present: {present})")
        split = np.where(index["fold"] == fold, "test", "train").astype(object)
    else:
        raise DataError("protocol 'given' needs the dataset's own folds: a 'fold' column or "
                        "'split0', 'split1', ... columns in its labels; there are none")
    if cfg.get("val", 0) > 0 and not (split == "val").any():
        split = carve_val(split, index["rank"], cfg["val"], np.random.default_rng([seed, fold]))
    return split


# Each protocol: (index columns, fold, seed, split config) -> the part of each image ("" = unused).
PROTOCOLS: dict[str, Callable[[dict[str, np.ndarray], int, int, dict], np.ndarray]] = {
    "stratified": lambda index, fold, seed, cfg: stratified(index["rank"], fold, seed, cfg),
    "per_class": lambda index, fold, seed, cfg: per_class(index["rank"], fold, seed, cfg),
    "kfold": lambda index, fold, seed, cfg: kfold(index["rank"], fold, seed, cfg),
    "given": given,
}


def _read_csv(path: Path, required: list[str], what: str) -> tuple[list[dict], list[str]]:
    if not path.is_file():
        raise DataError(f"{path}: {what} not found")
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        fields = list(reader.fieldnames or [])
        missing = [c for c in required if c not in fields]
        if missing:
            raise DataError(f"{path}: missing column(s) {missing} ({what}; header {fields})")
        return list(reader), fields


def read_index(index_csv: str | Path) -> dict[str, np.ndarray]:
    """Columns of a prepared ``index.csv``: index, path, label, rank and the protocol columns."""
    index_csv = Path(index_csv)
    rows, fields = _read_csv(index_csv, ["index", "path", "label", "rank"], "prepared index")
    out: dict[str, np.ndarray] = {"path": np.array([r["path"] for r in rows], dtype=object)}
    for line, row in enumerate(rows, start=2):
        for column in ("index", "label", "rank", *(["fold"] if "fold" in fields else [])):
            if not (row[column] or "").lstrip("-").isdigit():
                raise DataError(f"{index_csv} line {line}: {column} {row[column]!r} is not an integer")
    for column in ("index", "label", "rank", *(["fold"] if "fold" in fields else [])):
        out[column] = np.array([int(r[column]) for r in rows], dtype=np.int64)
    for column in protocol_columns(fields):
        if column != "fold":
            out[column] = np.array([r[column] for r in rows], dtype=object)
    if not np.array_equal(out["index"], np.arange(len(rows))):
        raise DataError(f"{index_csv}: the index column must count 0, 1, 2, ... in order")
    return out


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


def distribution_shift(split: np.ndarray, ranks: np.ndarray, top_classes: int, keep_percent: int,
                       seed: int) -> np.ndarray:
    """Thin the train part as OrdinalCLIP's ``generate_distribution_shifted_dataset`` does
    (ordinalclip/runner/data.py:176-213 at ca10a20): order the ranks present in train by their number
    of train images, most first, and keep ``max(int(n * keep_percent / 100), 1)`` of the n images of
    each of the first ``top_classes`` (``random.sample`` under the run seed); the other ranks, val
    and test are unchanged. Ties in the count keep the official code's order, the order in which the
    ranks first appear in the train list: here ascending rank (our choice, our lists have no order).
    ``split`` is the base fold's, whose protocol may have carved val out of the train list already
    (``given`` with ``val``): the ranking and n then count the rest, and val keeps the unthinned
    distribution, as the official val list (its test list) does; every variant keeps the base
    fold's val and test (our choice: one selection and test set for all shifts)."""
    rng = random.Random(seed)
    out = split.copy()
    train_ranks, counts = np.unique(ranks[split == "train"], return_counts=True)
    order = sorted(range(len(train_ranks)), key=lambda i: -counts[i])  # stable: ties stay ascending
    for i in order[:top_classes]:
        members = np.flatnonzero((split == "train") & (ranks == train_ranks[i])).tolist()
        # keep_percent / 100 is the float the official scale_factor (0.1, 0.2) is, so int() cuts the same
        keep = set(rng.sample(members, max(int(len(members) * (keep_percent / 100)), 1)))
        out[[m for m in members if m not in keep]] = ""
    return out


def smallest_rank_size(fold: int, cfg: dict, limit: int = 1000) -> int | None:
    """The fewest images a rank needs for the protocol to give it at least one train, val and test
    image (None for 'given', which depends on the dataset's own columns, or beyond ``limit``)."""
    if cfg["protocol"] == "given":
        return None
    for n in range(1, limit + 1):
        try:
            split = PROTOCOLS[cfg["protocol"]]({"rank": np.zeros(n, dtype=np.int64)}, fold, cfg["seed"], cfg)
        except DataError:
            continue
        if all((split == part).any() for part in ("train", "val", "test")):
            return n
    return None


def check_usable(split: np.ndarray, index: dict[str, np.ndarray], fold: int, cfg: dict, index_csv: Path) -> None:
    """Refuse a fold that cannot be trained and evaluated: fewer than two ranks in train, or an empty
    train, val or test part. The error gives the images per rank and the smallest rank size the
    protocol needs."""
    ranks = index["rank"]
    train_ranks = np.unique(ranks[split == "train"])
    empty = [part for part in ("train", "val", "test") if not (split == part).any()]
    if not empty and len(train_ranks) >= 2:
        return
    labels, counts = np.unique(index["label"], return_counts=True)
    per_rank = ", ".join(f"{int(label)}: {int(c)}" for label, c in zip(labels, counts))
    need = smallest_rank_size(fold, cfg)
    problem = (f"empty {' and '.join(empty)} part{'s' if len(empty) > 1 else ''}" if empty
               else f"only {len(train_ranks)} rank in its train part (ordinal regression needs at least 2)")
    hint = (f"the {cfg['protocol']!r} protocol needs at least {need} images per rank (and at least 2 ranks)"
            if need is not None else "the dataset's own split columns must give every part images of at least 2 ranks")
    raise DataError(f"{index_csv}: split protocol {cfg['protocol']!r}, fold {fold}: {problem}; images per label: "
                    f"{per_rank} ({len(labels)} label{'s' if len(labels) != 1 else ''}); {hint}; add images or "
                    f"change datasets.<name>.split")


def fold_problems(counts: dict[int, int], cfg: dict) -> dict[int, str]:
    """The folds of protocol ``cfg`` (with its ``folds`` and ``seed``) that check_usable would
    refuse on a dataset with ``counts[label]`` images per label, each with the reason, found
    without the images: a rank's part sizes depend on its number of images only. Empty for 'given'
    (its folds come from the dataset's own columns)."""
    if cfg["protocol"] == "given" or not counts:
        return {}
    by_size: dict[int, list[int]] = {}
    for label, n in counts.items():
        by_size.setdefault(n, []).append(label)
    problems = {}
    for fold in range(cfg["folds"]):
        totals, ranks_in_train, short = {"train": 0, "val": 0, "test": 0}, 0, []
        for n, labels in by_size.items():
            try:
                split = PROTOCOLS[cfg["protocol"]]({"rank": np.zeros(n, dtype=np.int64)}, fold, cfg["seed"], cfg)
            except DataError as exc:
                short.append(f"label {min(labels)} has {n} images, too few ({str(exc).split('; ', 1)[-1]})")
                continue
            for part in totals:
                totals[part] += int((split == part).sum()) * len(labels)
            ranks_in_train += len(labels) if (split == "train").any() else 0
        empty = [part for part, total in totals.items() if total == 0]
        if short:
            problems[fold] = short[0]
        elif empty:
            problems[fold] = f"empty {' and '.join(empty)} part{'s' if len(empty) > 1 else ''}"
        elif ranks_in_train < 2:
            problems[fold] = f"only {ranks_in_train} rank in its train part (ordinal regression needs at least 2)"
    return problems


def write_split(index_csv: str | Path, fold: int, cfg: dict, out: str | Path) -> None:
    """Write ``index,split`` for every image the fold uses."""
    index = read_index(index_csv)
    try:
        split = PROTOCOLS[cfg["protocol"]](index, fold, cfg["seed"], cfg)
    except DataError as exc:
        raise DataError(f"{index_csv}: split protocol {cfg['protocol']!r}, fold {fold}: {exc}") from None
    if "shots" in cfg:
        split = fewshot(split, index["rank"], cfg["shots"], cfg["seed"])
    if "shift" in cfg:
        split = distribution_shift(split, index["rank"], cfg["shift"]["top_classes"], cfg["shift"]["keep_percent"],
                                   cfg["seed"])
    check_usable(split, index, fold, cfg, Path(index_csv))
    with atomic_path(out) as tmp:
        with open(tmp, "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["index", "split"])
            writer.writerows((i, s) for i, s in enumerate(split) if s)


def read_split(split_csv: str | Path) -> dict[str, np.ndarray]:
    """Image indices of each part ('train', 'val', 'test') of a fold."""
    split_csv = Path(split_csv)
    rows, _ = _read_csv(split_csv, ["index", "split"], "fold split file")
    for line, row in enumerate(rows, start=2):
        if not (row["index"] or "").isdigit():
            raise DataError(f"{split_csv} line {line}: index {row['index']!r} is not an image index")
        if row["split"] not in ("train", "val", "test"):
            raise DataError(f"{split_csv} line {line}: split {row['split']!r} is not train, val or test")
    return {part: np.array([int(r["index"]) for r in rows if r["split"] == part], dtype=np.int64)
            for part in ("train", "val", "test")}
