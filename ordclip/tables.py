"""Cells (one dataset × method: mean ± std over folds) and the tables built from them."""

from __future__ import annotations

import json

from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from ordclip import layout
from ordclip.errors import ConfigError
from ordclip.io import write_json, write_text

CELL_METRICS = {
    # table metric name: its path in metrics.json
    "mae": ("test", "mae"),            # the method's report.mae mode (expectation; NumCLIP's regressor on age)
    "acc": ("test", "acc"),
    "one_off_acc": ("test", "one_off_acc"),
    "qwk": ("test", "qwk"),
    # the argmax's MAE beside it: the official runners log both (OrdinalCLIP runner/runner.py:66-68);
    # None where the method has no rank logits (NumCLIP regressing age)
    "mae_max": ("val_selected", "test", "max", "mae"),
    "mae_test_selected": ("test_selected_test", "mae"),
    "acc_test_selected": ("test_selected_test", "acc"),
    "mae_max_test_selected": ("test_selected", "test", "max", "mae"),
    # fraction of the val-selected candidate's prototype comparisons that obey the rank order
    # (ordclip.metrics.prototype_ordinality; OrdinalCLIP's Figure 3)
    "ordinality": ("ordinality", "val_selected"),
}


def _at(record: dict, path: tuple[str, ...]):
    """The value at ``path`` of a metrics.json. A per-mode path (selection, part, mode, metric) gives
    None where the record lacks it (a run without rank logits has no ``max``); a missing headline
    section is an error."""
    for key in path:
        if len(path) == 4 and key not in record:
            return None
        record = record[key]
    return record
TABLE_COLUMNS = ["suite", "dataset", "method", "metric", "mean", "std", "n_folds"]


def make_cell(job: dict) -> None:
    """Aggregate the folds' metrics.json into the cell file (ordclip.jobs.job_config "cell"): mean,
    sample std (ddof=1), values; and draw the cell's report figures (ordclip/plots.py) from the
    folds' predictions and logs."""
    from ordclip.plots import write_cell_figures

    cfg, folds = job["run"], job["folds"]
    suite, dataset, method = cfg["suite"], cfg["dataset"]["name"], cfg["method"]["name"]
    write_cell_figures(job)
    runs = [json.loads(Path(layout.run_file(suite, dataset, method, k, "metrics.json")).read_text()) for k in folds]
    write_json(layout.cell_file(suite, dataset, method), {
        "suite": suite, "dataset": dataset, "method": method, "folds": folds, "n_folds": len(folds),
        "metrics": cell_metrics(runs),
    })


def cell_metrics(runs: list[dict]) -> dict:
    """A cell's metrics from its folds' metrics.json: per table metric, the fold values, their mean
    and sample std (ddof=1) over the folds that have one."""
    metrics = {}
    for name, path in CELL_METRICS.items():
        values = [_at(r, path) for r in runs]
        finite = [v for v in values if v is not None]
        arr = np.array(finite, dtype=np.float64)
        metrics[name] = {
            "mean": float(arr.mean()) if len(arr) else None,
            "std": float(arr.std(ddof=1)) if len(arr) > 1 else None,
            "values": values,
        }
    return metrics


def _read_cell(suite: str, dataset: str, method: str) -> dict:
    path = layout.cell_file(suite, dataset, method)
    try:
        with open(path) as f:
            return json.load(f)
    except FileNotFoundError:
        raise ConfigError(f"{path}: cell not built (run its rule `cell` first)") from None


