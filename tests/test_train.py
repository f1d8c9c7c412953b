"""Training runs on a small generated dataset: determinism, resume, the checkpoint, evaluation."""

import json
import shutil

import numpy as np
import pytest
import torch

from conftest import prepare_fading
from ordclip import layout
from ordclip.config import load_params, run_config
from ordclip.jobs import job_config
from ordclip.evaluate import evaluate
from ordclip.metrics import cosine_similarity, prototype_ordinality
from ordclip.train import load_trained, predict_part, run

SMALL = """
datasets: {fading: {per_rank: 12}}
suites:
  demo:
    datasets: [fading]
    methods: [zeroshot, linear_probe, baseline, coop, ordinalclip, l2rclip, numclip]
    folds: 1
    overrides:
      ordinalclip: {epochs: 3, batch_size: 16}
      coop: {epochs: 1, batch_size: 16}
      baseline: {epochs: 1, batch_size: 16}
      l2rclip: {stage1: {epochs: 1}, stage2: {epochs: 1}, batch_size: 16}
      numclip: {epochs: 1, batch_size: 16}
"""


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    """A working directory with the fading set generated, prepared, split, and a tiny backbone."""
    root = tmp_path_factory.mktemp("small")
    files = prepare_fading(root, SMALL, ["embed", "--suite", "demo", "--dataset", "fading"])
    return root, load_params(files)


def _outputs(run_dir):
    with np.load(run_dir / "outputs.npz") as npz:
        return {k: npz[k] for k in npz.files}


def test_same_seed_same_result_and_resume(small, monkeypatch):
    root, params = small
    monkeypatch.chdir(root)
    run_dir = root / layout.run_dir("demo", "fading", "ordinalclip", 0)
    assert run(job_config(params, "train", suite="demo", dataset="fading", method="ordinalclip", fold=0))
    first = _outputs(run_dir)
    first_state = torch.load(run_dir / "model.pt", weights_only=True)["state"]
    first_bytes = (run_dir / "model.pt").read_bytes()
    assert len(first["candidates"]) == 3 and not (run_dir / "resume.pt").exists()
    shutil.rmtree(run_dir)

    # Interrupted after one epoch: only the checkpoint is left; the next call resumes from it.
    assert not run(job_config(params, "train", suite="demo", dataset="fading", method="ordinalclip", fold=0), stop_after=1)
    assert (run_dir / "resume.pt").exists() and not (run_dir / "outputs.npz").exists()
    assert len((run_dir / "log.jsonl").read_text().splitlines()) == 1
    assert run(job_config(params, "train", suite="demo", dataset="fading", method="ordinalclip", fold=0))
    resumed = _outputs(run_dir)
    for key in first:
        np.testing.assert_array_equal(first[key], resumed[key], err_msg=key)
    state = torch.load(run_dir / "model.pt", weights_only=True)["state"]
    assert state.keys() == first_state.keys()
    assert all(torch.equal(state[k], first_state[k]) for k in state)
    # byte for byte: torch writes no temporary file name into the archive, so the record's hash repeats
    assert (run_dir / "model.pt").read_bytes() == first_bytes
    log = [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines()]
    assert [h["epoch"] for h in log] == [1, 2, 3] and set(log[0]["loss"]) == {"ce", "kl"}


