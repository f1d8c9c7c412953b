"""The report figures of a cell (one dataset × method), from its folds' run files.

Test predictions (predictions.csv) are pooled over the folds; the prediction mode of each figure is
the one the table reports (metrics.json ``report``: ``mae`` for MAE, ``acc`` for the hard-rank
metrics). Training curves come from each fold's log.jsonl. The prototype similarity matrix is the
first fold's (outputs.npz, its val-selected candidate). Figures are drawn with matplotlib's Agg
canvas (no display, no global pyplot state) and written atomically.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from ordclip import layout
from ordclip.errors import DataError
from ordclip.io import atomic_path, verified_input
from ordclip.metrics import cosine_similarity

FIGSIZE, DPI = (5.0, 4.0), 100
MAX_TICKS = 15


@dataclass
class CellRuns:
    """A cell's folds, pooled: true and predicted test ranks, the rank names, the training logs."""

    title: str
    y: np.ndarray
    pred: dict[str, np.ndarray]
    fold: np.ndarray
    report: dict[str, str]
    rank_labels: list[str]
    logs: list[list[dict]]
    selected: list[int]
    select_on: str
    prototypes: "CellPrototypes"
    names: list[str]  # each run's folder name (fold<k>, or fold<k>-seed<j> with several seeds)

    @property
    def word(self) -> str:
        """What the runs are called in titles: folds (one seed per fold), else runs."""
        return "folds" if all("-seed" not in n for n in self.names) else "runs"

    @property
    def num_ranks(self) -> int:
        return len(self.rank_labels)


@dataclass
class CellPrototypes:
    """The first fold's val-selected prototypes that its ordinality counts, with their tick labels,
    and each fold's ordinality (metrics.json)."""

    fold: int
    vectors: np.ndarray
    labels: list[str]
    unit: str
    ordinality: list[float | None]


def load_prototypes(cfg: dict, fold: int, index: int, ordinality: list[float | None], seed: int = 0) -> CellPrototypes:
    """Fold ``fold``'s prototypes of candidate ``index`` (outputs.npz), those the ordinality counts
    (ordclip.evaluate.ordinality_prototypes); ticks are the rank names where the dataset has them."""
    from ordclip.evaluate import ordinality_prototypes

    run_dir = layout.run_dir(cfg["suite"], cfg["dataset"]["name"], cfg["method"]["name"], fold, seed)
    path = verified_input(f"{run_dir}/outputs.npz", "train")
    with np.load(path) as npz:
        if "prototypes" in npz and len(npz["prototypes"]) <= index:
            raise DataError(f"{path}: {len(npz['prototypes'])} candidates' prototypes, metrics.json selects "
                            f"candidate {index}")
        vectors, labels, _ = ordinality_prototypes(cfg, npz, index, run_dir)
        unit = str(npz["prototype_unit"])
    ds = cfg["dataset"]
    names = ds.get("rank_names")
    if unit == "rank" and names and ds.get("ranks"):
        ticks = [str(names[v - ds["ranks"][0]]) for v in labels]
    else:
        ticks = [f"≥{v}" if unit == "bin" else str(v) for v in labels]
    return CellPrototypes(fold=fold, vectors=vectors, labels=ticks, unit=unit, ordinality=ordinality)


def _read_json(path: str) -> dict:
    try:
        with open(path) as f:
            return json.load(f)
    except FileNotFoundError:
        raise DataError(f"{path}: not found (run the rule that writes it first)") from None


def _read_log(path: str) -> list[dict]:
    try:
        lines = Path(path).read_text().splitlines()
    except FileNotFoundError:
        raise DataError(f"{path}: not found (run the rule that writes it first)") from None
    entries = [json.loads(line) for line in lines if line.strip()]
    if not entries:
        raise DataError(f"{path}: no entries (the run recorded no epoch or candidate)")
    return entries


