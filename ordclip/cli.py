"""The one command line of the pipeline: ``python -m ordclip <verb> ...`` (also ``ordclip``).

Every Snakemake rule (and DVC stage) runs one of these verbs. Each reads the same params files
Snakemake merged (``--params``, in order, then ``--set KEY=VALUE``), and takes its paths from
ordclip.layout. Heavy libraries are imported by the verbs that need them only.
"""

from __future__ import annotations

import argparse
import os
import sys

from ordclip import layout
from ordclip.jobs import KEYS
from ordclip.errors import OrdclipError, Preempted


def _params(args):
    from ordclip.config import load_params, parse_set

    return load_params(args.params or ["params.yaml"], parse_set(args.set or []))


def _job(args) -> dict:
    """The job's resolved configuration: ``--job`` as Snakemake passes it, else resolved from the
    params files and the verb's keys. With ``--code``, the code about to run must have that hash."""
    import json

    from ordclip.errors import ConfigError
    from ordclip.jobs import code_hash, job_config

    keys = {k: getattr(args, k) for k in KEYS[args.verb]}
    if args.job is not None:
        if args.params or args.set or any(v is not None for v in keys.values()):
            raise ConfigError("--job replaces --params, --set and the job's keys: give one or the other")
        try:
            job = json.loads(args.job)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"--job: not valid JSON: {exc}") from None
    else:
        missing = [f"--{k}" for k, v in keys.items() if v is None and k not in OPTIONAL_KEYS]
        if missing:
            raise ConfigError(f"{args.verb} needs {', '.join(missing)} (or --job)")
        job = job_config(_params(args), args.verb, **keys)
    if args.code is not None and args.code != (now := code_hash(args.verb, job)):
        raise ConfigError(f"the ordclip code of this {args.verb} job changed after it was planned (planned "
                          f"{args.code[:12]}, now {now[:12]}); run snakemake again so it plans with the current code")
    return job


def cmd_generate(job) -> None:
    from ordclip.data.synthetic import generate

    generate(job["dataset"], layout.raw_dir(job["dataset"]["name"]))


def cmd_fetch(job) -> None:
    import importlib

    from ordclip.data.registry import DATASET_KINDS
    from ordclip.errors import ConfigError

    ds = job["dataset"]
    kind = DATASET_KINDS[ds["kind"]]
    if kind["source"] != "fetch":
        raise ConfigError(f"datasets.{ds['name']}: kind {ds['kind']!r} is not fetched (its files come from "
                          f"{kind['source']!r})")
    importlib.import_module(kind["module"]).fetch(ds, layout.raw_dir(ds["name"]))


def cmd_prepare(job) -> None:
    from ordclip.data.prepare import prepare
    from ordclip.errors import ConfigError

    d, size = job["dataset"], job["size"]
    if "sources" in job:  # a bring-your-own dataset: its images hashed once, checked before the cache is built
        from ordclip.data.sources import digest, image_hashes, write_record

        hashes = image_hashes(job["labels_csv"], job["image_root"])
        if digest(job["labels_csv"], hashes) != job["sources"]:
            raise ConfigError(f"{job['image_root']}: images or {job['labels_csv']} changed after the job was "
                              "planned; run snakemake again")
    prepare(job["labels_csv"], job["image_root"], size, job["ranks"], layout.prepared_images(d, size),
            layout.prepared_index(d, size), job["duplicates"], job["interpolation"])
    if "sources" in job:  # the CSV and images the cache was built from, for the audit
        write_record(job["labels_csv"], hashes, layout.prepared_dir(d, size))


def cmd_split(job) -> None:
    from ordclip.data.splits import write_split

    write_split(layout.prepared_index(job["data"], job["resize"]), job["fold"], job["split"],
                layout.split_file(job["suite"], job["dataset"], job["fold"]))


def cmd_backbone(job) -> None:
    from ordclip.models.backbone import write_weights

    write_weights(job["backbone"], layout.backbone_weights(job["backbone"]["name"]))


def cmd_pretrain(job) -> None:
    from ordclip.pretrain import pretrain

    pretrain(job)


def cmd_embed(job) -> None:
    from ordclip.embed import embed

    embed(job)


def cmd_train(job) -> None:
    from ordclip.train import run

    run(job)


def cmd_evaluate(job) -> None:
    from ordclip.evaluate import evaluate

    evaluate(job)


def cmd_cell(job) -> None:
    from ordclip.tables import make_cell

    make_cell(job)


def cmd_table(job) -> None:
    from ordclip.tables import make_table

    make_table(job)


def cmd_code(args) -> None:
    from ordclip.dvcstages import CODE_DIR
    from ordclip.io import write_text
    from ordclip.jobs import stamp_text

    write_text(f"{CODE_DIR}/{args.name}.json", stamp_text(args.name))


def cmd_lineage(args) -> None:
    import json

    from ordclip.lineage import format_text, lineage

    result = lineage(args.target, _params(args) if args.target.endswith(".csv") else None)
    print(json.dumps(result, indent=2) if args.json else format_text(result))


