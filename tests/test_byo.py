"""Bring your own dataset: a CSV of path,label over a folder of images, as a user writes it."""

import csv
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from ordclip.cli import main
from ordclip.config import dataset_config, load_params

ROOT = Path(__file__).resolve().parents[1]


def make_faces(root: Path, per_label: int = 12, labels=range(20, 27)) -> Path:
    """Images in sub-folders whose brightness grows with the label; labels.csv in the root."""
    rng = np.random.default_rng(0)
    rows = []
    for label in labels:
        folder = root / f"age{label}"
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(per_label):
            level = 40 + 25 * (label - min(labels))
            pixels = np.clip(rng.normal(level, 12, size=(40, 40, 3)), 0, 255).astype(np.uint8)
            name = f"age{label}/img{i}.png" if i % 2 else f"age{label}/img{i}.jpg"
            Image.fromarray(pixels).save(root / name)
            rows.append((name, label))
    with open(root / "labels.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["path", "label"])
        writer.writerows(rows)
    return root / "labels.csv"


def my_yaml(faces: Path) -> str:
    return f"""
datasets:
  faces: {{kind: csv, csv: {faces / 'labels.csv'}, image_root: {faces}}}
suites:
  mine: {{datasets: [faces], methods: [zeroshot, linear_probe, ordinalclip, numclip], backbone: tiny, folds: 3}}
"""


def test_csv_dataset_defaults(tmp_path):
    (tmp_path / "my.yaml").write_text(my_yaml(tmp_path / "faces"))
    params = load_params([ROOT / "params.yaml", tmp_path / "my.yaml"], {"suite": "mine"})
    ds = dataset_config(params, "faces")
    assert ds["prompt"]["context"] and ds["split"]["protocol"] == "stratified"
    assert "ranks" not in ds and "rank_names" not in ds   # spanned by the labels; names = the values


@pytest.mark.parametrize("row, message", [
    ("age20/img0.jpg,twenty", "line 4: label 'twenty' is not an integer"),
    ("age20/missing.jpg,20", "line 4: image .*missing.jpg not found"),
    ("age20/broken.jpg,20", "line 4: cannot decode image age20/broken.jpg"),
])
def test_a_bad_row_fails_with_its_line(tmp_path, monkeypatch, capsys, row, message):
    faces = tmp_path / "faces"
    make_faces(faces, per_label=1, labels=[20, 21])
    (faces / "age20/broken.jpg").write_bytes(b"not an image")
    with open(faces / "labels.csv", "a") as f:
        f.write(row + "\n")
    (tmp_path / "my.yaml").write_text(my_yaml(faces))
    monkeypatch.chdir(tmp_path)
    rc = main(["prepare", "--params", str(ROOT / "params.yaml"), "--params", "my.yaml",
               "--set", "suite=mine", "--dataset", "faces", "--size", "36"])
    err = capsys.readouterr().err
    assert rc == 2 and str(faces / "labels.csv") in err
    assert re.search(message, err), err
    assert not (tmp_path / "data/prepared/faces/36px/images.npy").exists()


@pytest.mark.slow
def test_bring_your_own_story(repo_copy, tmp_path):
    """The README's story: my.yaml + snakemake --configfile my.yaml --config suite=mine. The target
    comes before --configfile/--config: those options take several values, so Snakemake would read
    a target after them as one (it fails with "Config entries have to be defined as name=value")."""
    faces = tmp_path / "faces"
    make_faces(faces)
    (repo_copy / "my.yaml").write_text(my_yaml(faces))
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    proc = subprocess.run([sys.executable, "-m", "snakemake", "--cores", "all", "results/table1.csv", "--configfile", "my.yaml",
                           "--config", "suite=mine"],
                          cwd=repo_copy, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    table = pd.read_csv(repo_copy / "results/table1.csv")
    mae = table[table.metric == "mae"]
    assert set(mae.method) == {"zeroshot", "linear_probe", "ordinalclip", "numclip"}
    assert (mae.dataset == "faces").all() and (mae.suite == "mine").all() and (mae.n_folds == 3).all()
    assert mae["mean"].map(math.isfinite).all()
    index = pd.read_csv(repo_copy / "data/prepared/faces/36px/index.csv")
    assert len(index) == 84 and index["rank"].min() == 0 and index["rank"].max() == 6
    run = __import__("json").loads((repo_copy / "results/mine/runs/faces/numclip/fold0/run.json").read_text())
    assert run["config"]["dataset"]["kind"] == "csv"
    assert (repo_copy / "results/mine/runs/faces/linear_probe/fold2/metrics.json").is_file()
    # an image changed in place (same name, other pixels): the audit names it, and the plan rebuilds
    # the image cache and everything after it
    image = faces / "age20/img1.png"
    Image.fromarray(np.full((40, 40, 3), 250, np.uint8)).save(image)
    audit = subprocess.run([sys.executable, "-m", "ordclip", "audit", "results/mine/table1.csv", "--params", "params.yaml",
                            "--params", "my.yaml", "--sample", "0"], cwd=repo_copy, env=env, capture_output=True, text=True)
    assert audit.returncode == 1 and f"MISMATCH {image}: differs from the file" in audit.stdout, audit.stdout + audit.stderr
    plan = subprocess.run([sys.executable, "-m", "snakemake", "-n", "results/table1.csv", "--configfile", "my.yaml",
                           "--config", "suite=mine"], cwd=repo_copy, env=env, capture_output=True, text=True)
    planned = dict(re.findall(r"^(\w+)\s+(\d+)$", plan.stdout, flags=re.M))
    assert planned.get("prepare") == "1" and planned.get("train") == "12" and planned.get("table") == "1", plan.stdout