def _read_predictions(path: str, columns: list[str]) -> pd.DataFrame:
    try:
        df = pd.read_csv(path)
    except FileNotFoundError:
        raise DataError(f"{path}: not found (run the rule `evaluate` first)") from None
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise DataError(f"{path}: missing column(s) {missing}; has {list(df.columns)}")
    if df.empty:
        raise DataError(f"{path}: no test predictions")
    return df


def rank_labels(dataset_cfg: dict, labels: np.ndarray, ranks: np.ndarray, predicted: np.ndarray,
                where: str) -> list[str]:
    """Tick labels of the rank axis: the dataset's ``rank_names``, else its label values.

    The scale is the configured ``ranks`` (or ``rank_names``); without either, it spans the true
    and predicted ranks seen."""
    offsets = np.unique(np.asarray(labels) - np.asarray(ranks))
    if len(offsets) != 1:
        raise DataError(f"{where}: label − rank is not the same for every row ({offsets[:5].tolist()})")
    names = dataset_cfg.get("rank_names")
    if names:
        return [str(n) for n in names]
    if dataset_cfg.get("ranks"):
        lo, hi = dataset_cfg["ranks"]
        num = hi - lo + 1
    else:
        num = int(max(np.max(ranks), np.max(predicted))) + 1
    return [str(int(offsets[0]) + r) for r in range(num)]


def load_cell_runs(job: dict) -> CellRuns:
    """Read every run's metrics.json, predictions.csv and log.jsonl of a cell (ordclip.jobs.job_config "cell")."""
    from ordclip.tables import cell_runs

    cfg = job["run"]
    suite, dataset, method = cfg["suite"], cfg["dataset"]["name"], cfg["method"]["name"]
    frames, logs, selected, report, select_on, ordinality = [], [], [], None, None, []
    keys = cell_runs(job)
    for k, j in keys:
        run = partial(lambda k, j, name: layout.run_file(suite, dataset, method, k, name, j), k, j)
        metrics = _read_json(run("metrics.json"))
        if report is None:
            report, select_on = metrics["report"], metrics["select_on"]
        elif metrics["report"] != report:
            raise DataError(f"{run('metrics.json')}: report modes {metrics['report']} differ from fold 0's {report}")
        df = _read_predictions(run("predictions.csv"), ["label", "rank", *{f"pred_{m}" for m in report.values()}])
        frames.append(df.assign(fold=k))
        logs.append(_read_log(run("log.jsonl")))
        selected.append(int(metrics["val_selected"]["index"]))
        if "ordinality" not in metrics:
            raise DataError(f"{run('metrics.json')}: no 'ordinality' (written by an older ordclip): rerun evaluate")
        ordinality.append(metrics["ordinality"]["val_selected"])
    df = pd.concat(frames, ignore_index=True)
    pred = {m: df[f"pred_{m}"].to_numpy(np.float64) for m in dict.fromkeys(report.values())}
    y = df["rank"].to_numpy(np.int64)
    hard = np.rint(pred[report["acc"]])
    where = layout.run_file(suite, dataset, method, "*", "predictions.csv")
    labels = rank_labels(cfg["dataset"], df["label"].to_numpy(), y, hard, where)
    protos = load_prototypes(cfg, keys[0][0], selected[0], ordinality, keys[0][1])
    return CellRuns(title=f"{dataset} / {method}", y=y, pred=pred, fold=df["fold"].to_numpy(), report=report,
                    rank_labels=labels, logs=logs, selected=selected, select_on=select_on, prototypes=protos,
                    names=[layout.run_name(k, j) for k, j in keys])


# --- numbers behind the figures ----------------------------------------------------------------

def hard_ranks(pred: np.ndarray, num_ranks: int) -> np.ndarray:
    """round(pred), as the accuracy is computed, clipped to the scale 0..num_ranks-1."""
    return np.clip(np.rint(pred), 0, num_ranks - 1).astype(np.int64)


