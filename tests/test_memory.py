"""Memory that scales: the image cache is written in chunks, and a fold that does not fit on the
device is streamed from it, with the same bytes and the same training result."""

import io

import numpy as np
import pytest
import torch

import ordclip.data.loader as loader
from conftest import assert_same_arrays, prepare_fading, run_arrays
from ordclip import layout
from ordclip.config import load_params
from ordclip.jobs import job_config
from ordclip.train import run

SMALL = """
datasets: {fading: {per_rank: 12}}
suites:
  demo:
    datasets: [fading]
    folds: 1
    overrides:
      ordinalclip: {epochs: 2, batch_size: 8}
"""
KEYS = {"suite": "demo", "dataset": "fading", "method": "ordinalclip", "fold": 0}


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    root = tmp_path_factory.mktemp("memory")
    return root, prepare_fading(root, SMALL)


def test_cache_file_has_np_save_bytes(small, monkeypatch):
    """prepare writes the .npy in place (open_memmap): byte for byte what np.save of the array writes."""
    root, _ = small
    path = root / layout.prepared_images("fading", 36)
    buf = io.BytesIO()
    np.save(buf, np.load(path))
    assert path.read_bytes() == buf.getvalue()


def test_streamed_fold_trains_as_the_resident_one(small, monkeypatch, capsys):
    root, files = small
    monkeypatch.chdir(root)
    params = load_params(files)
    run_dir = root / layout.run_dir(*KEYS.values())
    assert run(job_config(params, "train", **KEYS))
    resident = run_arrays(run_dir)
    assert "batches are read from" not in capsys.readouterr().err
    monkeypatch.setattr(loader, "RESIDENT_SHARE", 0.0)   # nothing fits: every part is streamed
    for p in run_dir.iterdir():
        p.unlink()
    assert run(job_config(params, "train", **KEYS))
    assert "batches are read from" in capsys.readouterr().err
    assert_same_arrays(run_arrays(run_dir), resident)


def test_streamed_images_index_like_a_tensor(small):
    root, _ = small
    cache = np.load(root / layout.prepared_images("fading", 36), mmap_mode="r")
    rows = np.array([5, 2, 9, 7])
    streamed = loader.StreamedImages(cache, rows, torch.device("cpu"))
    resident = torch.from_numpy(np.array(cache[rows]))
    assert len(streamed) == 4 and streamed.shape == tuple(resident.shape)
    idx = torch.tensor([3, 0, 0])
    assert torch.equal(streamed[idx], resident[idx]) and torch.equal(streamed[1:3], resident[1:3])
