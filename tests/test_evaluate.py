"""Evaluation of a run's recorded outputs."""

import copy
from pathlib import Path

import numpy as np
import pytest

from conftest import ROOT
from ordclip import layout
from ordclip.config import load_params, run_config
from ordclip.jobs import job_config
from ordclip.errors import ConfigError, DataError
from ordclip.evaluate import evaluate, metrics_of
from ordclip.metrics import prototype_ordinality


def test_a_prediction_mode_the_run_lacks_is_a_named_config_error(in_tmp):
    """numclip on a 10-rank set regresses a value only: selecting on the argmax must say so."""
    params = copy.deepcopy(load_params([ROOT / "params.yaml"]))
    params["methods"]["numclip"]["select_on"] = "mae_max"
    out = Path(layout.run_file("demo", "counting", "numclip", 0, "outputs.npz"))
    out.parent.mkdir(parents=True)
    y = np.array([0, 3, 9])
    np.savez(out, candidates=np.array(["epoch1", "epoch2"]), val_y=y, test_y=y,
             val_value=np.array([[0.0, 3.0, 8.0], [1.0, 2.0, 9.0]]), test_value=np.array([[0.0, 3.0, 8.0]] * 2),
             val_index=np.arange(3), test_index=np.arange(3))
    with pytest.raises(ConfigError, match=r"methods\.numclip\.select_on: prediction mode 'max' is not produced .*"
                                          r"demo/counting/numclip/fold0 has \['value'\]"):
        evaluate(job_config(params, "evaluate", suite="demo", dataset="counting", method="numclip", fold=0))
    assert out.is_file() and not out.with_name("metrics.json").exists()


def _arc(n: int, dim: int = 8) -> np.ndarray:
    """n prototypes in rank order on a quarter circle (padded to ``dim``): perfectly ordinal."""
    a = np.linspace(0, np.pi / 2, n)
    return np.pad(np.stack([np.cos(a), np.sin(a)], axis=1), ((0, 0), (0, dim - 2)))


def _npz(prototypes: np.ndarray, labels, unit: str) -> dict:
    """outputs.npz as ordclip/train.py writes it: one candidate, three val/test images."""
    y = np.array([20, 30, 40])
    logits = np.log(np.full((1, 3, prototypes.shape[0]), 1.0 / prototypes.shape[0]))
    return {"candidates": np.array(["epoch 1"]), "val_y": y, "test_y": y, "val_logits": logits,
            "test_logits": logits, "val_index": np.arange(3), "test_index": np.arange(3),
            "val_value": np.array([[20.0, 30.0, 40.0]]), "test_value": np.array([[20.0, 30.0, 40.0]]),
            "val_bin_value": np.array([[20.0, 30.0, 40.0]]), "test_bin_value": np.array([[20.0, 30.0, 40.0]]),
            "prototypes": prototypes[None].astype(np.float32), "prototype_labels": np.asarray(labels),
            "prototype_unit": np.array(unit)}


def test_ordinality_counts_the_datasets_ages_inside_a_101_rank_space():
    """MORPH II in OrdinalCLIP's 101 ranks (ages 0..100): only ages 16..77 count. They are ordered
    here and the 39 outside ranks scrambled, so the ordinality is 1 exactly when they are left out."""
    params = load_params([ROOT / "params.yaml"])
    cfg = run_config(params, "paper", "morph2", "ordinalclip")
    assert cfg["dataset"]["dataset_ranks"] == [16, 77] and cfg["dataset"]["rank_offset"] == 16
    protos = np.random.default_rng(0).normal(size=(101, 8))
    protos[16:78] = _arc(62)
    metrics = metrics_of(cfg, 0, _npz(protos, np.arange(101), "rank"))[0]
    o = metrics["ordinality"]
    assert o["labels"] == list(range(16, 78)) and o["without_prototype"] == []
    assert o["val_selected"] == o["test_selected"] == 1.0
    everything = prototype_ordinality(protos)
    assert everything < 0.9                                          # what counting all 101 would give


def test_ordinality_drops_a_linear_probes_rank_without_prototype():
    params = load_params([ROOT / "params.yaml"])
    cfg = run_config(params, "paper", "morph2", "linear_probe")      # its own ranks 16..77, no rank space
    assert "dataset_ranks" not in cfg["dataset"]
    protos = _arc(62)
    protos[60] = 0.0                                                  # age 76: no training image
    o = metrics_of(cfg, 0, _npz(protos, np.arange(16, 78), "rank"))[0]["ordinality"]
    assert o["without_prototype"] == [76] and len(o["labels"]) == 61 and 76 not in o["labels"]
    assert o["val_selected"] == 1.0


def test_numclip_counts_all_its_bins():
    params = load_params([ROOT / "params.yaml"])
    cfg = run_config(params, "paper", "morph2", "numclip")           # bins in the 0..100 space
    bins = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 0.1], [0.5, 0.5], [0.0, 1.0]])
    o = metrics_of(cfg, 0, _npz(bins, [0, 20, 30, 40, 60], "bin"))[0]["ordinality"]
    assert o["unit"] == "bin" and o["labels"] == [0, 20, 30, 40, 60]   # starts outside 16..77 kept
    assert o["val_selected"] == prototype_ordinality(bins)


def test_outputs_without_prototypes_name_the_run():
    params = load_params([ROOT / "params.yaml"])
    cfg = run_config(params, "paper", "morph2", "coop")
    npz = _npz(_arc(101), np.arange(101), "rank")
    del npz["prototypes"]
    with pytest.raises(DataError,
                       match=r"results/paper/runs/morph2/coop/fold2/outputs.npz: no \['prototypes'\] .*retrain"):
        metrics_of(cfg, 2, npz)
