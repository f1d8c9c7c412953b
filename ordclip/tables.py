"""Cells (one dataset × method: mean ± std over folds) and the tables built from them."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd

from ordclip import layout
from ordclip.config import fewshot_datasets, n_folds, suite_config
from ordclip.errors import ConfigError
from ordclip.io import atomic_path, write_json, write_text

CELL_METRICS = {
    # table metric name: (key in metrics.json, metric)
    "mae": ("test", "mae"),
    "acc": ("test", "acc"),
    "one_off_acc": ("test", "one_off_acc"),
    "qwk": ("test", "qwk"),
    "mae_test_selected": ("test_selected_test", "mae"),
    "acc_test_selected": ("test_selected_test", "acc"),
}
TABLE_COLUMNS = ["suite", "dataset", "method", "metric", "mean", "std", "n_folds"]


def make_cell(params: dict, suite: str, dataset: str, method: str) -> None:
    """Aggregate the folds' metrics.json into the cell file: mean, sample std (ddof=1), values."""
    folds = list(range(n_folds(params, suite, dataset)))
    runs = [json.loads(open(layout.run_file(suite, dataset, method, k, "metrics.json")).read()) for k in folds]
    metrics = {}
    for name, (section, key) in CELL_METRICS.items():
        values = [r[section][key] for r in runs]
        finite = [v for v in values if v is not None]
        arr = np.array(finite, dtype=np.float64)
        metrics[name] = {
            "mean": float(arr.mean()) if len(arr) else None,
            "std": float(arr.std(ddof=1)) if len(arr) > 1 else None,
            "values": values,
        }
    write_json(layout.cell_file(suite, dataset, method), {
        "suite": suite, "dataset": dataset, "method": method, "folds": folds, "n_folds": len(folds),
        "metrics": metrics,
    })


def table_grid(params: dict, suite: str, name: str) -> tuple[list[str], list[str]]:
    """(datasets, methods) of a table: table1 from the suite, table2 from its few-shot settings,
    table3 from its ablations."""
    s = suite_config(params, suite)
    if name == "table1":
        return s["datasets"], s["methods"]
    if name == "table2":
        if not s.get("fewshot"):
            raise ConfigError(f"suites.{suite}.fewshot: not set, so this suite has no table2")
        return fewshot_datasets(s), s["fewshot"]["methods"]
    if name == "table3":
        if not s.get("ablations"):
            raise ConfigError(f"suites.{suite}.ablations: not set, so this suite has no table3")
        return s["ablations"]["datasets"], s["ablations"]["methods"]
    raise ConfigError(f"unknown table {name!r} (table1 | table2 | table3)")


def read_cells(suite: str, datasets: list[str], methods: list[str]) -> pd.DataFrame:
    """The cells of a table in tidy long form: one row per cell and metric."""
    rows = []
    for dataset in datasets:
        for method in methods:
            cell = json.loads(open(layout.cell_file(suite, dataset, method)).read())
            for metric, m in cell["metrics"].items():
                rows.append({"suite": suite, "dataset": dataset, "method": method, "metric": metric,
                             "mean": m["mean"], "std": m["std"], "n_folds": cell["n_folds"]})
    return pd.DataFrame(rows, columns=TABLE_COLUMNS)


def _pm(mean: float | None, std: float | None, scale: float, digits: int) -> str:
    if mean is None:
        return "–"
    text = f"{mean * scale:.{digits}f}"
    return text + (f" ± {std * scale:.{digits}f}" if std is not None else "")


def markdown(df: pd.DataFrame, methods: list[str], datasets: list[str]) -> str:
    """The papers' wide layout: methods as rows, each dataset's MAE and Acc (%) as mean ± std."""
    header = ["method"] + [f"{d} {m}" for d in datasets for m in ("MAE", "Acc (%)")]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for method in methods:
        cells = [method]
        for d in datasets:
            for metric, scale, digits in (("mae", 1, 2), ("acc", 100, 2)):
                row = df[(df.method == method) & (df.dataset == d) & (df.metric == metric)].iloc[0]
                mean = None if pd.isna(row["mean"]) else row["mean"]
                std = None if pd.isna(row["std"]) else row["std"]
                cells.append(_pm(mean, std, scale, digits))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


TITLES = {"table1": "Table 1: methods × datasets", "table2": "Table 2: few-shot (k training images per rank)",
          "table3": "Table 3: ablations"}


def make_table(params: dict, suite: str, name: str) -> None:
    """Write results/{name}.csv (tidy long form) and .md (the papers' wide layout)."""
    s = suite_config(params, suite)
    datasets, methods = table_grid(params, suite, name)
    df = read_cells(suite, datasets, methods)
    with atomic_path(layout.table_file(name, "csv")) as tmp:
        df.to_csv(tmp, index=False)
    n = df["n_folds"].max()
    note = (f"Suite `{suite}` (backbone `{s['backbone']}`), mean ± sample std over {n} folds; test metrics of "
            f"the checkpoint selected on validation. MAE in rank units.\n\n")
    write_text(layout.table_file(name, "md"), f"# {TITLES[name]}\n\n{note}" + markdown(df, methods, datasets))
