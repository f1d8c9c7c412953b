"""The demo backbone's pretraining: CLIP's loss, the captioned corpus (its captions, its separation
from every evaluation image), the pretrain verb and rule."""

import json
import math
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from ordclip.config import backbone_config, load_params
from ordclip.data.corpus import (COLOURS, FAMILIES, caption, draw_image, family_counts, generate_corpus, image_hash,
                                 start_corpus)
from ordclip.data.synthetic import GENERATORS
from ordclip.pretrain import clip_loss, encode_captions

ROOT = Path(__file__).resolve().parents[1]
PARAMS = load_params([ROOT / "params.yaml"], {})


def test_clip_loss_matches_the_formula_worked_by_hand():
    # two pairs, orthogonal unit features: S = s·I Tᵀ = [[s, 0], [0, s]] for I = T = identity
    s = 2.0
    eye = torch.eye(2)
    loss = clip_loss(eye * 3.0, eye * 0.5, torch.tensor(math.log(s)))   # scale does not matter: normalised
    expected = -math.log(math.exp(s) / (math.exp(s) + 1))                # each row and column the same
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    # asymmetric case: the mean of the row-wise and column-wise cross-entropies
    img = torch.tensor([[1.0, 0.0], [0.6, 0.8]])
    txt = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    S = 1.0 * img @ txt.T
    rows = -(S.diag() - S.logsumexp(dim=1)).mean()
    cols = -(S.diag() - S.logsumexp(dim=0)).mean()
    assert clip_loss(img, txt, torch.tensor(0.0)).item() == pytest.approx(0.5 * (rows + cols).item(), rel=1e-6)


def test_caption_encoding_stops_at_the_last_eot_exactly():
    from ordclip.models.backbone import create_backbone, encode_texts, tokenizer

    bb = backbone_config(PARAMS, "tiny")
    torch.manual_seed(0)
    model = create_backbone(bb, None)
    tok = tokenizer(bb)
    texts = ["a photo of three red circles.", "this photo is very blurry."]
    with torch.no_grad():
        assert torch.allclose(encode_captions(model, tok(texts)), encode_texts(model, tok, texts), atol=1e-5)
        assert torch.allclose(encode_captions(model, tok(texts)), model.encode_text(tok(texts)), atol=1e-5)


def _captions(family: str, n: int = 150) -> list[str]:
    rng = np.random.default_rng(0)
    out = []
    for i in range(n):
        _, attrs = draw_image(np.random.default_rng([7, i]), family, 64)
        out += [caption(attrs, rng) for _ in range(3)]
    return out


def test_captions_contain_every_zero_shot_sentence_of_the_demo():
    """Zero-shot reads "{context} {rank name}.": each such sentence of the demo datasets is a caption."""
    captions = set(_captions("count") + _captions("fade") + _captions("blur") + _captions("combined"))
    for name in PARAMS["suites"]["demo"]["datasets"]:
        ds = PARAMS["datasets"][name]
        for rank in ds["rank_names"]:
            assert f"{ds['prompt']['context']} {rank}." in captions, (name, rank)


def test_captions_name_what_is_visible_with_digits_words_and_distractors():
    counts = _captions("count")
    assert any(re.search(r"\b\d+\b", c) for c in counts) and any(" three " in c for c in counts)
    colours = "|".join(COLOURS)
    assert any(re.match(rf"a photo of (\w+) ({colours}) (circles|squares|shapes)\.", c) for c in counts)
    assert any("background" in c for c in counts)
    combined = _captions("combined")
    assert any(re.match(r"a (slightly faded|faded|very faded) (photo|picture) of \w+ ", c) for c in combined)
    assert any("blurry" in c for c in _captions("blur")) and any("vivid" in c for c in _captions("fade"))
    # a caption about a count names the count the image shows
    rng = np.random.default_rng(1)
    for i in range(50):
        _, attrs = draw_image(np.random.default_rng([8, i]), "count", 64)
        text = caption(attrs, rng)
        words = {str(attrs["count"]), ["one", "two", "three", "four", "five", "six", "seven", "eight", "nine",
                                       "ten"][attrs["count"] - 1]}
        assert words & set(re.findall(r"\w+", text)), (attrs, text)


