import csv

import numpy as np
import pytest
from PIL import Image

from ordclip.data.prepare import prepare, read_labels
from ordclip.data.splits import kfold, read_split, stratified, write_split
from ordclip.data.synthetic import GENERATORS, generate
from ordclip.errors import DataError


def _cfg(generator, seed=7, per_rank=3, ranks=(0, 4)):
    return {"generator": generator, "ranks": list(ranks), "per_rank": per_rank, "image_size": 64, "seed": seed}


@pytest.mark.parametrize("generator", sorted(GENERATORS))
def test_generation_is_deterministic(tmp_path, generator):
    generate(_cfg(generator), tmp_path / "a")
    generate(_cfg(generator), tmp_path / "b")
    generate(_cfg(generator, seed=8), tmp_path / "c")
    a = (tmp_path / "a/images/00003.png").read_bytes()
    assert a == (tmp_path / "b/images/00003.png").read_bytes()
    assert a != (tmp_path / "c/images/00003.png").read_bytes()
    assert (tmp_path / "a/labels.csv").read_text() == (tmp_path / "b/labels.csv").read_text()
    rows = list(csv.DictReader(open(tmp_path / "a/labels.csv")))
    assert len(rows) == 15 and sorted({int(r["label"]) for r in rows}) == [0, 1, 2, 3, 4]


def _level_images(generator, n=12):
    return {lv: [np.asarray(GENERATORS[generator](np.random.default_rng([1, i]), lv, 0, 4, 64), dtype=float)
                 for i in range(n)] for lv in range(5)}


def test_fading_label_is_visible():
    # Contrast (pixel standard deviation) falls with the fading level.
    contrast = {lv: np.mean([im.std() for im in ims]) for lv, ims in _level_images("fading").items()}
    assert all(contrast[lv] > contrast[lv + 1] for lv in range(4))


def test_blur_label_is_visible():
    # High-frequency energy (mean absolute horizontal gradient) falls with the blur level.
    grad = {lv: np.mean([np.abs(np.diff(im, axis=1)).mean() for im in ims]) for lv, ims in _level_images("blur").items()}
    assert all(grad[lv] > grad[lv + 1] for lv in range(4))


def test_counting_label_is_visible():
    from scipy import ndimage

    for seed in range(6):
        for label in range(1, 11):
            img = GENERATORS["counting"](np.random.default_rng([seed, label]), label, 1, 10, 64)
            bg = np.median(np.asarray(img, dtype=float).reshape(-1, 3), axis=0)
            mask = np.abs(np.asarray(img, dtype=float) - bg).sum(-1) > 90
            components, n = ndimage.label(mask)
            sizes = np.bincount(components.ravel())[1:]
            assert (sizes >= 9).sum() == label, (seed, label)   # shapes, not specks of noise


