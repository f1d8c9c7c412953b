"""Evaluate a run from its recorded outputs: metrics.json and the test predictions.

Two selections are reported: the candidate (epoch, or C) best on validation — ours, the headline —
and the one best on test, which is what the official OrdinalCLIP/NumCLIP code reports (its
validation list is the test list); the latter is labelled ``test_selected``. For both, the
ordinality of the candidate's prototypes (OrdinalCLIP's Figure 3; ordclip.metrics.prototype_ordinality).
"""

from __future__ import annotations

import csv
import json

import numpy as np

from ordclip import layout
from ordclip.data.splits import read_index
from ordclip.errors import ConfigError, DataError
from ordclip.io import atomic_path, load_numpy, write_json
from ordclip.metrics import counted_prototypes, mode_predictions, prototype_ordinality, selection_score, summarize

HEADLINE = ("mae", "acc", "one_off_acc", "qwk")


def select(outputs: list[dict[str, np.ndarray]], y: np.ndarray, select_on: str) -> int:
    """Index of the best candidate by ``select_on`` (ties: the earliest)."""
    return int(np.argmin([selection_score(o, y, select_on) for o in outputs]))


def _candidates(npz, part: str) -> list[dict[str, np.ndarray]]:
    keys = [k for k in ("logits", "value", "bin_value") if f"{part}_{k}" in npz]
    return [{k: npz[f"{part}_{k}"][i] for k in keys} for i in range(len(npz["candidates"]))]


def _report(metrics_by_mode: dict[str, dict], report: dict[str, str]) -> dict[str, float | None]:
    """Headline metrics: MAE from the ``report.mae`` mode, the others from ``report.acc``'s."""
    out = {"mae": metrics_by_mode[report["mae"]]["mae"]}
    out.update({k: metrics_by_mode[report["acc"]][k] for k in HEADLINE[1:]})
    return out


PROTOTYPE_KEYS = ("prototypes", "prototype_labels", "prototype_unit")


def ordinality_prototypes(cfg: dict, npz, index: int, where: str) -> tuple[np.ndarray, np.ndarray, list[int]]:
    """Candidate ``index``'s prototypes that the ordinality counts (ordclip.metrics.counted_prototypes):
    per-rank prototypes of the dataset's own labels (``dataset_ranks``, set where the method runs
    in a larger rank space, ordclip.config.apply_rank_space; else every rank), or all of NumCLIP's
    coarse bins (unit ``bin``). ``where`` names the run in errors."""
    missing = [k for k in PROTOTYPE_KEYS if k not in npz]
    if missing:
        raise DataError(f"{where}/outputs.npz: no {missing} (written by an older ordclip): retrain the run")
    unit = str(npz["prototype_unit"])
    label_range = cfg["dataset"].get("dataset_ranks") if unit == "rank" else None
    return counted_prototypes(npz["prototypes"][index], npz["prototype_labels"], label_range)


def metrics_of(cfg: dict, fold: int, npz) -> tuple[dict, dict[str, int], dict, dict]:
    """metrics.json's content for run ``cfg`` (resolved configuration) fold ``fold`` from its
    outputs.npz; also the chosen candidates, the candidates' outputs and labels per part."""
    suite, dataset, method, mcfg = cfg["suite"], cfg["dataset"]["name"], cfg["method"]["name"], cfg["method"]
    names = [str(n) for n in npz["candidates"]]
    y = {p: npz[f"{p}_y"] for p in ("val", "test")}
    cands = {p: _candidates(npz, p) for p in ("val", "test")}
    have = list(mode_predictions(cands["val"][0]))
    wanted = {"select_on": mcfg["select_on"].rpartition("_")[2], **{f"report.{k}": v for k, v in mcfg["report"].items()}}
    for key, mode in wanted.items():
        if mode not in have:
            raise ConfigError(f"methods.{method}.{key}: prediction mode {mode!r} is not produced by this run "
                              f"({suite}/{dataset}/{method}/fold{fold} has {have}); the trained run is kept, "
                              f"fix the key and rerun")
    chosen = {"val_selected": select(cands["val"], y["val"], mcfg["select_on"]),
              "test_selected": select(cands["test"], y["test"], mcfg["select_on"])}
    result: dict = {"select_on": mcfg["select_on"], "report": mcfg["report"]}
    for label, i in chosen.items():
        by_mode = {p: {m: summarize(pred, y[p]) for m, pred in mode_predictions(cands[p][i]).items()}
                   for p in ("val", "test")}
        result[label] = {"candidate": names[i], "index": i, **by_mode,
                         "headline": _report(by_mode["test"], mcfg["report"])}
    result["test"] = result["val_selected"]["headline"]
    result["test_selected_test"] = result["test_selected"]["headline"]
    # OrdinalCLIP Figure 3: fraction of prototype comparisons that obey the rank order, every span
    # (metrics.json "ordinality": the value of each selected candidate; the labels counted, and those
    # without a prototype, of the val-selected one)
    where = layout.run_dir(suite, dataset, method, fold, cfg.get("seed_index", 0))
    counted = {label: ordinality_prototypes(cfg, npz, i, where) for label, i in chosen.items()}
    result["ordinality"] = {"unit": str(npz["prototype_unit"]),
                            "labels": counted["val_selected"][1].tolist(),
                            "without_prototype": counted["val_selected"][2],
                            **{label: prototype_ordinality(c[0]) for label, c in counted.items()}}
    return result, chosen, cands, y


def evaluate(job: dict) -> None:
    """metrics.json, predictions.csv and curves.csv of a run (ordclip.jobs.job_config "evaluate")
    from its recorded outputs and log."""
    cfg, fold = job["run"], job["fold"]
    suite, dataset, method = cfg["suite"], cfg["dataset"]["name"], cfg["method"]["name"]
    run = lambda name: layout.run_file(suite, dataset, method, fold, name, cfg.get("seed_index", 0))  # noqa: E731
    npz = load_numpy(run("outputs.npz"), "train")
    result, chosen, cands, y = metrics_of(cfg, fold, npz)
    write_json(run("metrics.json"), result)

    index = read_index(layout.prepared_index(cfg["dataset"]["data"], cfg["backbone"]["resize"]))
    preds = mode_predictions(cands["test"][chosen["val_selected"]])
    with atomic_path(run("predictions.csv")) as tmp:
        with open(tmp, "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["index", "path", "label", "rank", *[f"pred_{m}" for m in preds]])
            for j, i in enumerate(npz["test_index"]):
                writer.writerow([int(i), index["path"][i], int(index["label"][i]), int(y["test"][j]),
                                 *[f"{preds[m][j]:.6g}" for m in preds]])
    write_curves(run("log.jsonl"), cfg["method"]["report"], run("curves.csv"))


def write_curves(log_jsonl: str, report: dict[str, str], out: str) -> None:
    """curves.csv (for `dvc plots`): one row per candidate (epoch, or C) with its validation and
    test MAE and accuracy in the reported modes, and, for trained runs, each loss term."""
    rows = [json.loads(line) for line in open(log_jsonl) if line.strip()]
    terms = sorted({k for r in rows for k in r.get("loss", {})})
    with atomic_path(out) as tmp:
        with open(tmp, "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["candidate", "name", "val_mae", "test_mae", "val_acc", "test_acc",
                             *[f"loss_{t}" for t in terms]])
            for r in rows:
                writer.writerow([r["candidate"], r["name"], r["val"][report["mae"]]["mae"], r["test"][report["mae"]]["mae"],
                                 r["val"][report["acc"]]["acc"], r["test"][report["acc"]]["acc"],
                                 *[r.get("loss", {}).get(t, "") for t in terms]])
