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
TABLE_COLUMNS = ["suite", "dataset", "method", "metric", "mean", "std", "n_folds", "n_runs", "ci_low", "ci_high",
                 "var_fold", "var_seed", "device", "device_hours"]
LOWER_IS_BETTER = {"mae", "mae_max", "mae_test_selected", "mae_max_test_selected"}


def cell_runs(cell: dict) -> list[tuple[int, int]]:
    """(fold, seed index) of a cell's (or a cell job's) runs; a cell of one seed lists its folds only."""
    return [tuple(r) for r in cell.get("runs") or [(k, 0) for k in cell["folds"]]]


def make_cell(job: dict) -> None:
    """Aggregate the runs' metrics.json into the cell file (ordclip.jobs.job_config "cell"): per
    metric the run values, mean, sample std (ddof=1), 95 % t-interval and, with several seeds, the
    split/seed variance shares; the runs' training cost (run.json); and draw the cell's report
    figures (ordclip/plots.py) from the runs' predictions and logs."""
    from ordclip.plots import write_cell_figures

    cfg, folds, runs = job["run"], job["folds"], cell_runs(job)
    suite, dataset, method = cfg["suite"], cfg["dataset"]["name"], cfg["method"]["name"]
    write_cell_figures(job)
    files = [lambda name, k=k, j=j: layout.run_file(suite, dataset, method, k, name, j) for k, j in runs]
    metrics = [json.loads(Path(f("metrics.json")).read_text()) for f in files]
    records = [json.loads(Path(f("run.json")).read_text()) for f in files]
    seeds = len({j for _, j in runs})
    write_json(layout.cell_file(suite, dataset, method), {
        "suite": suite, "dataset": dataset, "method": method, "folds": folds, "n_folds": len(folds),
        "seeds": seeds, "runs": [list(r) for r in runs], "n_runs": len(runs),
        "metrics": cell_metrics(metrics, runs),
        "cost": cell_cost(records),
    })


def cell_cost(records: list[dict]) -> dict:
    """A cell's training cost from its runs' run.json: the devices they trained on and the sum of
    their train jobs' wall seconds (of the last attempt, for a run resumed after preemption)."""
    return {"devices": sorted({str(r.get("device")).split(":")[0] for r in records}),
            "seconds": round(sum(float(r.get("wall_seconds") or 0) for r in records), 2)}


def cell_metrics(runs: list[dict], keys: list[tuple[int, int]] | None = None) -> dict:
    """A cell's metrics from its runs' metrics.json (``keys``: each run's (fold, seed index); default
    one seed per fold): per table metric, the run values, their mean, sample std (ddof=1), 95 %
    t-interval over the runs that have one (ordclip.stats.t_interval), and, with several seeds,
    the variance from the split and from the seed (ordclip.stats.variance_shares)."""
    keys = keys or [(k, 0) for k in range(len(runs))]
    return {name: _summary([_at(r, path) for r in runs], keys) for name, path in CELL_METRICS.items()}


def _summary(values: list, keys: list[tuple[int, int]]) -> dict:
    """The statistics of one metric over a cell's runs (``keys``: their (fold, seed index)): mean,
    sample std, t-interval, and with several seeds the split/seed variance components."""
    from ordclip.stats import t_interval, variance_shares

    finite = [v for v in values if v is not None and np.isfinite(v)]
    arr = np.array(finite, dtype=np.float64)
    ci = t_interval(arr) if len(arr) > 1 else None
    out = {
        "mean": float(arr.mean()) if len(arr) else None,
        "std": float(arr.std(ddof=1)) if len(arr) > 1 else None,
        "ci_low": None if ci is None else ci[0], "ci_high": None if ci is None else ci[1],
        "n": len(arr), "values": values,
    }
    folds, seeds = sorted({k for k, _ in keys}), sorted({j for _, j in keys})
    if len(seeds) > 1:
        grid = np.full((len(folds), len(seeds)), np.nan)
        for (k, j), v in zip(keys, values):
            grid[folds.index(k), seeds.index(j)] = np.nan if v is None else v
        out.update(variance_shares(grid) or {"var_fold": None, "var_seed": None, "fold_share": None})
    return out


def _read_cell(suite: str, dataset: str, method: str) -> dict:
    path = layout.cell_file(suite, dataset, method)
    try:
        with open(path) as f:
            return json.load(f)
    except FileNotFoundError:
        raise ConfigError(f"{path}: cell not built (run its rule `cell` first)") from None


