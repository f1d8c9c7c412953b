"""What the statistics of a table cost: the table job's comparisons (paired t-tests, Holm, and the
paired bootstrap over test images) on paper-size stand-ins, in a temporary folder.

One dataset the size of MORPH II's test lists (11,000 images a run), 7 methods, 5 folds × 1 or
2 seeds, MAE and accuracy: the comparisons of that column (6 methods against the best, 2 metrics)
are timed. Predictions are random; only the time and the number of tests matter here.

    .venv/bin/python bench/comparisons.py [--images 11000] [--methods 7] [--folds 5] [--seeds 1]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))


def main() -> None:
    import numpy as np
    import pandas as pd

    from common import machine
    from ordclip import layout
    from ordclip.tables import cell_metrics, comparisons, marks

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--images", type=int, default=11000)
    ap.add_argument("--methods", type=int, default=7)
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--seeds", type=int, default=1)
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    runs = [(k, j) for k in range(args.folds) for j in range(args.seeds)]
    with tempfile.TemporaryDirectory() as tmp:
        os.chdir(tmp)
        ranks = rng.integers(0, 62, args.images)
        cells = {}
        for i in range(args.methods):
            m = f"m{i}"
            metrics = []
            for k, j in runs:
                pred = ranks + rng.normal(0, 2 + 0.1 * i, args.images)
                path = Path(layout.run_file("s", "d", m, k, "predictions.csv", j))
                path.parent.mkdir(parents=True, exist_ok=True)
                pd.DataFrame({"index": range(args.images), "path": "x", "label": ranks, "rank": ranks,
                              "pred_exp": pred}).to_csv(path, index=False)
                path.with_name("metrics.json").write_text(json.dumps({"report": {"mae": "exp", "acc": "exp"}}))
                mae, acc = float(np.abs(pred - ranks).mean()), float((np.rint(pred) == ranks).mean())
                metrics.append({"test": {"mae": mae, "acc": acc, "one_off_acc": acc, "qwk": None},
                                "test_selected_test": {"mae": mae, "acc": acc}, "val_selected": {"test": {}},
                                "test_selected": {"test": {}}, "ordinality": {"val_selected": None}})
            cells["s", "d", m] = {"folds": list(range(args.folds)), "n_folds": args.folds,
                                  "runs": [list(r) for r in runs], "metrics": cell_metrics(metrics, runs)}
        t = time.perf_counter()
        df = comparisons(cells, ["mae", "acc"])
        marks(cells, df, ["mae", "acc"])
        seconds = time.perf_counter() - t
    print(f"machine: {machine()}; load average {os.getloadavg()[0]:.2f}")
    print(f"{args.methods} methods × {len(runs)} runs × {args.images} test images, 2 metrics: "
          f"{len(df)} comparisons (each with its paired bootstrap) in {seconds:.1f} s")


if __name__ == "__main__":
    main()
