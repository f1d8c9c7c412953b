"""``python -m ordclip audit TARGET``: check that every number of a table, a cell or a run follows
from what was recorded, and that every file of the chain is the one that was recorded.

For each run it re-derives metrics.json from outputs.npz (the same code as ``evaluate``), checks the
sha256 of its inputs and final outputs against run.json, and the md5 of every run file against the
dvc.lock entries of the repository's dvc.lock. For a sample of runs per cell it reloads model.pt on its
backbone and checks that it reproduces the recorded test outputs of the selected candidate. Each
cell is re-derived from its folds' metrics.json, and a table from its cells. Any difference is a
problem naming the file; the command then exits 1.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import pandas as pd

from ordclip import layout
from ordclip.errors import DataError
from ordclip.io import sha256_file
from ordclip.lineage import RUN_FILES, _dvc_check, digests, read_lock, table_cells, table_suite
from ordclip.tables import cell_runs

REL = 1e-9


def _same(a: Any, b: Any) -> bool:
    """Equal JSON values; floats to a relative 1e-9 (a re-derivation in another process)."""
    if isinstance(a, float) or isinstance(b, float):
        if a is None or b is None:  # a value a cell lacks: None in JSON, NaN once read from the csv
            return all(x is None or math.isnan(float(x)) for x in (a, b))
        if math.isnan(float(a)) or math.isnan(float(b)):  # a 1-fold cell's std
            return math.isnan(float(a)) and math.isnan(float(b))
        return math.isclose(float(a), float(b), rel_tol=REL, abs_tol=1e-12)
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return a == b


def _load_json(path: Path, problems: list[dict]) -> dict | None:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        problems.append({"file": str(path), "what": "missing"})
    except json.JSONDecodeError as exc:
        problems.append({"file": str(path), "what": f"not valid JSON: {exc}"})
    return None


def _dvc_problems(paths: list[Path], lock: dict | None, problems: list[dict]) -> None:
    """A problem for each file whose md5 differs from its dvc.lock entry, or that is missing."""
    hashes = {str(p): digests(p) for p in paths if p.is_file()}
    for check in _dvc_check(paths, lock, hashes):
        if check["status"] in ("differs", "missing"):
            problems.append({"file": check["path"], "what": f"{check['status']} from dvc.lock ({check['stage']})"})


def _reload(record: dict, run_dir: Path) -> str | None:
    """None if model.pt reproduces the test outputs recorded for its candidate, else what differs."""
    import contextlib

    import torch

    from ordclip.data.loader import ImagePipeline, load_fold
    from ordclip.train import load_trained, predict_part

    cfg = record["config"]
    bb, ds = cfg["backbone"], cfg["dataset"]
    inputs = {k: v["path"] for k, v in record["inputs"].items()}
    ckpt = torch.load(run_dir / "model.pt", map_location="cpu", weights_only=True)
    npz = np.load(run_dir / "outputs.npz")
    names = [str(n) for n in npz["candidates"]]
    if ckpt.get("candidate") not in names:
        return f"model.pt names candidate {ckpt.get('candidate')!r}, which outputs.npz does not have"
    i = names.index(ckpt["candidate"])
    method = load_trained(cfg, run_dir / "model.pt", inputs["weights"])
    parts = load_fold(inputs["images"], inputs["index"], inputs["split"], torch.device("cpu"))
    pipeline = ImagePipeline(bb["image_size"], bb["normalize"], ds.get("hflip", True), torch.device("cpu"))
    got = predict_part(method, parts["test"], pipeline, contextlib.nullcontext())
    for key, value in got.items():
        want = npz[f"test_{key}"][i]
        if value.shape != want.shape or not np.allclose(value, want, rtol=1e-3, atol=1e-3):
            worst = float(np.max(np.abs(value - want))) if value.shape == want.shape else float("nan")
            return f"reloaded, it gives other test {key} than recorded for {ckpt['candidate']!r} (max |diff| {worst:.3g})"
    return None


def audit_run(run_dir: Path, lock: dict | None, reload: bool, problems: list[dict]) -> dict | None:
    """Check one run folder; return its metrics.json (None if unreadable)."""
    from ordclip.evaluate import metrics_of
    from ordclip.methods import METHODS

    record = _load_json(run_dir / "run.json", problems)
    metrics = _load_json(run_dir / "metrics.json", problems)
    if record is None or metrics is None:
        return None
    for group in ("inputs", "outputs"):
        for key, entry in record.get(group, {}).items():
            path = Path(entry["path"])
            if not path.is_file():
                problems.append({"file": str(path), "what": f"missing ({group[:-1]} {key} of {run_dir}/run.json)"})
            elif "bytes" in entry and path.stat().st_size != entry["bytes"]:
                problems.append({"file": str(path), "what": f"{path.stat().st_size} bytes, {run_dir}/run.json records "
                                                            f"{entry['bytes']} for {group[:-1]} {key!r}"})
            elif "sha256" in entry and sha256_file(path) != entry["sha256"]:
                problems.append({"file": str(path), "what": f"sha256 differs from the one {run_dir}/run.json records "
                                                            f"for {group[:-1]} {key!r}"})
    _dvc_problems([run_dir / name for name in RUN_FILES], lock, problems)
    ds = record["config"]["dataset"]
    if ds.get("kind") == "csv":  # the user's images, against what their image cache was built from
        from ordclip.data.sources import changed_sources

        folder = Path(layout.prepared_dir(ds["data"], record["config"]["backbone"]["resize"]))
        for changed in changed_sources(ds["csv"], ds["image_root"], folder):
            problems.append({"file": changed, "what": f"differs from the file {folder} was prepared from "
                                                      f"(input of {run_dir})"})
    try:
        with np.load(run_dir / "outputs.npz") as npz:
            again = metrics_of(record["config"], record["fold"], npz)[0]
    except (OSError, ValueError, KeyError, DataError) as exc:
        problems.append({"file": str(run_dir / "outputs.npz"), "what": f"cannot be read: {exc}"})
        return metrics
    if not _same(json.loads(json.dumps(again)), metrics):
        problems.append({"file": str(run_dir / "metrics.json"),
                         "what": "differs from the metrics re-derived from outputs.npz"})
    trains_on = METHODS[record["config"]["method"]["kind"]]["trains_on"]
    if reload and trains_on == "images":
        why = _reload(record, run_dir)
        if why:
            problems.append({"file": str(run_dir / "model.pt"), "what": why})
    return metrics


def audit_cell(cell_path: Path, lock: dict | None, sample: int, problems: list[dict]) -> dict | None:
    from ordclip.tables import cell_metrics

    cell = _load_json(cell_path, problems)
    if cell is None:
        return None
    _dvc_problems([cell_path], lock, problems)
    runs = []
    keys = cell_runs(cell)
    for i, (k, j) in enumerate(keys):
        run_dir = Path(layout.run_dir(cell["suite"], cell["dataset"], cell["method"], k, j))
        runs.append(audit_run(run_dir, lock, i < sample, problems))
    if all(r is not None for r in runs) and not _same(cell_metrics(runs, keys), cell["metrics"]):
        problems.append({"file": str(cell_path), "what": "differs from the statistics of its runs' metrics.json"})
    return cell


def audit(target: str | Path, params: Mapping | None, sample: int = 1, root: str | Path = ".") -> dict:
    """Audit a table csv, a cell json or a run folder; {"target", "checked", "problems"}."""
    target, problems = Path(target), []
    lock = read_lock(root)
    checked = {"tables": 0, "cells": 0, "runs": 0}
    if target.is_dir():
        audit_run(target, lock, sample > 0, problems)
        checked["runs"] = 1
    elif target.suffix == ".json":
        audit_cell(target, lock, sample, problems)
        checked["cells"] = 1
    elif target.suffix == ".csv":
        if params is None:
            raise ValueError("auditing a table needs the parameters (params)")
        cells = table_cells(target, params)
        for path in cells:
            audit_cell(Path(path), lock, sample, problems)
        checked["cells"] = len(cells)
        _audit_table(target, params, problems)
        exts = ("csv", "md", "metrics.json") if target.with_suffix(".metrics.json").exists() else ("csv", "md")
        _dvc_problems([target.with_name(target.name.removesuffix(".csv") + f".{e}") for e in exts], lock, problems)
        checked["tables"] = 1
        checked["runs"] = sum(len(cell_runs(json.loads(Path(c).read_text()))) for c in cells if Path(c).is_file())
    elif not target.exists():
        raise DataError(f"{target}: not found (expected a table csv, a cell json or a run folder)")
    else:
        raise DataError(f"{target}: not a table csv, a cell json or a run folder")
    return {"target": str(target), "dvc_lock": lock is not None, "checked": checked, "problems": problems}


def _first_difference(a: pd.DataFrame, b: pd.DataFrame, keys: list[str]) -> str | None:
    """The first row and column where two tables differ, or None when they are the same."""
    if len(a) != len(b) or list(a.columns) != list(b.columns):
        return f"{len(b)} rows with columns {list(b.columns)}, rebuilt: {len(a)} rows with columns {list(a.columns)}"
    for x, y in zip(a.to_dict("records"), b.to_dict("records")):
        for col in a.columns:
            if not _same(x[col], y[col]):
                where = ", ".join(f"{k} {y[k]}" for k in keys)
                return f"{col} of ({where}) is {y[col]!r}, rebuilt from the cells: {x[col]!r}"
    return None


def _audit_table(target: Path, params: Mapping, problems: list[dict]) -> None:
    """The table's csv re-derived from its cells (the first differing value named), its .md and
    .metrics.json rebuilt byte for byte, and a default-suite copy (results/<name>.*) equal to its source."""
    from ordclip.jobs import job_config
    from ordclip.tables import read_cells, table_texts

    df = pd.read_csv(target)
    suites = list(dict.fromkeys(df["suite"]))  # results/<suite>/<name>.csv; a study table shows several
    suite = table_suite(target, df, params)
    name = target.name.removesuffix(".csv")
    overall = ((params.get("suites") or {}).get(suite) or {}).get("overall") or {}
    datasets = [d for d in dict.fromkeys(df["dataset"]) if d not in overall]
    try:
        again = read_cells(suite, datasets, list(dict.fromkeys(df["method"])), overall, suites)
    except Exception as exc:  # a missing or broken cell is already a problem above
        problems.append({"file": str(target), "what": f"cannot be rebuilt from its cells: {exc}"})
        return
    keys = ["suite", "dataset", "method", "metric"]
    diff = _first_difference(again.sort_values(keys).reset_index(drop=True),
                             df.sort_values(keys).reset_index(drop=True), keys)
    if diff:
        problems.append({"file": str(target), "what": f"differs from the table rebuilt from its cells: {diff}"})
        return
    source = Path(layout.table_file(suite, name, "csv"))
    if target.resolve() != source.resolve():  # the default suite's copy
        for ext in ("csv", "md"):
            copy, src = target.with_name(f"{name}.{ext}"), Path(layout.table_file(suite, name, ext))
            if not copy.is_file() or not src.is_file() or copy.read_bytes() != src.read_bytes():
                problems.append({"file": str(copy), "what": f"is not a copy of {src}"})
    try:
        texts = table_texts(job_config(params, "table", suite=suite, name=name))
    except Exception as exc:
        problems.append({"file": str(source), "what": f"cannot be rebuilt: {exc}"})
        return
    for ext, text in texts.items():
        path = Path(layout.table_file(suite, name, ext))
        if not path.is_file():
            problems.append({"file": str(path), "what": "missing"})
        elif path.read_text() != text:
            line = next((i + 1 for i, (x, y) in enumerate(zip(path.read_text().splitlines(), text.splitlines()))
                         if x != y), min(len(path.read_text().splitlines()), len(text.splitlines())) + 1)
            problems.append({"file": str(path), "what": f"differs from the {ext} rebuilt from its cells "
                                                        f"(first at line {line})"})


def format_report(report: dict) -> str:
    c = report["checked"]
    lines = [f"audit {report['target']}: {c['tables']} table(s), {c['cells']} cell(s), {c['runs']} run(s) checked"
             + ("" if report["dvc_lock"] else " (no dvc.lock: DVC hashes not checked)")]
    lines += [f"  MISMATCH {p['file']}: {p['what']}" for p in report["problems"]]
    lines.append("audit: OK" if not report["problems"] else f"audit: {len(report['problems'])} problem(s)")
    return "\n".join(lines)