def cmd_audit(args) -> None:
    from ordclip.audit import audit, format_report

    report = audit(args.target, _params(args) if args.target.endswith(".csv") else None, sample=args.sample)
    print(format_report(report))
    if report["problems"]:
        raise AuditFailed(len(report["problems"]))


class AuditFailed(Exception):
    def __init__(self, n: int):
        super().__init__(f"{n} problem(s)")


OPTIONAL_KEYS = {"seed": "the run's seed index, 0 .. suites.<suite>.seeds - 1 (default 0; with --params)"}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ordclip", description=__doc__.split("\n\n")[0])
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--params", action="append", metavar="FILE",
                        help="params file (repeatable; merged in order; default params.yaml)")
    common.add_argument("--set", action="append", metavar="KEY=VALUE", help="top-level override, as --config")
    sub = parser.add_subparsers(dest="verb", required=True)

    def verb(name, func, help_):
        p = sub.add_parser(name, parents=[common], help=help_)
        for key in KEYS[name]:
            p.add_argument(f"--{key}", type=int if key in ("fold", "seed", "size") else str,
                           help=OPTIONAL_KEYS.get(key, "a key of the job (with --params; not with --job)"))
        p.add_argument("--job", metavar="JSON", help="the job's resolved configuration, as Snakemake passes it "
                       "(ordclip.jobs.job_config); replaces --params, --set and the keys")
        p.add_argument("--code", metavar="SHA256", help="fail unless the code this job runs has this hash "
                       "(ordclip.jobs.code_hash; Snakemake passes the hash it planned with)")
        p.set_defaults(func=func)

    verb("generate", cmd_generate, "generate a synthetic dataset's images and labels.csv")
    verb("fetch", cmd_fetch, "download or take the placed files of a dataset, verify, extract, write labels.csv")
    verb("prepare", cmd_prepare, "decode and resize images into the uint8 cache")
    verb("split", cmd_split, "write one fold's train/val/test split")
    verb("backbone", cmd_backbone, "write a backbone's weights file (random init or a verified copy)")
    verb("pretrain", cmd_pretrain, "pretrain a small backbone contrastively on a synthetic captioned corpus")
    verb("embed", cmd_embed, "cache frozen image features and rank-prompt text features")
    verb("train", cmd_train, "train (or fit) one run")
    verb("evaluate", cmd_evaluate, "metrics.json, predictions.csv and curves.csv of one run")
    verb("cell", cmd_cell, "aggregate a (dataset, method) cell over folds")
    verb("table", cmd_table, "build results/<suite>/<name>.csv, .md and .metrics.json (table1; table2: few-shot; "
         "table3: ablations; or a name of suites.<suite>.tables)")
    code = sub.add_parser("code", help="write lineage/code/NAME.json: the sha256 of every ordclip file a verb "
                          "runs (the code record DVC's stages depend on)")
    code.add_argument("name", help="a verb, or verb-module: train-coop, fetch-morph2, evaluate, ...")
    code.set_defaults(func=cmd_code)
    lin = sub.add_parser("lineage", parents=[common], help="commit, configuration, hashes and dvc.lock state behind "
                         "a table, a cell or a run")
    lin.add_argument("target", help="results/table1.csv, a cell json or a run folder")
    lin.add_argument("--json", action="store_true", help="print JSON instead of text")
    lin.set_defaults(func=cmd_lineage)
    aud = sub.add_parser("audit", parents=[common], help="re-derive every number of a table, a cell or a run from "
                         "the recorded outputs, re-hash every file against run.json and dvc.lock, and reload "
                         "checkpoints; exit 1 on any mismatch")
    aud.add_argument("target", help="results/<suite>/table1.csv, a cell json or a run folder")
    aud.add_argument("--sample", type=int, default=1, metavar="N",
                     help="checkpoints to reload per cell (0: none; default 1)")
    aud.set_defaults(func=cmd_audit)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.verb in KEYS:
            args.func(_job(args))
        else:
            args.func(args)
    except AuditFailed as exc:
        print(f"ordclip audit: FAILED: {exc}", file=sys.stderr)
        return 1
    except OrdclipError as exc:
        print(f"ordclip {args.verb}: error: {exc}", file=sys.stderr)
        return 2
    except Preempted as exc:
        print(f"ordclip {args.verb}: {exc}", file=sys.stderr)
        return exc.exit_code
    return 0


def exit_process(code: int) -> None:
    """End the process with ``code``. On success, flush stdout, stderr and logging, then leave by
    os._exit: it skips the interpreter's teardown, which after the torch imports takes about 2 s
    and writes nothing (every output file is already closed and renamed into place by the verb).
    On failure the ordinary exit runs, so nothing about an error path changes."""
    if code != 0:
        raise SystemExit(code)
    import logging

    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    os._exit(0)


def run() -> None:
    """``python -m ordclip`` and the ``ordclip`` command: :func:`main`, then :func:`exit_process`."""
    exit_process(main())