def _overall(suite: str, group: str, members: list[str], method: str) -> dict:
    """A group's overall cell (e.g. aesthetics over its four categories): run (fold, seed)'s value
    is the mean of the members' values of that run; then the statistics of a cell over the runs.
    Its cost is the members' summed."""
    cells = [_read_cell(suite, d, method) for d in members]
    if len({tuple(cell_runs(c)) for c in cells}) != 1:
        raise ConfigError(f"suites.{suite}.overall.{group}: its datasets have different folds or seeds")
    keys = cell_runs(cells[0])
    metrics = {}
    for name in cells[0]["metrics"]:
        per_run = np.array([[np.nan if v is None else v for v in c["metrics"][name]["values"]] for c in cells],
                           dtype=np.float64).mean(axis=0)
        metrics[name] = _summary([None if not np.isfinite(v) else float(v) for v in per_run], keys)
    cost = {"devices": sorted({d for c in cells for d in c.get("cost", {}).get("devices", [])}),
            "seconds": round(sum(c.get("cost", {}).get("seconds", 0.0) for c in cells), 2)}
    return {"n_folds": cells[0]["n_folds"], "runs": [list(r) for r in keys], "metrics": metrics, "cost": cost}


def load_cells(suite: str, datasets: list[str], methods: list[str], overall: dict[str, list[str]] | None = None,
               suites: list[str] | None = None) -> dict[tuple[str, str, str], dict]:
    """The cells of a table, {(suite, dataset, method): cell}, in the table's order: each dataset's,
    then the overall cell of each group of datasets (``suites.<s>.overall``) whose members are all
    in the table. The cells are the suite's own, or those of each of ``suites`` in turn (e.g. a
    backbone study)."""
    groups = {g: ds for g, ds in (overall or {}).items() if set(ds) <= set(datasets)}
    return {(s, d, m): (_overall(s, d, groups[d], m) if d in groups else _read_cell(s, d, m))
            for s in suites or [suite] for d in [*datasets, *groups] for m in methods}


def read_cells(suite: str, datasets: list[str], methods: list[str],
               overall: dict[str, list[str]] | None = None, suites: list[str] | None = None,
               cells: dict | None = None) -> pd.DataFrame:
    """The cells of a table (:func:`load_cells`, or ``cells``) in tidy long form: one row per cell
    and metric. ``n_runs``, ``ci_low``/``ci_high``: the runs with a value and the 95 % t-interval of
    their mean; ``var_fold``/``var_seed``: the variance from the split and from the seed (several
    seeds only); ``device_hours``: the cell's training wall time (its runs' train jobs) on ``device``."""
    rows = []
    cells = load_cells(suite, datasets, methods, overall, suites) if cells is None else cells
    for (s, dataset, method), cell in cells.items():
        cost = cell.get("cost") or {}
        for metric, m in cell["metrics"].items():
            rows.append({"suite": s, "dataset": dataset, "method": method, "metric": metric,
                         "mean": m["mean"], "std": m["std"], "n_folds": cell["n_folds"],
                         "n_runs": m.get("n"), "ci_low": m.get("ci_low"), "ci_high": m.get("ci_high"),
                         "var_fold": m.get("var_fold"), "var_seed": m.get("var_seed"),
                         "device": "+".join(cost.get("devices") or []) or None,
                         "device_hours": round(cost["seconds"] / 3600, 6) if "seconds" in cost else None})
    return pd.DataFrame(rows, columns=TABLE_COLUMNS)


# --- paired comparisons -------------------------------------------------------------------------

COMPARISON_COLUMNS = ["suite", "dataset", "metric", "method", "against", "n", "mean_diff", "ci_low", "ci_high", "p",
                      "p_holm", "worse", "p_wilcoxon", "boot_diff", "boot_ci_low", "boot_ci_high", "p_boot",
                      "boot_agrees"]
IMAGE_METRICS = ("mae", "acc", "one_off_acc")  # a mean over test images: the paired bootstrap can resample them