def _overall(suite: str, group: str, members: list[str], method: str) -> dict:
    """A group's overall cell (e.g. aesthetics over its four categories): fold k's value is the
    mean of the members' fold-k values; then mean and sample std over folds, as for a cell."""
    cells = [_read_cell(suite, d, method) for d in members]
    if len({c["n_folds"] for c in cells}) != 1:
        raise ConfigError(f"suites.{suite}.overall.{group}: its datasets have different numbers of folds")
    metrics = {}
    for name in cells[0]["metrics"]:
        per_fold = np.array([c["metrics"][name]["values"] for c in cells], dtype=np.float64)
        values = per_fold.mean(axis=0)
        finite = values[np.isfinite(values)]
        metrics[name] = {"mean": float(finite.mean()) if len(finite) else None,
                         "std": float(finite.std(ddof=1)) if len(finite) > 1 else None}
    return {"n_folds": cells[0]["n_folds"], "metrics": metrics}


def read_cells(suite: str, datasets: list[str], methods: list[str],
               overall: dict[str, list[str]] | None = None, suites: list[str] | None = None) -> pd.DataFrame:
    """The cells of a table in tidy long form: one row per cell and metric; then the overall rows
    of each group of datasets (``suites.<s>.overall``) whose members are all in the table. The
    cells are the suite's own, or those of each of ``suites`` in turn (e.g. a backbone study)."""
    rows = []
    groups = {g: ds for g, ds in (overall or {}).items() if set(ds) <= set(datasets)}
    for s in suites or [suite]:
        for dataset in [*datasets, *groups]:
            for method in methods:
                cell = (_overall(s, dataset, groups[dataset], method) if dataset in groups
                        else _read_cell(s, dataset, method))
                for metric, m in cell["metrics"].items():
                    rows.append({"suite": s, "dataset": dataset, "method": method, "metric": metric,
                                 "mean": m["mean"], "std": m["std"], "n_folds": cell["n_folds"]})
    return pd.DataFrame(rows, columns=TABLE_COLUMNS)


PUBLISHED = Path(__file__).with_name("published.yaml")


STATUSES = ("FT-IMG", "FT-PAGE", "FT-ABS", "MAINT", "USER", "SEC", "TER")
PUBLISHED_METRICS = {"mae": "MAE", "acc": "Acc", "ordinality": "Ordinality"}  # acc, ordinality: percent


def published(path: str | Path = PUBLISHED) -> list[dict]:
    """The numbers the papers report (ordclip/published.yaml), each with its source and status."""
    entries = yaml.safe_load(Path(path).read_text()) or []
    for i, e in enumerate(entries):
        missing = {"dataset", "method", "metric", "value", "source", "status", "checked"} - set(e)
        if missing or e["metric"] not in PUBLISHED_METRICS or e["status"] not in STATUSES:
            raise ConfigError(f"{path}: entry {i} ({e.get('dataset')}/{e.get('method')}): missing {sorted(missing)}, "
                              f"or metric not {'|'.join(PUBLISHED_METRICS)}, or status not one of {'|'.join(STATUSES)}")
    return entries


def protocol_keys(entries: list[dict] | None = None) -> list[str]:
    """The dataset keys that published rows' ``like.protocol`` name (e.g. ``lists``)."""
    entries = published() if entries is None else entries
    return sorted({k for e in entries for k in ((e.get("like") or {}).get("protocol") or {})})


# backbones of published rows that no suite runs (published.yaml `like.backbone`), in words
PAPER_BACKBONES = {"vgg16_imdbwiki": "VGG-16 initialised on IMDB-WIKI", "vgg16_imagenet": "ImageNet VGG-16"}
REPORT_WORDS = {"exp": "the expectation over the rank softmax", "max": "the argmax", "value": "the regressed value",
                "bins": "the bin-based value Σ p_k·a_k"}


def unlike(entry: dict, backbone: str | None, protocol: dict | None) -> str | None:
    """Why a published row is not like our cell (``backbone``: the suite's; ``protocol``: the cell's
    dataset values of the keys the entry's ``like.protocol`` names), or None where it is (or where
    the row does not say)."""
    like = entry.get("like") or {}
    theirs = like.get("backbone")
    if theirs is not None and backbone is not None and theirs != backbone:
        return (f"not comparable: the paper's row used {PAPER_BACKBONES.get(theirs, theirs)}, this suite "
                f"`{backbone}`")
    wanted = like.get("protocol") or {}
    ours = {k: (protocol or {}).get(k) for k in wanted}
    if protocol is not None and ours != wanted:
        differ = ", ".join(f"{k}: {ours[k]!r} (the row's {wanted[k]!r})" for k in wanted if ours[k] != wanted[k])
        return f"not comparable: {like.get('why', 'another protocol')}; this cell has {differ}"
    return None


