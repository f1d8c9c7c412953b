# Shared helpers: parameter validation, the CLI's --params arguments, targets and job resources.
import functools
import sys

from snakemake.exceptions import WorkflowError

from ordclip import layout as L
from ordclip.config import (
    backbone_config,
    check,
    check_configfiles,
    check_folds,
    check_sources,
    dataset_config,
    raw_source,
    runs_of,
    run_config,
    suite_config,
    table_spec,
    validate_schema,
)
from ordclip.data.registry import DATASET_KINDS
from ordclip.errors import ConfigError
from ordclip.jobs import KEYS, code_hash, job_config, job_json
from ordclip.methods import METHODS
from ordclip.otherrun import other_run_message
from ordclip.repair import repair_count

try:  # --configfile values, workflow/schemas/params.schema.yaml, cross-checks, the user's files, the folds
    check_configfiles(workflow.overwrite_configfiles)
    validate_schema(config)
    check(config)
    check_sources(config)
    check_folds(config)
except ConfigError as exc:
    raise WorkflowError(str(exc))

SUITE = config["suite"]

if workflow.is_main_process and (other_run := other_run_message()):
    print(other_run, file=sys.stderr)

# At SLURM preemption or time limit every process of a job gets SIGTERM. Without a trap, the job
# shell dies at once and Snakemake ends the job step while training still writes its checkpoint;
# with it, bash waits for the command (training checkpoints, then exits 128 + the signal number)
# and exits with the command's status.
shell.prefix("set -euo pipefail; trap : TERM USR1; ")


@functools.lru_cache(maxsize=None)
def _job(verb, keys):
    job = job_config(config, verb, **dict(keys))
    return job_json(job), code_hash(verb, job)


KEYS_FROM_RUN = {"train": ("run",), "evaluate": ("run",)}  # rules whose fold and seed are the {run} wildcard


def job_params(verb):
    """A rule's params: its job's resolved configuration as JSON (ordclip.jobs.job_config), the
    sha256 of the ordclip code the job runs, and how often its files were found broken. Snakemake
    reruns a job when any changes; the names and order of the params files that supplied the values
    do not matter."""
    def keys(wc):
        """The job's keys from its wildcards; a run's fold and seed index from its folder name."""
        if "run" in KEYS_FROM_RUN.get(verb, ()):
            fold, seed = L.parse_run(wc.run)
            return tuple((k, wc[k]) for k in KEYS[verb][:3]) + (("fold", str(fold)), ("seed", str(seed)))
        return tuple((k, wc[k]) for k in KEYS[verb])

    def repair(wildcards):
        """Grows when the job's files are found broken, so Snakemake reruns it (ordclip/repair.py).
        It takes the wildcards only: Snakemake compares no parameter derived from input or output."""
        this = workflow.get_rule(verb)
        inputs, outputs = this.expand_input(wildcards)[0], this.expand_output(wildcards)[0]
        key = [str(v) for k, v in keys(wildcards) if not (k == "seed" and v == "0")]  # seed 0: the key before seeds
        return repair_count(verb, "-".join(key), list(inputs), list(outputs))

    return {"job": lambda wc: _job(verb, keys(wc))[0], "code": lambda wc: _job(verb, keys(wc))[1], "repair": repair}


def ordclip_shell(verb):
    """The shell command of every rule: one CLI verb run with its job's configuration and code hash."""
    return f"python -m ordclip {verb} --job {{params.job:q}} --code {{params.code}} > {{log}} 2>&1"


def datasets_from(source):
    """Names of the datasets whose raw files come from ``source`` (generate | fetch | csv)."""
    return [n for n, d in config["datasets"].items() if DATASET_KINDS[d["kind"]]["source"] == source]


GENERATED, FETCHED = datasets_from("generate"), datasets_from("fetch")


def prepare_input(wc):
    """The raw files of a dataset: the user's CSV for kind csv (its images are read where they
    are), else the data/raw/<dataset> folder that generate or fetch writes."""
    if dataset_config(config, wc.dataset)["kind"] == "csv":
        return raw_source(config, wc.dataset)[0]
    return L.raw_dir(wc.dataset)


def data_of(dataset):
    """The dataset whose images ``dataset`` uses (a few-shot variant uses its base's)."""
    return dataset_config(config, dataset)["data"]


def prepared_index_of(wc):
    return L.prepared_index(data_of(wc.dataset), suite_backbone(wc.suite)["resize"])


def suite_backbone(suite):
    return backbone_config(config, suite_config(config, suite)["backbone"])


def trains_on(suite, dataset, method):
    return METHODS[run_config(config, suite, dataset, method)["method"]["kind"]]["trains_on"]


def uses_gpu(suite):
    return 1 if suite_config(config, suite).get("device", "auto") == "cuda" else 0


def table_cells(suite, name):
    """The cell files of results/<suite>/<name>.csv (ordclip.config.table_spec): table1, table2
    (few-shot), table3 (ablations) or one of suites.<suite>.tables, from this suite or the suites
    the table lists."""
    try:
        spec = table_spec(config, suite, name)
    except ConfigError as exc:
        raise WorkflowError(str(exc))
    return [L.cell_file(s, d, m) for s in spec["suites"] for d in spec["datasets"] for m in spec["methods"]]