def test_corpus_is_reproducible_and_split_by_family():
    cfg = {"seed": 3, "images": 40, "image_size": 64, "families": {"count": 1, "fade": 1, "blur": 1, "combined": 1}}
    a, b = generate_corpus(cfg, 36), generate_corpus(cfg, 36)
    assert a.images.shape == (40, 36, 36, 3) and np.array_equal(a.images, b.images) and a.hashes == b.hashes
    assert family_counts(40, cfg["families"]) == {f: 10 for f in FAMILIES}
    assert [x["family"] for x in a.attributes] == [f for f in FAMILIES for _ in range(10)]


def test_corpus_drawn_in_worker_processes_is_the_same_byte_for_byte():
    # the pretraining draws its corpus in one forked worker per thread of its job, while it builds the model
    cfg = {"seed": 3, "images": 37, "image_size": 64, "families": {"count": 3, "fade": 1, "blur": 1, "combined": 2}}
    one = generate_corpus(cfg, 36)
    for workers in (2, 3):
        many = start_corpus(cfg, 36, workers)()
        assert many.images.dtype == np.uint8 and np.array_equal(many.images, one.images)
        assert many.attributes == one.attributes and many.hashes == one.hashes


def _evaluation_hashes(params: dict) -> set[str]:
    """Hashes of every image of every generated dataset of params.yaml, drawn as `generate` draws them."""
    out = set()
    for ds in params["datasets"].values():
        if ds["kind"] != "synthetic":
            continue
        lo, hi = ds["ranks"]
        levels = hi - lo + 1
        for i in range(ds["per_rank"] * levels):
            rng = np.random.default_rng([ds["seed"], i])
            out.add(image_hash(GENERATORS[ds["generator"]](rng, lo + i % levels, lo, hi, ds["image_size"])))
    return out


def test_no_evaluation_image_is_in_the_pretraining_corpus():
    """Every image of every evaluation split (all folds are subsets of the generated datasets) is
    absent from the corpus of every pretrained backbone of params.yaml, compared by pixel hashes."""
    evaluation = _evaluation_hashes(PARAMS)
    assert len(evaluation) == sum(
        d["per_rank"] * (d["ranks"][1] - d["ranks"][0] + 1) for d in PARAMS["datasets"].values()
        if d["kind"] == "synthetic")
    pretrained = [n for n, b in PARAMS["backbones"].items() if "pretrain" in b["weights"]]
    assert pretrained
    for name in pretrained:
        bb = backbone_config(PARAMS, name)
        corpus = generate_corpus(bb["weights"]["pretrain"]["corpus"], bb["resize"])
        assert len(corpus.hashes) == bb["weights"]["pretrain"]["corpus"]["images"]
        assert not evaluation & set(corpus.hashes), name


def test_the_hash_check_would_catch_a_leak():
    """The same check sees an evaluation image when the corpus is drawn with a dataset's own seed."""
    ds = PARAMS["datasets"]["fading"]
    leaked = GENERATORS["fading"](np.random.default_rng([ds["seed"], 0]), 0, 0, 4, 64)
    assert image_hash(leaked) in _evaluation_hashes(PARAMS)
    assert image_hash(np.asarray(leaked)) == image_hash(leaked)


SMALL = """
backbones:
  tiny_pretrained:
    weights:
      pretrain: {init_seed: 0, seed: 0, corpus: {seed: 5, images: 64, image_size: 64,
                 families: {count: 1, fade: 1, blur: 1, combined: 1}},
                 steps: 3, batch_size: 16, lr: 1.0e-3, warmup: 1, weight_decay: 0.05, temperature: 0.07}
"""