def test_checkpoint_reproduces_recorded_outputs(small, monkeypatch):
    root, params = small
    monkeypatch.chdir(root)
    assert run(job_config(params, "train", suite="demo", dataset="fading", method="coop", fold=0))
    run_dir = root / layout.run_dir("demo", "fading", "coop", 0)
    cfg = run_config(params, "demo", "fading", "coop")
    method = load_trained(cfg, run_dir / "model.pt", layout.backbone_weights("tiny"))
    from ordclip.data.loader import ImagePipeline, load_fold

    parts = load_fold(layout.prepared_images("fading", 36), layout.prepared_index("fading", 36),
                      layout.split_file("demo", "fading", 0), torch.device("cpu"))
    pipeline = ImagePipeline(32, "imagenet", True, torch.device("cpu"))
    import contextlib

    logits = predict_part(method, parts["test"], pipeline, contextlib.nullcontext())["logits"]
    np.testing.assert_allclose(logits, _outputs(run_dir)["test_logits"][0], rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("method", ["zeroshot", "linear_probe"])
def test_feature_methods_and_evaluate(small, monkeypatch, method):
    root, params = small
    monkeypatch.chdir(root)
    assert run(job_config(params, "train", suite="demo", dataset="fading", method=method, fold=0))
    evaluate(job_config(params, "evaluate", suite="demo", dataset="fading", method=method, fold=0))
    run_dir = root / layout.run_dir("demo", "fading", method, 0)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert set(metrics["test"]) == {"mae", "acc", "one_off_acc", "qwk"}
    assert metrics["val_selected"]["test"]["exp"]["mae"] == metrics["test"]["mae"]
    # the test-selected candidate minimises the test MAE of the argmax (select_on mae_max)
    assert metrics["select_on"] == "mae_max"
    assert metrics["test_selected"]["test"]["max"]["mae"] <= metrics["val_selected"]["test"]["max"]["mae"] + 1e-12
    n_test = len(_outputs(run_dir)["test_y"])
    assert len((run_dir / "predictions.csv").read_text().splitlines()) == n_test + 1
    assert torch.load(run_dir / "model.pt", weights_only=True)["state"]["weight"].shape[0] == 5


@pytest.mark.parametrize("method", ["zeroshot", "linear_probe", "baseline", "coop", "ordinalclip", "l2rclip",
                                    "numclip"])
def test_every_method_records_its_prototypes_and_their_ordinality(small, monkeypatch, method):
    """outputs.npz holds each candidate's prototypes (5 ranks of fading; NumCLIP: its 5 coarse bins,
    here the 5 levels), and metrics.json their ordinality; the val-selected candidate's prototypes
    are the trained model's (image methods: reloaded from model.pt; zero-shot: the prompt features)."""
    root, params = small
    monkeypatch.chdir(root)
    assert run(job_config(params, "train", suite="demo", dataset="fading", method=method, fold=0))
    evaluate(job_config(params, "evaluate", suite="demo", dataset="fading", method=method, fold=0))
    run_dir = root / layout.run_dir("demo", "fading", method, 0)
    out = _outputs(run_dir)
    k = len(out["candidates"])
    assert out["prototypes"].shape[:2] == (k, 5) and out["prototypes"].dtype == np.float32
    assert out["prototype_labels"].tolist() == [0, 1, 2, 3, 4]
    assert str(out["prototype_unit"]) == ("bin" if method == "numclip" else "rank")
    metrics = json.loads((run_dir / "metrics.json").read_text())
    o = metrics["ordinality"]
    assert o["labels"] == [0, 1, 2, 3, 4] and o["without_prototype"] == [] and o["unit"] == str(out["prototype_unit"])
    chosen = out["prototypes"][metrics["val_selected"]["index"]]
    assert o["val_selected"] == prototype_ordinality(chosen)
    assert o["test_selected"] == prototype_ordinality(out["prototypes"][metrics["test_selected"]["index"]])
    assert 0.0 <= o["val_selected"] <= 1.0 and round(o["val_selected"] * 10) == o["val_selected"] * 10  # of 10
    cfg = run_config(params, "demo", "fading", method)
    if method in ("zeroshot", "linear_probe"):
        head = torch.load(run_dir / "model.pt", weights_only=True)["state"]["weight"].numpy()
        np.testing.assert_array_equal(chosen, head)
    if method == "zeroshot":
        text = np.load(layout.features("demo", "fading"))["text_features"]
        np.testing.assert_allclose(cosine_similarity(chosen), cosine_similarity(text), atol=1e-6)
    elif method != "linear_probe":
        trained = load_trained(cfg, run_dir / "model.pt", layout.backbone_weights("tiny"))
        with torch.no_grad():
            again = trained.prototypes().numpy()
        np.testing.assert_allclose(chosen, again, rtol=1e-5, atol=1e-6)


def test_progress_is_written_as_whole_lines(capsys):
    """Job logs read line by line: no carriage returns, each line with the steps done, elapsed and ETA."""
    import io

    from ordclip.train import Progress

    out = io.StringIO()
    bar = Progress("fading/coop/fold0", total=10, done=4, every=0, file=out)
    bar.update(1)
    bar.line(f"coop epoch 1/2 loss ce=0.5000 val mae=0.800 {bar.status()}")
    text = out.getvalue()
    assert "\r" not in text and text.endswith("\n")
    lines = text.splitlines()
    assert lines[0].startswith("fading/coop/fold0 step 5/10 elapsed ") and " eta " in lines[0]
    assert lines[1].startswith("coop epoch 1/2 loss ce=0.5000 val mae=0.800 step 5/10 elapsed")


def test_checkpoint_is_written_in_the_background_from_a_host_copy(tmp_path, monkeypatch):
    import contextlib
    import threading

    import ordclip.train as T
    from ordclip.io import BackgroundWriter
    from ordclip.optim import RAdam

    started, release = threading.Event(), threading.Event()
    real = T.atomic_path

    @contextlib.contextmanager
    def held(path, *a, **k):                  # the write waits until the test lets it go
        started.set()
        assert release.wait(30)
        with real(path, *a, **k) as tmp:
            yield tmp

    monkeypatch.setattr(T, "atomic_path", held)
    model = torch.nn.Linear(3, 2)
    opt = RAdam(model.parameters(), lr=0.1)
    model.weight.grad, model.bias.grad = torch.ones(2, 3), torch.ones(2)
    opt.step()
    before = (model.weight.detach().clone(), opt.state[model.weight]["exp_avg"].clone())
    path, writer = tmp_path / "resume.pt", BackgroundWriter()
    T._save_resume(path, {"run": 1}, (0, 1), model, ["weight", "bias"], opt, None, torch.Generator(), [], {},
                   {"val": [], "test": []}, [], writer=writer)
    assert started.wait(30) and not path.exists()        # returned while its write is still to come
    with torch.no_grad():                                  # training goes on, changing the tensors in place
        model.weight.add_(1.0)
        opt.state[model.weight]["exp_avg"].add_(1.0)
    release.set()
    writer.wait()
    ckpt = T._load_resume(path, None)                      # checksum verified
    assert torch.equal(ckpt["model"]["weight"], before[0])
    assert torch.equal(ckpt["optimizer"]["state"][0]["exp_avg"], before[1])

    def fails():
        raise OSError("disk full")

    writer.submit(fails)
    with pytest.raises(OSError, match="disk full"):
        writer.wait()


def test_compile_is_an_option_of_cuda_runs_only(small, monkeypatch):
    import copy

    from ordclip.config import run_config
    from ordclip.errors import ConfigError

    root, params = small
    monkeypatch.chdir(root)
    assert "compile" not in run_config(params, "demo", "fading", "coop")    # off: the configuration as before
    on = copy.deepcopy(params)
    on["suites"]["demo"]["compile"] = True
    assert run_config(on, "demo", "fading", "coop")["compile"] is True
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ConfigError, match=r"suites\.demo\.compile: .*CUDA runs only"):
        run(job_config(on, "train", suite="demo", dataset="fading", method="coop", fold=0))
