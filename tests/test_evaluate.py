"""Evaluation of a run's recorded outputs."""

import copy
from pathlib import Path

import numpy as np
import pytest

from conftest import ROOT
from ordclip import layout
from ordclip.config import load_params
from ordclip.jobs import job_config
from ordclip.errors import ConfigError
from ordclip.evaluate import evaluate


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
