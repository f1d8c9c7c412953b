"""Lineage: the chain behind every number of a table.

DVC's record of each run is written by ordclip.dvcstages (dvc.yaml and dvc.lock at the root).
``python -m ordclip lineage TARGET`` (:func:`lineage` and :func:`format_text`) follows a table, a
cell file or a run folder back to each fold's metrics.json, run.json (code commit, configuration,
input and checkpoint hashes, device, versions, wall time) and dvc.lock entries, and says whether
each file still has the hash that was recorded.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, Mapping

import pandas as pd
import yaml

from ordclip import layout
from ordclip.errors import DataError

RUN_FILES = (*layout.RUN_TRAIN_FILES, *layout.RUN_EVAL_FILES)


# --- reading: the lineage of a table, a cell or a run -----------------------------------------

def digests(path: str | Path, chunk: int = 1 << 20) -> tuple[str, str]:
    """(md5, sha256) of a file in one read: DVC records md5, run.json sha256."""
    md5, sha = hashlib.md5(), hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            md5.update(block)
            sha.update(block)
    return md5.hexdigest(), sha.hexdigest()


def _dir_entries(root: Path, md5: str) -> dict[str, str] | None:
    """{relative path: md5} of a recorded folder, from its ``.dir`` object in the DVC cache; None
    when the cache does not hold it."""
    path = root / ".dvc" / "cache" / "files" / "md5" / md5[:2] / md5[2:]
    try:
        return {e["relpath"]: e["md5"] for e in json.loads(path.read_text())}
    except (FileNotFoundError, json.JSONDecodeError, KeyError):
        return None


def read_lock(root: str | Path = ".") -> dict[str, dict] | None:
    """{output path: {stage, md5}} from the dvc.lock at ``root`` (paths relative to ``root``), a
    recorded folder's files included (from its listing in the DVC cache); None when there is none."""
    root = Path(root)
    path = root / "dvc.lock"
    if not path.is_file():
        return None
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise DataError(f"{path}: not valid YAML: {exc}") from None
    out = {}
    for name, stage in (data.get("stages") or {}).items():
        for o in [*(stage.get("outs") or []), *(stage.get("metrics") or [])]:
            where, md5 = os.path.normpath(o["path"]), o.get("md5") or ""
            if md5.endswith(".dir"):
                entries = _dir_entries(root, md5)
                for rel, file_md5 in (entries or {}).items():
                    out[os.path.join(where, rel)] = {"stage": name, "md5": file_md5}
                if entries is None:
                    out[where + os.sep] = {"stage": name, "md5": None}
            else:
                out[where] = {"stage": name, "md5": md5}
    return out


def _need(path: Path, what: str) -> Path:
    if not path.is_file():
        raise DataError(f"{path}: not found ({what}); build it with `snakemake --cores all {path}`, adding the "
                        f"--configfile options its suite was run with where it is not a suite of params.yaml")
    return path


def _read_json(path: Path, what: str) -> dict:
    try:
        return json.loads(_need(path, what).read_text())
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}: not valid JSON: {exc}; delete it and build it again with "
                        f"`snakemake --cores all {path}` (and its suite's --configfile options)") from None


def _dvc_check(paths: list[Path], lock: dict | None, hashes: dict[str, tuple[str, str]]) -> list[dict]:
    """For each file: its dvc.lock stage, the md5 recorded there and whether the file has it now."""
    checks = []
    for p in paths:
        entry = None if lock is None else lock.get(os.path.normpath(p))
        if entry is None:
            status = "no dvc.lock" if lock is None else "not in dvc.lock"
            checks.append({"path": str(p), "stage": None, "recorded_md5": None, "status": status})
            continue
        now = hashes[str(p)][0] if p.is_file() else None
        status = "missing" if now is None else ("matches" if now == entry["md5"] else "differs")
        checks.append({"path": str(p), "stage": entry["stage"], "recorded_md5": entry["md5"], "md5": now,
                       "status": status})
    return checks