def test_pretrain_verb_writes_a_loadable_open_clip_state_dict(in_tmp):
    from ordclip import layout
    from ordclip.cli import main
    from ordclip.models.backbone import create_backbone

    (in_tmp / "small.yaml").write_text(SMALL)
    args = ["--params", str(ROOT / "params.yaml"), "--params", str(in_tmp / "small.yaml")]
    assert main(["pretrain", *args, "--backbone", "tiny_pretrained"]) == 0
    first = torch.load(in_tmp / layout.backbone_weights("tiny_pretrained"), weights_only=True)
    for name in ("log.jsonl", "corpus.json", "samples.png", "curve.png"):
        assert (in_tmp / layout.pretrain_file("tiny_pretrained", name)).stat().st_size > 0
    info = json.loads((in_tmp / layout.pretrain_file("tiny_pretrained", "corpus.json")).read_text())
    assert info["images"] == 64 and info["distinct_images"] == 64
    params = load_params([ROOT / "params.yaml", in_tmp / "small.yaml"], {})
    bb = backbone_config(params, "tiny_pretrained")
    model = create_backbone(bb, layout.backbone_weights("tiny_pretrained"))
    torch.manual_seed(0)
    random = create_backbone(bb, None)
    assert not torch.equal(model.visual.conv1.weight, random.visual.conv1.weight)   # trained
    assert main(["pretrain", *args, "--backbone", "tiny_pretrained"]) == 0          # same seed, same weights
    again = torch.load(in_tmp / layout.backbone_weights("tiny_pretrained"), weights_only=True)
    assert again.keys() == first.keys() and all(torch.equal(again[k], first[k]) for k in first)
    # the backbone verb refuses a pretrained backbone
    assert main(["backbone", *args, "--backbone", "tiny_pretrained"]) == 2


def test_pretrain_is_a_verb_with_its_own_code_and_a_data_stage():
    from ordclip.dvcstages import DATA_RULES
    from ordclip.jobs import KEYS, VERBS, code_files, job_config

    job = job_config(PARAMS, "pretrain", backbone="tiny_pretrained")
    assert job == {"backbone": backbone_config(PARAMS, "tiny_pretrained")}
    assert KEYS["pretrain"] == ("backbone",) and "pretrain" in VERBS and "pretrain" in DATA_RULES
    files = {p.name for p in code_files("pretrain", job)}
    assert {"pretrain.py", "corpus.py", "synthetic.py", "ordclip-tiny.json"} <= files
    assert PARAMS["suites"]["demo"]["backbone"] == "tiny_pretrained"
    assert PARAMS["suites"]["demo_random"]["backbone"] == "tiny"
    assert PARAMS["suites"]["demo_random"]["methods"] == PARAMS["suites"]["demo"]["methods"]


def test_the_demo_plans_pretraining_once_and_the_random_ablation_none(repo_copy):
    env_path = f"{Path(sys.executable).parent}:{__import__('os').environ['PATH']}"

    def plan(*args):
        proc = subprocess.run([sys.executable, "-m", "snakemake", "-n", *args], cwd=repo_copy,
                              capture_output=True, text=True, env={**__import__("os").environ, "PATH": env_path})
        assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
        return dict(re.findall(r"^(\w+)\s+(\d+)$", proc.stdout + proc.stderr, flags=re.M))

    demo = plan("results/table1.csv", "results/table2.csv")
    assert demo["pretrain"] == "1" and "backbone" not in demo
    ablation = plan("results/demo_random/table1.csv")
    assert ablation["backbone"] == "1" and "pretrain" not in ablation


def test_pretrain_prints_progress_and_not_open_clips_random_init_warning(in_tmp, capfd):
    """The job's log (stderr) has a line per 25 steps with loss, img/s and eta, as training's, and
    not open_clip's "No pretrained weights loaded ... initialized randomly" (the init is ours)."""
    from ordclip.cli import main

    (in_tmp / "small.yaml").write_text(SMALL)
    args = ["--params", str(ROOT / "params.yaml"), "--params", str(in_tmp / "small.yaml")]
    assert main(["pretrain", *args, "--backbone", "tiny_pretrained"]) == 0
    err = capfd.readouterr().err
    steps = load_params([ROOT / "params.yaml", in_tmp / "small.yaml"], {})["backbones"]["tiny_pretrained"][
        "weights"]["pretrain"]["steps"]
    lines = [line for line in err.splitlines() if line.startswith("ordclip: pretrain tiny_pretrained step ")]
    assert len(lines) == len({s for s in range(steps) if s % 25 == 0 or s == steps - 1}), err
    assert re.fullmatch(rf"ordclip: pretrain tiny_pretrained step {steps}/{steps} loss \d+\.\d{{4}} temperature "
                        r"\d+\.\d{4} lr \S+ \d+ img/s elapsed \S+ eta \S+", lines[-1]), lines[-1]
    assert "No pretrained weights loaded" not in err and "initialized randomly" not in err