def image_scores(suite: str, dataset: str, method: str, fold: int, seed: int, metric: str) -> pd.Series:
    """Per test image (by index), the run's score behind ``metric``: the absolute error of the
    ``report.mae`` prediction, or whether the rounded ``report.acc`` prediction is right (within
    one rank for one_off_acc); from the run's predictions.csv and metrics.json."""
    from ordclip.errors import DataError

    metrics, path = (layout.run_file(suite, dataset, method, fold, n, seed) for n in ("metrics.json", "predictions.csv"))
    try:
        report = json.loads(Path(metrics).read_text())["report"]
        df = pd.read_csv(path, index_col="index")
    except (OSError, KeyError, ValueError) as exc:
        raise DataError(f"{metrics} / {path}: cannot read the run's report modes and test predictions ({exc}); "
                        f"the table's comparisons need them (rerun the run's evaluate)") from None
    if metric == "mae":
        return (df[f"pred_{report['mae']}"] - df["rank"]).abs()
    err = (np.rint(df[f"pred_{report['acc']}"]) - df["rank"]).abs()
    return (err <= (1 if metric == "one_off_acc" else 0)).astype(np.float64)


def comparisons(cells: dict[tuple[str, str, str], dict], metrics: list[str], groups: set[str] = frozenset()
                ) -> pd.DataFrame:
    """Every method against the best of its column (per suite, dataset and metric; the best by
    mean, the first in the table's order on ties), paired by run (fold, seed): a paired t-test
    (its 95 % interval of the mean difference method − best, ordclip.stats.paired_t), Wilcoxon's
    signed-rank p beside it, Holm's correction over every test of the table, and, where the metric
    is a mean over test images of a dataset (not an overall group), a paired bootstrap over those
    images as the check for few runs. ``worse``: significantly worse than the best after Holm."""
    from ordclip.stats import ALPHA, holm, paired_bootstrap, paired_t, wilcoxon_p

    rows = []
    columns = dict.fromkeys((s, d) for s, d, _ in cells)
    for s, d in columns:
        methods = [m for (s2, d2, m) in cells if (s2, d2) == (s, d)]
        for metric in metrics:
            if any(metric not in cells[s, d, m]["metrics"] for m in methods):
                continue  # a cell older than the metric: markdown names it
            means = {m: cells[s, d, m]["metrics"][metric]["mean"] for m in methods}
            ranked = [m for m in methods if means[m] is not None]
            if not ranked:
                continue
            sign = 1 if metric in LOWER_IS_BETTER else -1
            best = min(ranked, key=lambda m: sign * means[m])
            for m in ranked:
                if m == best:
                    continue
                a, b = (dict(zip(cell_runs(cells[s, d, x]), cells[s, d, x]["metrics"][metric]["values"]))
                        for x in (m, best))
                keys = [k for k in a if k in b and a[k] is not None and b[k] is not None]
                t = paired_t([a[k] for k in keys], [b[k] for k in keys])
                row = {"suite": s, "dataset": d, "metric": metric, "method": m, "against": best, "n": len(keys),
                       "mean_diff": float(np.mean([a[k] - b[k] for k in keys])) if keys else None,
                       "ci_low": t and t["ci_low"], "ci_high": t and t["ci_high"], "p": t and t["p"],
                       "p_wilcoxon": wilcoxon_p([a[k] for k in keys], [b[k] for k in keys])}
                if metric in IMAGE_METRICS and d not in groups and keys:
                    pairs = [pd.concat([image_scores(s, d, m, k, j, metric), image_scores(s, d, best, k, j, metric)],
                                       axis=1, join="inner") for k, j in keys]
                    boot = paired_bootstrap([x.iloc[:, 0].to_numpy() for x in pairs],
                                            [x.iloc[:, 1].to_numpy() for x in pairs])
                    if boot is not None:
                        row.update({"boot_diff": boot["diff"], "boot_ci_low": boot["ci_low"],
                                    "boot_ci_high": boot["ci_high"], "p_boot": boot["p"]})
                rows.append(row)
    df = pd.DataFrame(rows, columns=COMPARISON_COLUMNS)
    if len(df):
        df["p_holm"] = holm([None if pd.isna(p) else p for p in df["p"]])
        tested = df["p_holm"].notna()
        df["worse"] = pd.Series([None] * len(df), dtype=object)
        df.loc[tested, "worse"] = df.loc[tested, "p_holm"] < ALPHA
        both = tested & df["p_boot"].notna()
        df["boot_agrees"] = pd.Series([None] * len(df), dtype=object)
        df.loc[both, "boot_agrees"] = (df.loc[both, "p"] < ALPHA) == (df.loc[both, "p_boot"] < ALPHA)
    return df


