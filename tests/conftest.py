import os
import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def repo_copy(tmp_path: Path) -> Path:
    """A working directory holding the workflow files (not data or results) of this checkout."""
    for name in ("Snakefile", "params.yaml"):
        shutil.copy(ROOT / name, tmp_path / name)
    shutil.copytree(ROOT / "workflow", tmp_path / "workflow")
    return tmp_path


@pytest.fixture
def in_tmp(tmp_path: Path, monkeypatch) -> Path:
    monkeypatch.chdir(tmp_path)
    return tmp_path


def prepare_fading(root: Path, extra_params: str, *extra_verbs: list[str]) -> list[str]:
    """In ``root``: write ``extra_params`` (merged over params.yaml) and run the CLI steps before
    training on the fading set: generate, prepare (36 px), split fold 0, the tiny backbone (random:
    the demo suite is switched to it), then ``extra_verbs``. Returns the params files."""
    from ordclip.cli import main

    (root / "small.yaml").write_text(extra_params)
    # the demo suite on the random `tiny` backbone: these tests exercise training, not the
    # pretrained weights (whose pretraining takes minutes; tests/test_pretrain.py covers it)
    (root / "random_backbone.yaml").write_text("suites: {demo: {backbone: tiny}}\n")
    files = [str(ROOT / "params.yaml"), str(root / "small.yaml"), str(root / "random_backbone.yaml")]
    args = [a for f in files for a in ("--params", f)]
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        for verb in (["generate", "--dataset", "fading"], ["prepare", "--dataset", "fading", "--size", "36"],
                     ["split", "--suite", "demo", "--dataset", "fading", "--fold", "0"],
                     ["backbone", "--backbone", "tiny"], *extra_verbs):
            assert main(verb[:1] + args + verb[1:]) == 0
    return files


def pytest_collection_modifyitems(config, items):
    import torch

    if not torch.cuda.is_available():
        skip = pytest.mark.skip(reason="no CUDA device")
        for item in items:
            if "gpu" in item.keywords:
                item.add_marker(skip)


os.environ.setdefault("OMP_NUM_THREADS", "1")


def run_arrays(run_dir: Path) -> dict:
    """A run's recorded arrays: outputs.npz as ``outputs.<name>``, model.pt's state as ``model.<name>``."""
    import numpy as np
    import torch

    with np.load(run_dir / "outputs.npz") as npz:
        out = {f"outputs.{k}": npz[k] for k in npz.files}
    state = torch.load(run_dir / "model.pt", weights_only=True)["state"]
    out.update({f"model.{k}": v.numpy() for k, v in state.items()})
    return out


def assert_same_arrays(got: dict, expected: dict) -> None:
    """The same names, and each array equal element for element (run_arrays of two runs)."""
    import numpy as np

    assert got.keys() == expected.keys()
    for key, value in expected.items():
        np.testing.assert_array_equal(got[key], value, err_msg=key)
