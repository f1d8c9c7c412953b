"""Where every file of the pipeline lives. Snakemake rules and the CLI both take paths from here."""

from __future__ import annotations

DATA = "data"
RESULTS = "results"


def raw_dir(dataset: str) -> str:
    return f"{DATA}/raw/{dataset}"


def raw_labels(dataset: str) -> str:
    return f"{raw_dir(dataset)}/labels.csv"


def prepared_dir(dataset: str, px: int | str) -> str:
    return f"{DATA}/prepared/{dataset}/{px}px"


def prepared_images(dataset: str, px: int | str) -> str:
    return f"{prepared_dir(dataset, px)}/images.npy"


def prepared_index(dataset: str, px: int | str) -> str:
    return f"{prepared_dir(dataset, px)}/index.csv"


def backbone_weights(backbone: str) -> str:
    return f"{DATA}/weights/{backbone}.pt"


def split_file(suite: str, dataset: str, fold: int | str) -> str:
    return f"{RESULTS}/{suite}/splits/{dataset}/fold{fold}.csv"


def features(suite: str, dataset: str) -> str:
    return f"{RESULTS}/{suite}/embed/{dataset}/features.npz"


RUN_NAME = r"fold\d+(?:-seed[1-9]\d*)?"  # the {run} wildcard of the train and evaluate rules


def run_name(fold: int | str, seed: int | str = 0) -> str:
    """A run's folder name: ``fold<k>`` for a suite's first seed (as before seeds existed), else
    ``fold<k>-seed<j>`` (j: the seed's index, 1 .. suites.<suite>.seeds - 1)."""
    return f"fold{fold}" + (f"-seed{seed}" if str(seed) != "0" else "")


def parse_run(name: str) -> tuple[int, int]:
    """(fold, seed index) of a run folder name (:func:`run_name`)."""
    fold, _, seed = name.removeprefix("fold").partition("-seed")
    return int(fold), int(seed or 0)


def run_path(suite: str, dataset: str, method: str, run: str, name: str | None = None) -> str:
    """A run's folder from its name (a pattern's ``{run}`` in the rules), or file ``name`` in it."""
    return f"{RESULTS}/{suite}/runs/{dataset}/{method}/{run}" + (f"/{name}" if name else "")


def run_dir(suite: str, dataset: str, method: str, fold: int | str, seed: int | str = 0) -> str:
    return run_path(suite, dataset, method, run_name(fold, seed))


RUN_TRAIN_FILES = ("model.pt", "outputs.npz", "log.jsonl", "run.json")
RUN_EVAL_FILES = ("metrics.json", "predictions.csv", "curves.csv")


def run_file(suite: str, dataset: str, method: str, fold: int | str, name: str, seed: int | str = 0) -> str:
    return f"{run_dir(suite, dataset, method, fold, seed)}/{name}"


def cell_file(suite: str, dataset: str, method: str) -> str:
    return f"{RESULTS}/{suite}/cells/{dataset}/{method}.json"


def log_file(suite: str, step: str, *parts: str | int) -> str:
    """A job's stderr log; suite-independent data steps use the suite name "data"."""
    return f"logs/{suite}/{step}/" + "/".join(str(p) for p in parts) + ".log"


TABLES = ("table1", "table2", "table3")  # also copied to results/ for the default suite
TABLE_NAME = r"[A-Za-z][A-Za-z0-9_]*"  # those, and the names of suites.<suite>.tables


def table_file(suite: str, name: str, ext: str) -> str:
    """A suite's table: results/{suite}/table1.csv, .md, and .metrics.json (DVC's summary)."""
    return f"{RESULTS}/{suite}/{name}.{ext}"


def default_table(name: str, ext: str) -> str:
    """results/table1.csv, ...: a copy of the table of the suite named by ``suite:`` (the default)."""
    return f"{RESULTS}/{name}.{ext}"


def downloads_dir() -> str:
    """Verified downloads (archives, list files), kept so a re-fetch does not download again."""
    return f"{DATA}/downloads"


CELL_FIGURES = ("confusion", "mae_per_rank", "pred_vs_true", "curves", "prototype_similarity")


def cell_figure(suite: str, dataset: str, method: str, name: str) -> str:
    """A report figure of a cell: results/{suite}/cells/{dataset}/{method}/{name}.png."""
    return f"{RESULTS}/{suite}/cells/{dataset}/{method}/{name}.png"


def pretrain_dir(backbone: str) -> str:
    """A pretrained backbone's records beside its weights: log.jsonl, samples.png, corpus.json."""
    return f"{DATA}/pretrain/{backbone}"


def pretrain_file(backbone: str, name: str) -> str:
    return f"{pretrain_dir(backbone)}/{name}"