def marks(cells: dict[tuple[str, str, str], dict], compared: pd.DataFrame, metrics: list[str]) -> set[tuple]:
    """The (suite, dataset, method, metric) shown in bold: the best of a column and every method
    not significantly worse than it (Holm-corrected paired t-test); no mark in a column where some
    method could not be tested (fewer than two paired runs)."""
    bold = set()
    for (s, d), group in compared.groupby(["suite", "dataset"], sort=False) if len(compared) else []:
        for metric in metrics:
            rows = group[group.metric == metric]
            if rows.empty or rows["p_holm"].isna().any():
                continue
            bold.add((s, d, rows["against"].iloc[0], metric))
            bold.update((s, d, r.method, metric) for r in rows.itertuples() if not r.worse)
    return bold


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


def consistency(entry: dict, values: list | None, scale: float) -> str:
    """Whether our runs (``values``, in fractions or label units; ``scale`` to the paper's unit) are
    consistent with a published number (ordclip.stats.consistent_with_published): Welch's test
    where the entry gives its std and ``runs``, else whether the published value lies in our 95 %
    t-interval; "–" with fewer than two of our runs."""
    from ordclip.stats import consistent_with_published

    ours = [v * scale for v in values or [] if v is not None]
    if len(ours) < 2:
        return "–"
    c = consistent_with_published(ours, entry["value"], entry.get("std"), entry.get("runs"))
    if c["test"] == "welch":
        return f"{'yes' if c['consistent'] else 'no'} (Welch p = {c['p']:.3g})"
    return "yes (in our 95 % CI)" if c["inside"] else "no (outside our 95 % CI)"