def _write_dataset(root, rows):
    (root / "img").mkdir(parents=True, exist_ok=True)
    for name, _ in rows:
        if name.endswith(".png") and "missing" not in name:
            Image.new("RGB", (20, 10), (200, 10, 10)).save(root / name)
    with open(root / "labels.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["path", "label"])
        w.writerows(rows)


def test_prepare_writes_cache_and_ranks(tmp_path):
    _write_dataset(tmp_path, [("img/a.png", 3), ("img/b.png", 5), ("img/c.png", 4)])
    prepare(tmp_path / "labels.csv", tmp_path, 8, None, tmp_path / "x.npy", tmp_path / "index.csv")
    images = np.load(tmp_path / "x.npy")
    assert images.shape == (3, 8, 8, 3) and images.dtype == np.uint8
    assert images[0, 4, 4].tolist() == [200, 10, 10]
    index = list(csv.DictReader(open(tmp_path / "index.csv")))
    assert [int(r["rank"]) for r in index] == [0, 2, 1]


@pytest.mark.parametrize("rows, message", [
    ([("img/a.png", 1), ("img/missing.png", 2)], "line 3: image .*missing.png not found"),
    ([("img/a.png", 1), ("img/a.png", "2.5")], "line 3: label '2.5' is not an integer"),
    ([("img/a.png", "")], "line 2: label '' is not an integer"),
])
def test_bad_rows_name_their_line(tmp_path, rows, message):
    _write_dataset(tmp_path, rows)
    with pytest.raises(DataError, match=message):
        read_labels(tmp_path / "labels.csv", tmp_path)


def test_unreadable_image_names_its_line(tmp_path):
    _write_dataset(tmp_path, [("img/a.png", 1), ("img/bad.jpg", 2)])
    (tmp_path / "img/bad.jpg").write_bytes(b"not an image")
    with pytest.raises(DataError, match="line 3: cannot decode image img/bad.jpg"):
        prepare(tmp_path / "labels.csv", tmp_path, 8, None, tmp_path / "x.npy", tmp_path / "i.csv")
    assert not (tmp_path / "x.npy").exists()


def test_label_outside_configured_ranks(tmp_path):
    _write_dataset(tmp_path, [("img/a.png", 1), ("img/b.png", 9)])
    with pytest.raises(DataError, match="label 9 is outside the ranks 1..5"):
        prepare(tmp_path / "labels.csv", tmp_path, 8, [1, 5], tmp_path / "x.npy", tmp_path / "i.csv")


def test_every_label_outside_the_ranks_is_named_by_its_line(tmp_path):
    _write_dataset(tmp_path, [("img/a.png", 0), ("img/b.png", 3), ("img/c.png", 9), ("img/d.png", 6)])
    with pytest.raises(DataError) as err:
        prepare(tmp_path / "labels.csv", tmp_path, 8, [1, 5], tmp_path / "x.npy", tmp_path / "i.csv")
    message = str(err.value)
    assert "labels.csv: 3 out-of-range labels; fix them all and rerun" in message
    assert ("line 2: label 0 is outside the ranks 1..5" in message and "line 4: label 9" in message
            and "line 5: label 6" in message and "line 3:" not in message)
    assert not (tmp_path / "x.npy").exists()


def test_stratified_split_fractions_disjoint_and_seeded():
    ranks = np.repeat(np.arange(4), 40)
    cfg = {"train": 0.6, "val": 0.15, "test": 0.25}
    a = stratified(ranks, 0, 5, cfg)
    for r in range(4):
        parts = a[ranks == r]
        assert (parts == "train").sum() == 24 and (parts == "val").sum() == 6 and (parts == "test").sum() == 10
    assert (a == stratified(ranks, 0, 5, cfg)).all()
    assert (a != stratified(ranks, 1, 5, cfg)).any()


def test_split_file_roundtrip(tmp_path):
    with open(tmp_path / "index.csv", "w") as f:
        f.write("index,path,label,rank\n" + "".join(f"{i},p{i},{i % 2},{i % 2}\n" for i in range(20)))
    write_split(tmp_path / "index.csv", 0, {"protocol": "stratified", "seed": 0, "train": 0.5, "val": 0.2,
                                            "test": 0.3}, tmp_path / "fold0.csv")
    parts = read_split(tmp_path / "fold0.csv")
    assert [len(parts[p]) for p in ("train", "val", "test")] == [10, 4, 6]
    assert not set(parts["train"]) & set(parts["test"])


def test_distribution_shift_thins_the_most_frequent_train_ranks():
    from ordclip.data.splits import distribution_shift

    # train counts per rank 0..4: 30, 50, 10, 50, 20; val and test images of every rank
    counts = [30, 50, 10, 50, 20]
    ranks = np.concatenate([np.repeat(np.arange(5), counts), np.arange(5), np.arange(5)])
    split = np.array(["train"] * sum(counts) + ["val"] * 5 + ["test"] * 5, dtype=object)
    out = distribution_shift(split, ranks, top_classes=3, keep_percent=20, seed=0)
    kept = [int(((out == "train") & (ranks == r)).sum()) for r in range(5)]
    # the 3 most frequent: ranks 1 and 3 (50 each), then rank 0 (30):
    # int(n * 0.2) of each, as the official code's scale_factor 0.2; ranks 2 and 4 untouched
    assert kept == [6, 10, 10, 10, 20]
    assert (out[split != "train"] == split[split != "train"]).all()
    assert (out[(out != split)] == "").all()  # thinned images leave the fold, never change part
    assert (out == distribution_shift(split, ranks, 3, 20, 0)).all()
    assert (out != distribution_shift(split, ranks, 3, 20, 1)).any()
    # at least one image is kept (max(int(n * f), 1)), and 10 % is the official scale_factor 0.1
    small = np.array(["train"] * 4 + ["train"] * 40, dtype=object)
    thin = distribution_shift(small, np.repeat([0, 1], [4, 40]), top_classes=2, keep_percent=10, seed=0)
    assert [(thin[:4] == "train").sum(), (thin[4:] == "train").sum()] == [1, 4]
    # a tie at the cut-off goes to the lower rank: ranks 0 and 1 have 10 each, only one is thinned
    tie = np.array(["train"] * 20, dtype=object)
    cut = distribution_shift(tie, np.repeat([0, 1], 10), top_classes=1, keep_percent=20, seed=0)
    assert [(cut[:10] == "train").sum(), (cut[10:] == "train").sum()] == [2, 10]


def test_a_shift_variant_split_is_written_from_its_name(tmp_path):
    from ordclip.config import load_params, split_config
    from conftest import ROOT

    params = load_params([ROOT / "params.yaml"])
    cfg = split_config(params, "demo", "counting-top2keep20")
    assert cfg["shift"] == {"top_classes": 2, "keep_percent": 20} and cfg["protocol"] == "stratified"
    with open(tmp_path / "index.csv", "w") as f:
        f.write("index,path,label,rank\n" + "".join(f"{i},p{i},{i % 4},{i % 4}\n" for i in range(200)))
    write_split(tmp_path / "index.csv", 0, cfg, tmp_path / "fold0.csv")
    full = {"protocol": "stratified", "seed": 0, "train": 0.6, "val": 0.15, "test": 0.25}
    write_split(tmp_path / "index.csv", 0, full, tmp_path / "full.csv")
    shifted, base = read_split(tmp_path / "fold0.csv"), read_split(tmp_path / "full.csv")
    train_ranks = np.arange(200)[shifted["train"]] % 4
    assert [int((train_ranks == r).sum()) for r in range(4)] == [6, 6, 30, 30]  # 30 each before; ranks 0, 1 thinned
    assert set(shifted["train"]) < set(base["train"])
    assert (shifted["test"] == base["test"]).all() and (shifted["val"] == base["val"]).all()


def test_paper_cache_resizes_as_the_official_torchvision_resize(tmp_path):
    """OrdinalCLIP runner/utils.py:376-377 `transforms.Resize(input_resize)` ([256, 256], its default
    bilinear on PIL images): the paper backbones' cache is resized the same way, bit for bit; the
    demo's backbone keeps bicubic (our choice), and one cache size has one interpolation."""
    from conftest import ROOT
    from torchvision import transforms

    from ordclip.config import check, load_params
    from ordclip.errors import ConfigError
    from ordclip.jobs import job_config

    rng = np.random.default_rng(0)
    (tmp_path / "img").mkdir()
    Image.fromarray(rng.integers(0, 256, (37, 53, 3), dtype=np.uint8)).save(tmp_path / "img/a.png")
    (tmp_path / "labels.csv").write_text("path,label\nimg/a.png,1\n")
    params = load_params([ROOT / "params.yaml"])
    job = job_config(params, "prepare", dataset="morph2", size=256)
    assert job["interpolation"] == "bilinear"
    assert job_config(params, "prepare", dataset="counting", size=36)["interpolation"] == "bicubic"
    for kind in ("bilinear", "bicubic"):
        prepare(tmp_path / "labels.csv", tmp_path, 24, None, tmp_path / f"{kind}.npy", tmp_path / "i.csv",
                interpolation=kind)
    with Image.open(tmp_path / "img/a.png") as img:
        official = np.asarray(transforms.Resize([24, 24])(img.convert("RGB")))
    assert np.array_equal(np.load(tmp_path / "bilinear.npy")[0], official)
    assert not np.array_equal(np.load(tmp_path / "bicubic.npy")[0], official)
    params["backbones"]["rn50_openai"]["resize_interpolation"] = "bicubic"
    with pytest.raises(ConfigError, match=r"backbones: bilinear \(vitb16_openai, vitb32_openai, vitl14_openai\); "
                                          r"bicubic \(rn50_openai\) all cache images at resize 256"):
        check(params)


def test_scikit_learns_stratified_splitters_cannot_give_todays_folds():
    """Why kfold and stratified are not StratifiedKFold / StratifiedShuffleSplit: even the number of
    test images per rank differs (sklearn deals a rank's images round-robin over the folds in label
    order, and rounds with _approximate_mode), before any random draw, so no seed reproduces the
    published folds of our results."""
    from sklearn.model_selection import StratifiedKFold, StratifiedShuffleSplit

    ranks = np.repeat(np.arange(3), [41, 41, 42])
    ours = [[int(((kfold(ranks, k, 0, {"folds": 5, "val": 0.0}) == "test") & (ranks == r)).sum()) for r in range(3)]
            for k in range(5)]
    for seed in range(5):
        theirs = [[int((ranks[test] == r).sum()) for r in range(3)]
                  for _, test in StratifiedKFold(5, shuffle=True, random_state=seed).split(ranks, ranks)]
        assert sorted(theirs) != sorted(ours)
    ranks = np.repeat(np.arange(3), [7, 9, 10])
    split = stratified(ranks, 0, 0, {"train": 0.6, "val": 0.15, "test": 0.25})
    ours = [int(((split == "test") & (ranks == r)).sum()) for r in range(3)]
    _, test = next(StratifiedShuffleSplit(1, test_size=0.25, random_state=0).split(ranks, ranks))
    assert ours == [2, 2, 2] and [int((ranks[test] == r).sum()) for r in range(3)] != ours