def run_lineage(run_dir: str | Path, lock: dict | None) -> dict:
    """One run: its metrics.json headline, run.json record, and dvc.lock state of its files."""
    run_dir = Path(run_dir)
    record = _read_json(run_dir / "run.json", "the run was never trained")
    metrics = _read_json(run_dir / "metrics.json", "the run was never evaluated")
    files = [run_dir / name for name in RUN_FILES if (run_dir / name).is_file()]
    hashes = {str(p): digests(p) for p in files}
    checkpoint = record.get("outputs", {}).get("model")
    if checkpoint is not None:
        now = hashes.get(str(run_dir / "model.pt"), (None, None))[1]
        checkpoint = {**checkpoint, "matches_file": now == checkpoint["sha256"]}
    return {
        "run": str(run_dir), "suite": record.get("suite"), "dataset": record.get("dataset"),
        "method": record.get("method"), "fold": record.get("fold"), "seed_index": record.get("seed_index", 0),
        "metrics": {"path": str(run_dir / "metrics.json"), **metrics.get("test", {})},
        "git": record.get("git"), "workdir_git": record.get("workdir_git"),
        "config_sha256": record.get("config_sha256"), "code_sha256": (record.get("code") or {}).get("sha256"),
        "seed": record.get("seed"), "device": record.get("device"),
        "wall_seconds": record.get("wall_seconds"), "versions": record.get("versions", {}),
        "inputs": record.get("inputs", {}), "checkpoint": checkpoint,
        "dvc": _dvc_check([run_dir / name for name in RUN_FILES], lock, hashes),
    }


def cell_lineage(cell_path: str | Path, lock: dict | None) -> dict:
    """A cell file, its metrics, its dvc.lock state and the lineage of each of its runs."""
    from ordclip.tables import cell_runs

    cell_path = Path(cell_path)
    cell = _read_json(cell_path, "the cell was never built")
    try:
        suite, dataset, method, folds = cell["suite"], cell["dataset"], cell["method"], cell["folds"]
    except KeyError as exc:
        raise DataError(f"{cell_path}: not a cell file (no {exc.args[0]!r})") from None
    hashes = {str(cell_path): digests(cell_path)}
    return {
        "cell": str(cell_path), "suite": suite, "dataset": dataset, "method": method,
        "metrics": {k: {"mean": v.get("mean"), "std": v.get("std")} for k, v in cell.get("metrics", {}).items()},
        "dvc": _dvc_check([cell_path], lock, hashes),
        "runs": [run_lineage(layout.run_dir(suite, dataset, method, k, j), lock) for k, j in cell_runs(cell)],
    }


def table_cells(table_csv: str | Path, params: Mapping) -> list[str]:
    """The cell files behind a table (results/<name>.csv): one per (suite, dataset, method) row,
    except the rows of overall groups (``suites.<suite>.overall``), which are means of cells."""
    from ordclip.tables import TABLE_COLUMNS

    path = _need(Path(table_csv), "the table was never built")
    df = pd.read_csv(path)
    missing = [c for c in ("suite", "dataset", "method") if c not in df.columns]
    if missing:
        raise DataError(f"{path}: not a table of ordclip (no column(s) {missing}; expected {TABLE_COLUMNS})")
    groups = ((params.get("suites") or {}).get(table_suite(path, df, params)) or {}).get("overall") or {}
    return [layout.cell_file(suite, dataset, method)
            for (suite, dataset, method), _ in df.groupby(["suite", "dataset", "method"], sort=False)
            if dataset not in groups]


def table_suite(path: Path, df: pd.DataFrame, params: Mapping) -> str:
    """The suite a table belongs to (whose ``overall`` groups it shows): the folder of
    results/<suite>/<name>.csv; for the copy results/<name>.csv, the suite of its rows."""
    return path.parent.name if path.parent.name in (params.get("suites") or {}) else str(df["suite"].iloc[0])


def lineage(target: str | Path, params: Mapping | None, root: str | Path = ".") -> dict:
    """The lineage of a table csv, a cell json or a run folder (paths relative to the repository root).
    ``params`` (the parameters, for a table's overall groups) is needed for a table only."""
    target = Path(target)
    lock = read_lock(root)
    out: dict[str, Any] = {"target": str(target), "dvc_lock": "dvc.lock" if lock is not None else None}
    if target.is_dir():
        out["runs"] = [run_lineage(target, lock)]
        return out
    if target.suffix == ".csv":
        if params is None:
            raise ValueError("the lineage of a table needs the parameters (params)")
        cells = table_cells(target, params)
        out["table"] = {"path": str(target), "dvc": _dvc_check([target], lock, {str(target): digests(target)})}
        out["cells"] = [cell_lineage(c, lock) for c in cells]
        return out
    if target.suffix == ".json":
        out["cells"] = [cell_lineage(target, lock)]
        return out
    if not target.exists():
        raise DataError(f"{target}: not found (expected a table csv, a cell json or a run folder)")
    raise DataError(f"{target}: not a table csv, a cell json or a run folder")