def comparison(df: pd.DataFrame, entries: list[dict], backbone: str | None = None,
               protocols: dict[str, dict] | None = None, cells: dict | None = None) -> str:
    """Markdown: paper, ours and ours − paper for every cell of ``df`` that has a published number.
    Ours twice: selected on validation (our headline) and on test (what the official code does);
    then the number's status, the paper's backbone for that row and the source. Where the row was
    made with another backbone than the suite's (``backbone``) or on other lists than the cell's
    dataset (``protocols``: per dataset, its values of the keys published entries' ``like.protocol``
    name), the difference column says "not comparable: <why>" (published.yaml ``like``). With the
    table's ``cells``, a column says whether ours is consistent with the paper's number
    (:func:`consistency`)."""
    lines = ["| dataset | method | metric | paper | ours | ours − paper | consistent? | ours, test-selected | status | "
             "paper's backbone | source |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
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
        suite = df["suite"].iloc[0] if "suite" in df and len(df) else None
        cell = (cells or {}).get((suite, e["dataset"], e["method"]))
        agrees = "–" if why or cell is None else consistency(e, cell["metrics"][e["metric"]]["values"], scale)
        lines.append(f"| {e['dataset']} | {e['method']} | {PUBLISHED_METRICS[e['metric']]} | "
                     f"{e['value']:.2f}{std}{unit}{mark} | {got['val']:.2f}{unit} | {diff} | {agrees} | "
                     f"{test} | {e['status']} | {' '.join(str(e.get('backbone', '–')).split())} | "
                     f"{' '.join(e['source'].split())} |")
    if len(lines) == 2:
        return ""
    return ("\n".join(lines) +
            "\n\n† not read off the paper's own table (status: see ordclip/published.yaml). \"not comparable\": the "
            "row was made with another backbone or on other lists (published.yaml `like`); where the paper does not "
            "say which backbone, the difference is given (column \"paper's backbone\"). \"consistent?\": whether the "
            "paper's number lies in the 95 % t-interval of our runs' mean (Welch's two-sample test where the paper "
            "states its number of runs, published.yaml `runs`); \"–\" with fewer than two runs.\n")


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


def _pm(mean: float | None, half: float | None, scale: float, digits: int, bold: bool = False) -> str:
    """``mean ± half-width`` of a cell in the wide table (the mean alone without an interval);
    bold: not significantly worse than the best of its column."""
    if mean is None:
        return "–"
    text = f"{mean * scale:.{digits}f}" + (f" ± {half * scale:.{digits}f}" if half is not None else "")
    return f"**{text}**" if bold else text


# a table column: its header, the scale of the mean (fractions as percent) and its digits
COLUMNS = {"mae": ("MAE", 1, 2), "acc": ("Acc (%)", 100, 2), "one_off_acc": ("1-off Acc (%)", 100, 2),
           "qwk": ("QWK", 1, 3), "ordinality": ("Ordinality (%)", 100, 2)}


def markdown(df: pd.DataFrame, methods: list[str], datasets: list[str], metrics: list[str] | None = None,
             suites: dict[str, str] | None = None, bold: set[tuple] = frozenset()) -> str:
    """The papers' wide layout: methods as rows; per dataset (and, for a table over several
    ``suites`` {suite: backbone}, per suite) its ``metrics`` (default MAE and Acc %) as the mean ±
    the half-width of its 95 % t-interval over the runs; in bold the (suite, dataset, method,
    metric) of ``bold`` (:func:`marks`).
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
                half = None if pd.isna(row["ci_low"]) else (row["ci_high"] - row["ci_low"]) / 2
                cells.append(_pm(mean, half, scale, digits, (row["suite"], d, method, metric) in bold))
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
    long form), .md (the papers' wide layout), .metrics.json (means; a table's summary) and
    .comparisons.csv (every method against the best of its column)."""
    for ext, text in table_texts(job).items():
        write_text(layout.table_file(job["suite"], job["name"], ext), text)


def _runs_note(cells: dict) -> str:
    """Over what the intervals run: "3 folds × 2 seeds = 6 runs", or per dataset where they differ."""
    def of(cell):
        runs = cell_runs(cell)
        folds, seeds = len({k for k, _ in runs}), len({j for _, j in runs})
        return f"{folds} folds" + (f" × {seeds} seeds = {len(runs)} runs" if seeds > 1 else "")

    per = {(s, d): of(c) for (s, d, _), c in cells.items()}
    if len(set(per.values())) == 1:
        return next(iter(per.values()))
    many = len({s for s, _ in per}) > 1
    return "the runs of each dataset (" + ", ".join(f"{f'{s}/' if many else ''}{d}: {n}" for (s, d), n in per.items()) + ")"


def cost_section(df: pd.DataFrame, methods: list[str], datasets: list[str], groups: set[str]) -> str:
    """Markdown: each cell's training cost in device-hours (its runs' train wall time; GPU-hours
    where the runs trained on a GPU) and the table's total per device (an overall group's cell,
    the sum of its members', is not counted twice)."""
    one = df.drop_duplicates(["suite", "dataset", "method"])
    if one["device_hours"].isna().all():
        return ""
    columns = list(dict.fromkeys(zip(one.suite, one.dataset)))
    many = len({s for s, _ in columns}) > 1
    lines = ["| method | " + " | ".join(f"{s}/{d}" if many else d for s, d in columns) + " |",
             "|" + "---|" * (len(columns) + 1)]
    for m in methods:
        hours = []
        for s, d in columns:
            row = one[(one.suite == s) & (one.dataset == d) & (one.method == m)]
            h = None if row.empty or pd.isna(row["device_hours"].iloc[0]) else row["device_hours"].iloc[0]
            hours.append("–" if h is None else f"{h:.4f}")
        lines.append(f"| {m} | " + " | ".join(hours) + " |")
    own = one[~one.dataset.isin(groups)]
    totals = own.groupby(own["device"].fillna("unknown"), sort=True)["device_hours"].sum()
    total = "; ".join(f"{h:.3f} {'GPU' if 'cuda' in dev else 'CPU' if dev == 'cpu' else dev}-hours ({dev})"
                      for dev, h in totals.items())
    return ("\n## Training cost\n\nDevice-hours per cell: the wall time of its runs' train jobs (run.json "
            "`wall_seconds`; a run resumed after preemption counts its last attempt only; embedding and pretraining "
            "are not included); GPU-hours where the runs trained on a GPU. Total of the table: " + total + ".\n\n"
            + "\n".join(lines) + "\n")


def variance_section(df: pd.DataFrame, metrics: list[str]) -> str:
    """Markdown, with several seeds: per cell, the share of the run-to-run variance of the first
    metric that comes from the split (fold) rather than the seed (ordclip.stats.variance_shares)."""
    metric = metrics[0]
    rows = df[(df.metric == metric) & df.var_seed.notna()]
    if rows.empty:
        return ""
    columns = list(dict.fromkeys(zip(rows.suite, rows.dataset)))
    many = len({s for s, _ in columns}) > 1
    lines = ["| method | " + " | ".join(f"{s}/{d}" if many else d for s, d in columns) + " |",
             "|" + "---|" * (len(columns) + 1)]
    for m in dict.fromkeys(rows.method):
        cells = []
        for s, d in columns:
            r = rows[(rows.suite == s) & (rows.dataset == d) & (rows.method == m)]
            if r.empty:
                cells.append("–")
                continue
            vf, vs = r["var_fold"].iloc[0], r["var_seed"].iloc[0]
            cells.append("–" if pd.isna(vf) or vf + vs == 0 else f"{100 * vf / (vf + vs):.0f} %")
        lines.append(f"| {m} | " + " | ".join(cells) + " |")
    return (f"\n## Where the variance comes from\n\nShare of the run-to-run variance of {COLUMNS[metric][0]} that "
            "comes from the split (fold) rather than the seed (one-way random-effects estimate, `var_fold` and "
            "`var_seed` in the CSV). A high share: more folds, not more seeds, would tighten the number.\n\n"
            + "\n".join(lines) + "\n")


def table_texts(job: dict) -> dict[str, str]:
    """The four files of a table, {"csv", "md", "metrics.json", "comparisons.csv": text}, from its
    cells and its runs' predictions (the audit builds them again and compares)."""
    from ordclip.stats import ALPHA

    suite, datasets, methods = job["suite"], job["datasets"], job["methods"]
    cells = load_cells(suite, datasets, methods, job["overall"], job["suites"])
    df = read_cells(suite, datasets, methods, cells=cells)
    datasets = list(dict.fromkeys(df["dataset"]))
    groups = {g: m for g, m in job["overall"].items() if g in datasets}
    backbones = {s: job["backbones"][s] for s in job["suites"]}  # in the table's order (the job's JSON sorts keys)
    compared = comparisons(cells, job["metrics"], set(groups))
    bold = marks(cells, compared, job["metrics"])
    body = markdown(df, methods, datasets, job["metrics"], backbones, bold)
    csv = df.to_csv(index=False)
    metrics = json.dumps(summary(df), indent=2, allow_nan=False) + "\n"
    where = (f"Suite `{suite}` (backbone `{backbones[suite]}`)" if list(backbones) == [suite] else
             "Suites " + ", ".join(f"`{s}` (backbone `{b}`)" for s, b in backbones.items()))
    note = (f"{where}, mean ± half-width of the 95 % t-interval of the mean over {_runs_note(cells)} (the sample std "
            f"is in the CSV); test metrics of the checkpoint selected on validation. MAE in label units.\n")
    note += (f"**Bold**: the best of its column and every method not significantly worse than it (paired t-test over "
             f"the runs, paired by fold and seed, Holm-corrected over the table's {compared['p_holm'].notna().sum()} "
             f"tests, α = {ALPHA:.2f}; `{job['name']}.comparisons.csv`); a column where some method has fewer than two "
             f"paired runs has no bold.\n")
    for g, members in groups.items():
        note += f"`{g}` is the mean of {', '.join(members)} (per run, then over runs).\n"
    note += variant_note(datasets) + rank_space_note(job["rank_spaces"])
    if "ordinality" in job["metrics"]:
        note += ("Ordinality: the share of comparisons of the rank prototypes' similarities that follow the rank order "
                 "(OrdinalCLIP's scripts/vis_ordinality.py, widest span), over the dataset's own ranks (MORPH II: "
                 "16..77; the official script slices 15..75); NumCLIP's counts its 5 bins, not comparable.\n")
    entries = published()
    beside = ""
    for s, b in backbones.items():  # each suite's cells beside the rows made like them (published.yaml `like`)
        part = comparison(df[df.suite == s], entries, b, job.get("protocols"), cells)
        if part:
            beside += (f"\n### Suite `{s}` (backbone `{b}`)\n\n" if len(backbones) > 1 else "\n") + part
    if beside:
        beside = ("\n## Published numbers beside ours\n" + beside + "\n"
                  + report_note(job.get("reports") or {}, df, entries))
    md = f"# {job['title']}\n\n{note}\n{body}{variance_section(df, job['metrics'])}{cost_section(df, methods, datasets, set(groups))}{beside}"
    return {"csv": csv, "md": md, "metrics.json": metrics, "comparisons.csv": compared.to_csv(index=False)}