def train_inputs(wc):
    bb = suite_backbone(wc.suite)
    inputs = {
        "images": L.prepared_images(data_of(wc.dataset), bb["resize"]),
        "index": L.prepared_index(data_of(wc.dataset), bb["resize"]),
        "split": L.split_file(wc.suite, wc.dataset, L.parse_run(wc.run)[0]),
        "weights": L.backbone_weights(bb["name"]),
    }
    if trains_on(wc.suite, wc.dataset, wc.method) == "features":
        inputs["features"] = L.features(wc.suite, data_of(wc.dataset))
    return inputs


def embed_inputs(wc):
    """The image cache and index of the dataset at the suite backbone's size, and its weights."""
    bb = suite_backbone(wc.suite)
    return {
        "images": L.prepared_images(wc.dataset, bb["resize"]),
        "index": L.prepared_index(wc.dataset, bb["resize"]),
        "weights": L.backbone_weights(bb["name"]),
    }


def cell_inputs(wc):
    """The recorded files of every run (fold, seed) of a (suite, dataset, method) cell."""
    return [
        L.run_file(wc.suite, wc.dataset, wc.method, k, name, j)
        for k, j in runs_of(config, wc.suite, wc.dataset)
        for name in ("metrics.json", "predictions.csv", "log.jsonl", "outputs.npz", "run.json")
    ]


def table_inputs(wc):
    """The cell files of results/<suite>/<name>.csv (table_cells), and the predictions.csv and
    metrics.json of their runs (the paired bootstrap of ordclip.tables.comparisons reads them)."""
    spec = table_spec(config, wc.suite, wc.name)
    runs = [
        L.run_file(s, d, m, k, name, j)
        for s in spec["suites"]
        for d in spec["datasets"]
        for m in spec["methods"]
        for k, j in runs_of(config, s, d)
        for name in ("predictions.csv", "metrics.json")
    ]
    return table_cells(wc.suite, wc.name) + runs


def train_gpu(wc):
    return uses_gpu(wc.suite) if trains_on(wc.suite, wc.dataset, wc.method) == "images" else 0


# Job resources, in Snakemake's standard names; --executor slurm turns them into sbatch options
# (gpu: --gpus, cpus_per_gpu: --cpus-per-gpu, runtime: --time in minutes, mem_mb: --mem). Sizes
# suit the paper suite (ViT-B/16, one GPU per run); each job's measured time and peak memory are
# in its benchmark file (benchmark_file). Site values (account, partitions) live in the user's own
# profile (profiles/slurm/site-template.yaml), never here. A retry gets more memory but not more
# time: training resumes from its checkpoint, so each attempt continues where the last one stopped.
CPUS_PER_GPU = 4

# SLURM sends SIGTERM 2 minutes before a train job's time limit: training checkpoints and exits, and
# the retry resumes. A site's set-resources for `train` that sets slurm_extra replaces this: keep
# '--signal=TERM@120' in it.
TRAIN_SLURM_EXTRA = "'--signal=TERM@120'"


def benchmark_file(log):
    """The benchmark TSV of a job (wall time, peak memory: Snakemake's `benchmark:`) beside its log
    path: logs/X.log -> benchmarks/X.tsv. Not a DVC output (ordclip/dvcstages.py records job.output)."""
    name = log.removeprefix("logs/").removesuffix(".log")
    return f"benchmarks/{name}.tsv"


def embed_gpu(wc):
    return uses_gpu(wc.suite)


def embed_cpus_per_gpu(wc):
    return CPUS_PER_GPU if embed_gpu(wc) else 0


def embed_threads(wc):
    return embed_cpus_per_gpu(wc) or 1


def embed_mem_mb(wc, attempt):
    return (16000 if embed_gpu(wc) else 8000) * attempt


def train_cpus_per_gpu(wc):
    return CPUS_PER_GPU if train_gpu(wc) else 0


def train_threads(wc):
    """Snakemake sets OMP_NUM_THREADS to a job's threads: as many as the CPUs beside its GPU."""
    return train_cpus_per_gpu(wc) or 1


def train_runtime(wc):
    """Minutes: 12 h for a run on a GPU; 2 h for one on the CPU (feature-based methods, CPU suites)."""
    return 720 if train_gpu(wc) else 120


def train_mem_mb(wc, attempt):
    return (32000 if train_gpu(wc) else 4000) * attempt


def prepare_mem_mb(wc, attempt):
    """The image cache is written through a memory map (Adience at 256 px: 3.8 GB on disk), so the
    job holds about one decoded image at a time; 8 GB leaves room for the page cache's dirty pages."""
    return 8000 * attempt


wildcard_constraints:
    suite=r"[A-Za-z0-9][A-Za-z0-9_-]*",
    dataset=r"[A-Za-z0-9][A-Za-z0-9_-]*",
    method=r"[A-Za-z0-9][A-Za-z0-9_-]*",
    fold=r"\d+",
    run=L.RUN_NAME,
    size=r"\d+",