def confusion_counts(y: np.ndarray, hard: np.ndarray, num_ranks: int) -> np.ndarray:
    """(num_ranks, num_ranks) counts: row = true rank, column = predicted rank."""
    counts = np.zeros((num_ranks, num_ranks), dtype=np.int64)
    np.add.at(counts, (np.asarray(y, dtype=np.int64), np.asarray(hard, dtype=np.int64)), 1)
    return counts


def mae_per_rank(y: np.ndarray, pred: np.ndarray, num_ranks: int) -> tuple[np.ndarray, np.ndarray]:
    """(MAE of the images of each true rank, NaN where there is none; number of images per rank)."""
    y = np.asarray(y, dtype=np.int64)
    counts = np.bincount(y, minlength=num_ranks)
    sums = np.bincount(y, weights=np.abs(np.asarray(pred, dtype=np.float64) - y), minlength=num_ranks)
    with np.errstate(invalid="ignore", divide="ignore"):
        mae = np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)
    return mae, counts


def _mean_over_folds(series: list[list[float]]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean, min and max over folds of per-candidate values (folds may have different lengths)."""
    n = max(len(s) for s in series)
    grid = np.full((len(series), n), np.nan)
    for i, s in enumerate(series):
        grid[i, : len(s)] = s
    count = np.sum(~np.isnan(grid), axis=0)
    with np.errstate(invalid="ignore"):
        mean = np.nansum(grid, axis=0) / count
    return mean, np.fmin.reduce(grid, axis=0), np.fmax.reduce(grid, axis=0)


def curve_series(logs: list[list[dict]], mode: str) -> dict:
    """What the curves figure draws, from the folds' log entries.

    ``kind``: ``epochs`` (trained: entries carry ``loss``), ``candidates`` (fitted: one entry per
    setting, e.g. C of a linear probe) or ``single`` (one candidate, nothing trained). ``x``: the
    candidate names of fold 0; ``val_mae``/``test_mae``: per fold, MAE of each candidate in ``mode``;
    ``loss``: per loss term, per fold, its value each epoch."""
    has_loss = all("loss" in e for log in logs for e in log)
    kind = "epochs" if has_loss else ("candidates" if max(len(log) for log in logs) > 1 else "single")
    out = {"kind": kind, "x": [e["name"] for e in logs[0]],
           "stages": [e.get("stage") for e in logs[0]],
           "val_mae": [[e["val"][mode]["mae"] for e in log] for log in logs],
           "test_mae": [[e["test"][mode]["mae"] for e in log] for log in logs], "loss": {}}
    if has_loss:
        terms = list(dict.fromkeys(t for log in logs for e in log for t in e["loss"]))
        out["loss"] = {t: [[e["loss"].get(t, math.nan) for e in log] for log in logs] for t in terms}
    return out


# --- drawing ----------------------------------------------------------------------------------

def _figure(**kwargs) -> Figure:
    fig = Figure(figsize=FIGSIZE, dpi=DPI, layout="constrained", **kwargs)
    FigureCanvasAgg(fig)
    return fig


def _save(fig: Figure, path: str | Path) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=DPI, metadata={"Software": None})


def _rank_ticks(axis, labels: list[str], rotate: bool) -> None:
    step = max(1, math.ceil(len(labels) / MAX_TICKS))
    positions = list(range(0, len(labels), step))
    axis.set_ticks(positions)
    texts = [labels[p] for p in positions]
    if rotate and max(len(t) for t in texts) > 3:
        axis.set_ticklabels(texts, rotation=45, ha="right", fontsize=7)
    else:
        axis.set_ticklabels(texts, fontsize=7)


def plot_confusion(runs: CellRuns, path: str | Path) -> np.ndarray:
    """Confusion matrix of the hard test predictions (``report.acc`` mode), pooled; returns the counts."""
    mode = runs.report["acc"]
    counts = confusion_counts(runs.y, hard_ranks(runs.pred[mode], runs.num_ranks), runs.num_ranks)
    fig = _figure()
    ax = fig.add_subplot()
    im = ax.imshow(counts, cmap="Blues", origin="upper", interpolation="nearest")
    fig.colorbar(im, ax=ax, shrink=0.8, label="test images")
    if runs.num_ranks <= 12:
        top = counts.max() or 1
        for (i, j), c in np.ndenumerate(counts):
            if c:
                ax.text(j, i, str(c), ha="center", va="center", fontsize=7,
                        color="white" if c > 0.6 * top else "black")
    _rank_ticks(ax.xaxis, runs.rank_labels, rotate=True)
    _rank_ticks(ax.yaxis, runs.rank_labels, rotate=False)
    ax.set_xlabel(f"predicted rank (mode {mode})", fontsize=8)
    ax.set_ylabel("true rank", fontsize=8)
    acc = np.trace(counts) / counts.sum()
    ax.set_title(f"{runs.title}: confusion, n={counts.sum()}, acc={acc:.1%}", fontsize=9)
    _save(fig, path)
    return counts


def plot_mae_per_rank(runs: CellRuns, path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """Bars: MAE of each true rank (``report.mae`` mode); grey line: its number of test images."""
    mode = runs.report["mae"]
    mae, counts = mae_per_rank(runs.y, runs.pred[mode], runs.num_ranks)
    ranks = np.arange(runs.num_ranks)
    fig = _figure()
    ax = fig.add_subplot()
    ax.bar(ranks[counts > 0], mae[counts > 0], color="tab:blue", label="MAE of the rank's images")
    overall = float(np.abs(runs.pred[mode] - runs.y).mean())
    ax.axhline(overall, color="tab:red", linestyle="--", linewidth=1, label=f"overall MAE {overall:.3f}")
    if (counts == 0).any():
        ax.plot(ranks[counts == 0], np.zeros((counts == 0).sum()), "x", color="black", label="no test image")
    ax.set_ylabel(f"MAE in ranks (mode {mode})", fontsize=8)
    ax.set_xlabel("true rank", fontsize=8)
    ax.set_ylim(0, np.nanmax(np.r_[mae, overall]) * 1.3)
    ax.legend(fontsize=7, loc="upper left")
    twin = ax.twinx()
    twin.plot(ranks, counts, color="grey", marker=".", linewidth=1)
    twin.set_ylabel("test images (grey)", fontsize=8, color="grey")
    twin.set_ylim(0, max(1, counts.max()) * 1.5)
    twin.tick_params(labelsize=7, colors="grey")
    ax.set_xlim(-0.6, runs.num_ranks - 0.4)
    _rank_ticks(ax.xaxis, runs.rank_labels, rotate=True)
    ax.tick_params(axis="y", labelsize=7)
    ax.set_title(f"{runs.title}: MAE per true rank", fontsize=9)
    _save(fig, path)
    return mae, counts


def plot_pred_vs_true(runs: CellRuns, path: str | Path) -> dict:
    """Each test image at (true rank, jittered; predicted rank, ``report.mae`` mode), the identity
    line and the mean prediction of each true rank. Returns n, MAE and those means."""
    mode = runs.report["mae"]
    pred = runs.pred[mode]
    rng = np.random.default_rng(0)
    n = len(runs.y)
    x = runs.y + rng.uniform(-0.25, 0.25, n)
    integer = bool(np.all(pred == np.rint(pred)))
    shown = pred + rng.uniform(-0.25, 0.25, n) if integer else pred
    ranks = np.arange(runs.num_ranks)
    counts = np.bincount(runs.y, minlength=runs.num_ranks)
    sums = np.bincount(runs.y, weights=pred, minlength=runs.num_ranks)
    means = np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)
    fig = _figure()
    ax = fig.add_subplot()
    ax.scatter(x, shown, s=6, alpha=max(0.05, min(0.6, 200 / n)), color="tab:blue", linewidths=0,
               label="test image" + (" (both axes jittered)" if integer else " (x jittered)"))
    ax.plot([0, runs.num_ranks - 1], [0, runs.num_ranks - 1], "--", color="black", linewidth=1,
            label="prediction = truth")
    ax.plot(ranks[counts > 0], means[counts > 0], "o-", color="tab:red", markersize=3, linewidth=1,
            label="mean prediction per true rank")
    _rank_ticks(ax.xaxis, runs.rank_labels, rotate=True)
    _rank_ticks(ax.yaxis, runs.rank_labels, rotate=False)
    ax.set_xlabel("true rank", fontsize=8)
    ax.set_ylabel(f"predicted rank (mode {mode})", fontsize=8)
    mae = float(np.abs(pred - runs.y).mean())
    ax.set_title(f"{runs.title}: predicted vs true, n={n}, MAE={mae:.3f}", fontsize=9)
    ax.legend(fontsize=7, loc="upper left")
    _save(fig, path)
    return {"n": n, "mae": mae, "mean_prediction": means}


def _band(ax, x, series: list[list[float]], label: str, color: str, style: str = "-") -> None:
    mean, lo, hi = _mean_over_folds(series)
    ax.plot(x[: len(mean)], mean, style, color=color, marker="o" if len(mean) <= 20 else None, markersize=3,
            linewidth=1.2, label=label)
    if len(series) > 1:
        ax.fill_between(x[: len(mean)], lo, hi, color=color, alpha=0.15, linewidth=0)


def plot_curves(runs: CellRuns, path: str | Path) -> dict:
    """Training curves (loss terms and val/test MAE per epoch), the val/test MAE of each fitted
    candidate, or, for a method with one candidate and no training, its val/test MAE per fold with
    a statement that nothing is trained. Returns :func:`curve_series` of the logs."""
    mode = runs.report["mae"]
    series = curve_series(runs.logs, mode)
    folds = len(runs.logs)
    if series["kind"] == "single":
        fig = _figure()
        ax = fig.add_subplot()
        pos = np.arange(folds)
        val = [s[0] for s in series["val_mae"]]
        test = [s[0] for s in series["test_mae"]]
        ax.bar(pos - 0.2, val, 0.4, color="tab:orange", label="val MAE")
        ax.bar(pos + 0.2, test, 0.4, color="tab:blue", label="test MAE")
        ax.set_xticks(pos, [n.replace("fold", "fold ") for n in runs.names], fontsize=7)
        ax.set_ylabel(f"MAE (mode {mode})", fontsize=8)
        ax.set_ylim(0, max(val + test) * 1.45)
        ax.legend(fontsize=7, loc="upper right")
        ax.text(0.02, 0.97, "No training: this method has one fixed candidate\n"
                f"({series['x'][0]!r}) and no epochs, so there are no curves.",
                transform=ax.transAxes, va="top", fontsize=8)
        ax.set_title(f"{runs.title}: nothing trained", fontsize=9)
        _save(fig, path)
        return series
    x = np.arange(1, len(series["x"]) + 1)
    trained = series["kind"] == "epochs"
    fig = _figure()
    if trained:
        ax_loss, ax = fig.subplots(2, 1, sharex=True)
        colors = iter(["tab:purple", "tab:green", "tab:brown", "tab:pink", "tab:olive", "tab:cyan", "tab:gray"])
        for term, values in series["loss"].items():
            _band(ax_loss, x, values, term, next(colors, "black"))
        ax_loss.set_ylabel("train loss", fontsize=8)
        ax_loss.legend(fontsize=6, loc="best")
        ax_loss.tick_params(labelsize=7)
        ax_loss.set_title(f"{runs.title}: training curves ({folds} {runs.word}: mean, range)", fontsize=9)
        bounds = [i for i in range(1, len(series["stages"])) if series["stages"][i] != series["stages"][i - 1]]
        for a in (ax_loss, ax):
            for b in bounds:
                a.axvline(b + 0.5, color="grey", linestyle=":", linewidth=1)
        if bounds:
            for start, end in zip([0, *bounds], [*bounds, len(x)]):
                ax_loss.text((start + end + 1) / 2, 0.98, series["stages"][start], ha="center", va="top",
                             transform=ax_loss.get_xaxis_transform(), fontsize=7, color="grey")
    else:
        ax = fig.add_subplot()
        ax.set_title(f"{runs.title}: candidates ({folds} {runs.word}: mean, range)", fontsize=9)
    _band(ax, x, series["val_mae"], "val MAE", "tab:orange")
    _band(ax, x, series["test_mae"], "test MAE", "tab:blue", "--")
    sel = [(runs.selected[k] + 1, series["val_mae"][k][runs.selected[k]]) for k in range(folds)]
    ax.plot(*zip(*sel), "v", color="black", markersize=6, label=f"selected on val {runs.select_on} (per {runs.word[:-1]})")
    ax.set_ylabel(f"MAE (mode {mode})", fontsize=8)
    ax.legend(fontsize=6, loc="best")
    ax.tick_params(labelsize=7)
    if trained:
        ax.set_xlabel("epoch (all stages)", fontsize=8)
        ax.xaxis.get_major_locator().set_params(integer=True)
    else:
        ax.set_xticks(x, series["x"], rotation=45 if len(x) > 4 else 0, fontsize=7)
        ax.set_xlabel("candidate", fontsize=8)
    _save(fig, path)
    return series


def plot_prototype_similarity(runs: CellRuns, path: str | Path) -> np.ndarray:
    """Cosine similarity of the first fold's rank prototypes (its val-selected candidate), in rank
    order, as OrdinalCLIP's Figure 3 draws them; the title gives that fold's ordinality and the
    mean over folds. Returns the similarity matrix."""
    p = runs.prototypes
    sim = cosine_similarity(p.vectors)
    fig = _figure()
    ax = fig.add_subplot()
    im = ax.imshow(sim, cmap="viridis", origin="upper", interpolation="nearest")
    fig.colorbar(im, ax=ax, shrink=0.8, label="cosine similarity")
    _rank_ticks(ax.xaxis, p.labels, rotate=True)
    _rank_ticks(ax.yaxis, p.labels, rotate=False)
    what = "coarse bin" if p.unit == "bin" else "rank"
    ax.set_xlabel(f"{what} prototype", fontsize=8)
    ax.set_ylabel(f"{what} prototype", fontsize=8)
    values = [v for v in p.ordinality if v is not None]
    first = "–" if p.ordinality[0] is None else f"{p.ordinality[0]:.1%}"
    mean = f"{np.mean(values):.1%}" if values else "–"
    ax.set_title(f"{runs.title}: prototype similarity, fold {p.fold}\n"
                 f"ordinality {first} (mean of {len(p.ordinality)} {runs.word} {mean})", fontsize=9)
    _save(fig, path)
    return sim


FIGURES = {"confusion": plot_confusion, "mae_per_rank": plot_mae_per_rank,
           "pred_vs_true": plot_pred_vs_true, "curves": plot_curves,
           "prototype_similarity": plot_prototype_similarity}


def write_cell_figures(job: dict) -> dict[str, str]:
    """Write the cell's figures (layout.CELL_FIGURES) and return {name: path}."""
    cfg = job["run"]
    suite, dataset, method = cfg["suite"], cfg["dataset"]["name"], cfg["method"]["name"]
    runs = load_cell_runs(job)
    paths = {}
    for name in layout.CELL_FIGURES:
        paths[name] = layout.cell_figure(suite, dataset, method, name)
        FIGURES[name](runs, paths[name])
    return paths
