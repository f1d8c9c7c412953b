"""Does L2RCLIP's first stage (prompts + RankFormer against the frozen image encoder) lower
validation MAE from where it starts? Reads the runs of a built suite and, for each (dataset, fold),
evaluates the untrained method (the start) and prints it beside the validation MAE after each
stage-1 epoch and after stage 2, from the run's log.jsonl.

    .venv/bin/python bench/l2rclip_stage1.py DIR [--suite demo] [--method l2rclip]

DIR is the working directory the suite was built in (it holds params.yaml, data/ and results/).
MAE is the expectation over the rank softmax (the table's MAE).
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("dir")
    parser.add_argument("--suite", default="demo")
    parser.add_argument("--method", default="l2rclip")
    args = parser.parse_args()
    os.chdir(args.dir)

    import torch

    from ordclip import layout
    from ordclip.config import load_params, n_folds
    from ordclip.data.loader import ImagePipeline, load_fold
    from ordclip.jobs import job_config
    from ordclip.runs import inputs
    from ordclip.train import _quick_metrics, build_method, predict_part

    params = load_params(["params.yaml"], {"suite": args.suite})
    print("| dataset | fold | val MAE at start | after each stage-1 epoch | after stage 2 (last epoch) |")
    print("|---|---|---|---|---|")
    for dataset in params["suites"][args.suite]["datasets"]:
        for fold in range(n_folds(params, args.suite, dataset)):
            cfg = job_config(params, "train", suite=args.suite, dataset=dataset, method=args.method, fold=fold)["run"]
            paths = inputs(cfg, fold)
            torch.manual_seed(cfg["seed"])   # as the train verb, before building the method
            parts = load_fold(paths["images"], paths["index"], paths["split"], torch.device("cpu"))
            method = build_method(cfg, torch.device("cpu"), paths["weights"])
            bb = cfg["backbone"]
            pipeline = ImagePipeline(bb["image_size"], bb["normalize"], True, torch.device("cpu"))
            start = _quick_metrics(predict_part(method, parts["val"], pipeline, torch.autocast("cpu", enabled=False)),
                                   parts["val"].ranks.numpy())["exp"]["mae"]
            log = [json.loads(line) for line in
                   Path(layout.run_file(args.suite, dataset, args.method, fold, "log.jsonl")).read_text().splitlines()]
            stage1 = [r["val"]["exp"]["mae"] for r in log if r["stage"] == log[0]["stage"]]
            last = log[-1]["val"]["exp"]["mae"]
            print(f"| {dataset} | {fold} | {start:.3f} | {' → '.join(f'{v:.3f}' for v in stage1)} | {last:.3f} |")


if __name__ == "__main__":
    main()