# --- text --------------------------------------------------------------------------------------

def _short(digest: str | None) -> str:
    return digest[:12] if digest else "-"


def _num(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _dvc_text(checks: list[dict]) -> str:
    if not checks:
        return "dvc.lock: -"
    if all(c["status"] == "no dvc.lock" for c in checks):
        return "dvc.lock: none in this folder"
    by_stage: dict[str, list[str]] = {}
    for c in checks:
        by_stage.setdefault(c["stage"] or "-", []).append(f"{Path(c['path']).name} {c['status']}")
    return "dvc.lock: " + "; ".join(f"{stage}: {', '.join(items)}" for stage, items in by_stage.items())


def _run_text(run: dict, indent: str) -> list[str]:
    git = run["git"] or {}
    commit = git.get("commit") or "unknown (not a git checkout)"
    dirty = " (uncommitted changes)" if git.get("dirty") else ""
    seed = f", seed {run['seed_index']}" if run.get("seed_index") else ""
    lines = [f"{indent}fold {run['fold']}{seed}: {run['run']}"]
    m = run["metrics"]
    lines.append(f"{indent}  metrics    mae {_num(m.get('mae'))}  acc {_num(m.get('acc'))}  ({m['path']})")
    lines.append(f"{indent}  code       commit {commit}{dirty}; ordclip code sha256 {_short(run.get('code_sha256'))}")
    wd = run.get("workdir_git")
    if wd and wd.get("commit"):
        lines.append(f"{indent}  workdir    commit {wd['commit']}{' (uncommitted changes)' if wd.get('dirty') else ''}"
                     f" ({wd.get('root')})")
    lines.append(f"{indent}  config     sha256 {_short(run['config_sha256'])}  seed {run['seed']}  device "
                 f"{run['device']}  wall {run['wall_seconds']} s")
    inputs = "  ".join(f"{k} {_short(v.get('sha256'))}" for k, v in run["inputs"].items() if "sha256" in v)
    lines.append(f"{indent}  inputs     {inputs} (sha256)")
    ck = run["checkpoint"]
    if ck:
        state = "matches" if ck["matches_file"] else "DIFFERS from"
        ck_text = f"model.pt sha256 {_short(ck['sha256'])} ({state} the file)"
    else:
        ck_text = "not recorded in run.json"
    lines.append(f"{indent}  checkpoint {ck_text}")
    versions = ", ".join(f"{k} {v}" for k, v in run["versions"].items() if v)
    lines.append(f"{indent}  versions   {versions}")
    lines.append(f"{indent}  {_dvc_text(run['dvc'])}")
    return lines


def format_text(result: dict) -> str:
    """The lineage as indented text, one block per cell and fold, then the commits it came from."""
    lines = []
    if "table" in result:
        table = result["table"]
        lines.append(f"table {table['path']}: {len(result['cells'])} cells; {_dvc_text(table['dvc'])}")
    runs = list(result.get("runs", []))
    for cell in result.get("cells", []):
        mae = cell["metrics"].get("mae", {})
        lines.append(f"cell {cell['suite']}/{cell['dataset']}/{cell['method']}: {cell['cell']}  mae "
                     f"{_num(mae.get('mean'))} ± {_num(mae.get('std'))} over {len(cell['runs'])} runs; "
                     f"{_dvc_text(cell['dvc'])}")
        for run in cell["runs"]:
            lines += _run_text(run, "  ")
        runs += cell["runs"]
    if "runs" in result:
        for run in result["runs"]:
            lines += _run_text(run, "")
    commits: dict[str, int] = {}
    for run in runs:
        git = run["git"] or {}
        key = (git.get("commit") or "unknown") + (" (uncommitted changes)" if git.get("dirty") else "")
        commits[key] = commits.get(key, 0) + 1
    lines.append("code commits: " + "; ".join(f"{c}: {n} run(s)" for c, n in commits.items()))
    return "\n".join(lines)