def comparison(df: pd.DataFrame, entries: list[dict], backbone: str | None = None,
               protocols: dict[str, dict] | None = None) -> str:
    """Markdown: paper, ours and ours − paper for every cell of ``df`` that has a published number.
    Ours twice: selected on validation (our headline) and on test (what the official code does);
    then the number's status, the paper's backbone for that row and the source. Where the row was
    made with another backbone than the suite's (``backbone``) or on other lists than the cell's
    dataset (``protocols``: per dataset, its values of the keys published entries' ``like.protocol``
    name), the difference column says "not comparable: <why>" (published.yaml ``like``)."""
    lines = ["| dataset | method | metric | paper | ours | ours − paper | ours, test-selected | status | "
             "paper's backbone | source |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for e in entries:
        scale = 1 if e["metric"] == "mae" else 100
        got = {}
        for key, metric in (("val", e["metric"]), ("test", f"{e['metric']}_test_selected")):
            row = df[(df.dataset == e["dataset"]) & (df.method == e["method"]) & (df.metric == metric)]
            got[key] = None if row.empty or pd.isna(row["mean"].iloc[0]) else row["mean"].iloc[0] * scale
        if got["val"] is None:
            continue
        unit = "" if e["metric"] == "mae" else " %"
        mark = "" if e["checked"] else " †"
        std = f" ± {e['std']:.2f}" if e.get("std") is not None else ""
        test = "–" if got["test"] is None else f"{got['test']:.2f}{unit}"
        why = unlike(e, backbone, None if protocols is None else protocols.get(e["dataset"], {}))
        diff = why or f"{got['val'] - e['value']:+.2f}"
        lines.append(f"| {e['dataset']} | {e['method']} | {PUBLISHED_METRICS[e['metric']]} | "
                     f"{e['value']:.2f}{std}{unit}{mark} | {got['val']:.2f}{unit} | {diff} | "
                     f"{test} | {e['status']} | {' '.join(str(e.get('backbone', '–')).split())} | "
                     f"{' '.join(e['source'].split())} |")
    if len(lines) == 2:
        return ""
    return ("\n".join(lines) +
            "\n\n† not read off the paper's own table (status: see ordclip/published.yaml). \"not comparable\": the "
            "row was made with another backbone or on other lists (published.yaml `like`); where the paper does not "
            "say which backbone, the difference is given (column \"paper's backbone\").\n")


def report_note(reports: dict[str, dict[str, str]], df: pd.DataFrame, entries: list[dict]) -> str:
    """Which of our MAEs the published MAE column is compared with: each method's ``report.mae`` mode
    (``reports``: {dataset: {method: mode}}), for the methods that have a published MAE here."""
    shown = {(e["dataset"], e["method"]) for e in entries if e["metric"] == "mae"}
    modes: dict[str, list[str]] = {}
    for d, per_method in reports.items():
        for m, mode in per_method.items():
            if (d, m) in shown and not df[(df.dataset == d) & (df.method == m)].empty:
                modes.setdefault(mode, []).append(f"{m} ({d})" if len(reports) > 1 else m)
    if not modes:
        return ""
    which = "; ".join(f"{REPORT_WORDS.get(mode, mode)} (`{mode}`): {', '.join(dict.fromkeys(ms))}"
                      for mode, ms in modes.items())
    return ("The paper's MAE is compared with our `mae`, each method's `report.mae`: " + which + ". Which of "
            "their logged MAEs the papers print is not stated (OrdinalCLIP's runner logs the expectation's and the "
            "argmax's, runner/runner.py:66-68; its checkpoint monitor is the argmax's, scripts/run.py:111-112): "
            "`mae_max` in the CSV is the argmax's, our choice of headline is the expectation.\n")


def rank_space_note(rank_spaces: dict[str, dict[str, list[int]]]) -> str:
    """One line per dataset on which some methods run in a rank space of their own
    (datasets.<name>.rank_spaces, e.g. OrdinalCLIP's 101 ranks on MORPH II); ``rank_spaces``:
    {dataset: {method: [lowest, highest rank]}} (ordclip.jobs.job_config "table")."""
    lines = []
    for d, per_method in rank_spaces.items():
        by_space: dict[str, list[str]] = {}
        for m, space in per_method.items():
            by_space.setdefault(f"{space[0]}..{space[1]}", []).append(m)
        if len(by_space) > 1:
            lines.append(f"`{d}`: ranks " + "; ".join(f"{s} ({', '.join(ms)})" for s, ms in by_space.items())
                         + " (each method's official rank space; MAE in label units either way).\n")
    return "".join(lines)


def _pm(mean: float | None, std: float | None, scale: float, digits: int) -> str:
    if mean is None:
        return "–"
    text = f"{mean * scale:.{digits}f}"
    return text + (f" ± {std * scale:.{digits}f}" if std is not None else "")


# a table column: its header, the scale of the mean (fractions as percent) and its digits
COLUMNS = {"mae": ("MAE", 1, 2), "acc": ("Acc (%)", 100, 2), "one_off_acc": ("1-off Acc (%)", 100, 2),
           "qwk": ("QWK", 1, 3), "ordinality": ("Ordinality (%)", 100, 2)}


def markdown(df: pd.DataFrame, methods: list[str], datasets: list[str], metrics: list[str] | None = None,
             suites: dict[str, str] | None = None) -> str:
    """The papers' wide layout: methods as rows; per dataset (and, for a table over several
    ``suites`` {suite: backbone}, per suite) its ``metrics`` (default MAE and Acc %) as mean ± std.
    Written row by row rather than by DataFrame.to_markdown: tabulate pads every column to its widest
    cell, so one wider value would rewrite every line of a table kept in git (it renders the same)."""
    metrics = metrics or ["mae", "acc"]
    many = suites is not None and len(suites) > 1
    columns = [(d, s) for d in datasets for s in (suites if many else [None])]
    header = ["method"] + [f"{d}{f' ({s}: {suites[s]})' if s else ''} {COLUMNS[m][0]}" for d, s in columns
                           for m in metrics]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for method in methods:
        cells = [method]
        for d, s in columns:
            for metric in metrics:
                _, scale, digits = COLUMNS[metric]
                found = df[(df.method == method) & (df.dataset == d) & (df.metric == metric)
                           & ((df.suite == s) if s else True)]
                if found.empty:
                    raise ConfigError(f"cell {s or df.suite.iloc[0]}/{d}/{method} has no metric {metric!r} "
                                      f"(its cell file predates that metric: rebuild the cell)")
                row = found.iloc[0]
                mean = None if pd.isna(row["mean"]) else row["mean"]
                std = None if pd.isna(row["std"]) else row["std"]
                cells.append(_pm(mean, std, scale, digits))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def summary(df: pd.DataFrame) -> dict:
    """DVC's metrics summary of a table: {dataset: {method: {metric: mean}}}, under the suite's
    name first where the table shows several suites."""
    out: dict = {}
    many = df["suite"].nunique() > 1
    for row in df.itertuples():
        top = out.setdefault(row.suite, {}) if many else out
        top.setdefault(row.dataset, {}).setdefault(row.method, {})[row.metric] = (
            None if pd.isna(row.mean) else float(row.mean))
    return out


def variant_note(datasets: list[str]) -> str:
    """What the variant datasets of a table are (few-shot, label-distribution shift)."""
    from ordclip.config import FEWSHOT, SHIFT

    notes = []
    if any(FEWSHOT.match(d) for d in datasets):
        notes.append("`<dataset>-<k>shot`: each fold's train part keeps k images per rank (OrdinalCLIP's few-shot "
                     "sampling); val and test are the full dataset's.\n")
    if any(SHIFT.match(d) for d in datasets):
        notes.append("`<dataset>-top<c>keep<p>`: label-distribution shift; in each fold's train part the c ranks with "
                     "the most images keep p % of them (OrdinalCLIP's `num_topk_scaled_class` c, `scale_factor` p/100; "
                     "its table's column \"c-(100-p)\"); val and test are unchanged.\n")
    return "".join(notes)


def make_table(job: dict) -> None:
    """Write a suite's table (ordclip.jobs.job_config "table"): results/{suite}/{name}.csv (tidy
    long form), .md (the papers' wide layout) and .metrics.json (means; a table's summary)."""
    for ext, text in table_texts(job).items():
        write_text(layout.table_file(job["suite"], job["name"], ext), text)


def table_texts(job: dict) -> dict[str, str]:
    """The three files of a table, {"csv", "md", "metrics.json": text}, from its cells (the audit
    builds them again and compares)."""
    suite, datasets, methods = job["suite"], job["datasets"], job["methods"]
    df = read_cells(suite, datasets, methods, job["overall"], job["suites"])
    datasets = list(dict.fromkeys(df["dataset"]))
    backbones = {s: job["backbones"][s] for s in job["suites"]}  # in the table's order (the job's JSON sorts keys)
    body = markdown(df, methods, datasets, job["metrics"], backbones)
    csv = df.to_csv(index=False)
    metrics = json.dumps(summary(df), indent=2, allow_nan=False) + "\n"
    folds = df.groupby(["suite", "dataset"], sort=False)["n_folds"].max()
    many = df["suite"].nunique() > 1
    over = (f"{folds.iloc[0]} folds" if folds.nunique() == 1 else
            "the folds of each dataset (" + ", ".join(f"{f'{s}/' if many else ''}{d}: {n}"
                                                      for (s, d), n in folds.items()) + ")")
    where = (f"Suite `{suite}` (backbone `{backbones[suite]}`)" if list(backbones) == [suite] else
             "Suites " + ", ".join(f"`{s}` (backbone `{b}`)" for s, b in backbones.items()))
    note = (f"{where}, mean ± sample std over {over}; test metrics of the checkpoint selected on validation. "
            f"MAE in label units.\n")
    groups = {g: m for g, m in job["overall"].items() if g in datasets}
    for g, members in groups.items():
        note += f"`{g}` is the mean of {', '.join(members)} (per fold, then over folds).\n"
    note += variant_note(datasets) + rank_space_note(job["rank_spaces"])
    if "ordinality" in job["metrics"]:
        note += ("Ordinality: the share of comparisons of the rank prototypes' similarities that follow the rank order "
                 "(OrdinalCLIP's scripts/vis_ordinality.py, widest span), over the dataset's own ranks (MORPH II: "
                 "16..77; the official script slices 15..75); NumCLIP's counts its 5 bins, not comparable.\n")
    entries = published()
    compared = ""
    for s, b in backbones.items():  # each suite's cells beside the rows made like them (published.yaml `like`)
        part = comparison(df[df.suite == s], entries, b, job.get("protocols"))
        if part:
            compared += (f"\n### Suite `{s}` (backbone `{b}`)\n\n" if len(backbones) > 1 else "\n") + part
    if compared:
        compared = ("\n## Published numbers beside ours\n" + compared + "\n"
                    + report_note(job.get("reports") or {}, df, entries))
    return {"csv": csv, "md": f"# {job['title']}\n\n{note}\n{body}{compared}", "metrics.json": metrics}
