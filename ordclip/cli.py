"""The one command line of the pipeline: ``python -m ordclip <verb> ...`` (also ``ordclip``).

Every Snakemake rule (and DVC stage) runs one of these verbs. Each reads the same params files
Snakemake merged (``--params``, in order, then ``--set KEY=VALUE``), and takes its paths from
ordclip.layout. Heavy libraries are imported by the verbs that need them only.
"""

from __future__ import annotations

import argparse
import shutil
import sys

from ordclip import layout
from ordclip.errors import OrdclipError, Preempted


def _params(args):
    from ordclip.config import load_params, parse_set

    return load_params(args.params or ["params.yaml"], parse_set(args.set or []))


def cmd_generate(args) -> None:
    from ordclip.config import dataset_config
    from ordclip.data.synthetic import generate

    generate(dataset_config(_params(args), args.dataset), layout.raw_dir(args.dataset))


def cmd_fetch(args) -> None:
    import importlib

    from ordclip.config import dataset_config
    from ordclip.data.registry import DATASET_KINDS
    from ordclip.errors import ConfigError

    ds = dataset_config(_params(args), args.dataset)
    kind = DATASET_KINDS[ds["kind"]]
    if kind["source"] != "fetch":
        raise ConfigError(f"datasets.{args.dataset}: kind {ds['kind']!r} is not fetched (its files come from "
                          f"{kind['source']!r})")
    importlib.import_module(kind["module"]).fetch(ds, layout.raw_dir(args.dataset))


def cmd_prepare(args) -> None:
    from ordclip.config import dataset_config, raw_source
    from ordclip.data.prepare import prepare

    params = _params(args)
    labels_csv, image_root = raw_source(params, args.dataset)
    ds = dataset_config(params, args.dataset)
    prepare(labels_csv, image_root, args.size, ds.get("ranks"), layout.prepared_images(args.dataset, args.size),
            layout.prepared_index(args.dataset, args.size), ds.get("duplicates", "error"))


def cmd_split(args) -> None:
    from ordclip.config import backbone_config, dataset_config, split_config, suite_config
    from ordclip.data.splits import write_split

    params = _params(args)
    bb = backbone_config(params, suite_config(params, args.suite)["backbone"])
    data = dataset_config(params, args.dataset)["data"]
    write_split(layout.prepared_index(data, bb["resize"]), args.fold,
                split_config(params, args.suite, args.dataset), layout.split_file(args.suite, args.dataset, args.fold))


def cmd_backbone(args) -> None:
    from ordclip.config import backbone_config
    from ordclip.errors import ConfigError
    from ordclip.io import atomic_path, sha256_file

    cfg = backbone_config(_params(args), args.name)
    out = layout.backbone_weights(args.name)
    weights = cfg["weights"]
    if "init_seed" in weights:
        from ordclip.models.backbone import init_weights

        init_weights(cfg, out)
        return
    if "url" in weights:
        from pathlib import Path

        from ordclip.data.fetch import download

        source = Path(layout.downloads_dir()) / Path(weights["url"]).name
        download(weights["url"], source, weights["sha256"])
    else:
        source = weights["path"]
        digest = sha256_file(source) if "sha256" in weights else None
        if digest is not None and digest != weights["sha256"]:
            raise ConfigError(f"backbones.{args.name}.weights: {source} has sha256 {digest}, "
                              f"expected {weights['sha256']}")
    if weights.get("format", "open_clip") == "openai":
        from ordclip.models.backbone import convert_openai

        convert_openai(source, out)
        return
    with atomic_path(out) as tmp:
        shutil.copyfile(source, tmp)


def cmd_embed(args) -> None:
    from ordclip.embed import embed

    embed(_params(args), args.suite, args.dataset)


def cmd_train(args) -> None:
    from ordclip.train import run

    run(_params(args), args.suite, args.dataset, args.method, args.fold)


def cmd_evaluate(args) -> None:
    from ordclip.evaluate import evaluate

    evaluate(_params(args), args.suite, args.dataset, args.method, args.fold)


def cmd_cell(args) -> None:
    from ordclip.tables import make_cell

    make_cell(_params(args), args.suite, args.dataset, args.method)


def cmd_table(args) -> None:
    from ordclip.tables import make_table

    make_table(_params(args), args.suite, args.name)


def cmd_lineage(args) -> None:
    import json

    from ordclip.lineage import format_text, lineage

    result = lineage(args.target, _params(args) if args.target.endswith(".csv") else None)
    print(json.dumps(result, indent=2) if args.json else format_text(result))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ordclip", description=__doc__.split("\n\n")[0])
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--params", action="append", metavar="FILE",
                        help="params file (repeatable; merged in order; default params.yaml)")
    common.add_argument("--set", action="append", metavar="KEY=VALUE", help="top-level override, as --config")
    sub = parser.add_subparsers(dest="verb", required=True)

    def verb(name, func, help_, *opts):
        p = sub.add_parser(name, parents=[common], help=help_)
        for opt in opts:
            p.add_argument(f"--{opt}", required=True, type=int if opt in ("fold", "size") else str)
        p.set_defaults(func=func)

    verb("generate", cmd_generate, "generate a synthetic dataset's images and labels.csv", "dataset")
    verb("fetch", cmd_fetch, "download or take the placed files of a dataset, verify, extract, write labels.csv",
         "dataset")
    verb("prepare", cmd_prepare, "decode and resize images into the uint8 cache", "dataset", "size")
    verb("split", cmd_split, "write one fold's train/val/test split", "suite", "dataset", "fold")
    verb("backbone", cmd_backbone, "write a backbone's weights file (random init or a verified copy)", "name")
    verb("embed", cmd_embed, "cache frozen image features and rank-prompt text features", "suite", "dataset")
    verb("train", cmd_train, "train (or fit) one run", "suite", "dataset", "method", "fold")
    verb("evaluate", cmd_evaluate, "metrics.json and predictions.csv of one run", "suite", "dataset", "method", "fold")
    verb("cell", cmd_cell, "aggregate a (dataset, method) cell over folds", "suite", "dataset", "method")
    verb("table", cmd_table, "build results/<name>.csv and .md (table1; table2: few-shot; table3: ablations)", "suite", "name")
    lin = sub.add_parser("lineage", parents=[common], help="commit, configuration, hashes and dvc.lock state behind "
                         "a table, a cell or a run")
    lin.add_argument("target", help="results/table1.csv, a cell json or a run folder")
    lin.add_argument("--json", action="store_true", help="print JSON instead of text")
    lin.set_defaults(func=cmd_lineage)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except OrdclipError as exc:
        print(f"ordclip {args.verb}: error: {exc}", file=sys.stderr)
        return 2
    except Preempted as exc:
        print(f"ordclip {args.verb}: {exc}", file=sys.stderr)
        return exc.exit_code
    return 0
