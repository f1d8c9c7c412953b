"""Dataset adapters on generated files in the real layouts (names, folders, list formats), the split
protocols, and fetch -> prepare -> split through the CLI."""

import csv
import hashlib
import json
import os
import random
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
from local_http import serve
from PIL import Image

from ordclip.data import adience, aesthetics, clap2015, fgnet, hci, morph2
from ordclip.data.prepare import prepare, read_label_table
from ordclip.data.splits import given, kfold, per_class, read_index, read_split, write_split
from ordclip.errors import ConfigError, DataError

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def no_proxy(monkeypatch):
    for var in ("http_proxy", "HTTP_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)


def image(path: Path, shade: int = 128, fmt: str | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (12, 10), (shade, 255 - shade, 40)).save(path, format=fmt)
    return path


def tar_dir(folder: Path, archive: Path, mode: str = "w") -> Path:
    with tarfile.open(archive, mode) as tf:
        for path in sorted(folder.rglob("*")):
            tf.add(path, arcname=path.relative_to(folder).as_posix(), recursive=False)
    return archive


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def labels(raw: Path) -> list[dict]:
    with open(raw / "labels.csv", newline="") as f:
        return list(csv.DictReader(f))


# ---- HCI ------------------------------------------------------------------------------------------

DECADES = ["1930s", "1940s", "1950s", "1960s", "1970s"]


def make_hci(tmp: Path, per_decade: int = 4) -> Path:
    """HistoricalColor-ECCV2012-DecadeDatabase.tar as the authors lay it out."""
    stage = tmp / "hci_stage"
    base = stage / "HistoricalColor-ECCV2012" / "data" / "imgs" / "decade_database"
    for d, decade in enumerate(DECADES):
        for i in range(per_decade):
            image(base / decade / f"{hashlib.md5(f'{decade}{i}'.encode()).hexdigest()}.jpg", 40 * d + i)
        (base / decade / ".DS_Store").write_bytes(b"\0\0")
    (stage / "HistoricalColor-ECCV2012" / "README.txt").write_text("decade database")
    www = tmp / "www"
    www.mkdir(exist_ok=True)
    return tar_dir(stage, www / "HistoricalColor-ECCV2012-DecadeDatabase.tar")


def hci_cfg(url: str, **checksum) -> dict:
    return {"name": "hci", "kind": "hci", "files": {"archive": {"url": url, **checksum}}}


def test_hci_downloads_verifies_and_indexes(in_tmp, capsys):
    archive = make_hci(in_tmp)
    with serve(archive.parent) as (url, requests):
        cfg = hci_cfg(f"{url}/{archive.name}", sha256=sha256(archive))
        hci.fetch(cfg, "data/raw/hci")
        rows = labels(in_tmp / "data/raw/hci")
        assert len(rows) == 20 and sorted({r["label"] for r in rows}) == ["0", "1", "2", "3", "4"]
        assert all((in_tmp / "data/raw/hci" / r["path"]).is_file() for r in rows)
        assert rows[0]["path"].startswith("images/HistoricalColor-ECCV2012/data/imgs/decade_database/1930s/")
        record = json.loads((in_tmp / "data/raw/hci/fetch.json").read_text())
        assert record["files"]["archive"]["sha256"] == sha256(archive)
        assert record["labels"] == {str(i): 4 for i in range(5)}
        assert (in_tmp / "data/downloads/hci" / archive.name).is_file()
        hci.fetch(cfg, "data/raw/hci")                      # a re-fetch reuses the verified download
        assert len(requests) == 1


def test_hci_bad_checksum_leaves_no_raw_dir(in_tmp):
    archive = make_hci(in_tmp, per_decade=1)
    with serve(archive.parent) as (url, _):
        with pytest.raises(DataError, match=f"sha256 mismatch: expected {'a' * 64}, got {sha256(archive)}"):
            hci.fetch(hci_cfg(f"{url}/{archive.name}", sha256="a" * 64), "data/raw/hci")
    assert not (in_tmp / "data/raw/hci").exists() and not list((in_tmp / "data/downloads/hci").iterdir())


def test_hci_md5_only_download_prints_sha256(in_tmp, capsys):
    archive = make_hci(in_tmp, per_decade=1)
    with serve(archive.parent) as (url, _):
        hci.fetch(hci_cfg(f"{url}/{archive.name}", md5=hashlib.md5(archive.read_bytes()).hexdigest()), "data/raw/hci")
    assert f"its sha256 is {sha256(archive)}" in capsys.readouterr().err


def test_hci_archive_without_a_decade(in_tmp):
    stage = in_tmp / "stage"
    image(stage / "decade_database" / "1930s" / "a.jpg")
    archive = tar_dir(stage, in_tmp / "partial.tar")
    with pytest.raises(DataError, match="no images in a folder named 1940s"):
        hci.fetch({"name": "hci", "files": {"archive": {"path": str(archive)}}}, "data/raw/hci")
    assert not (in_tmp / "data/raw/hci").exists()


# ---- MORPH II -------------------------------------------------------------------------------------

def morph_names(n: int) -> list[tuple[str, int]]:
    out = []
    for i in range(n):
        age = (20, 36, 61)[i % 3]
        out.append((f"{100000 + i:06d}_{i % 10}{'MF'[i % 2]}{age}.JPG", age))
    return out


def make_morph(tmp: Path, n: int = 12) -> tuple[Path, list[tuple[str, int]]]:
    names = morph_names(n)
    stage = tmp / "morph_stage" / "Album2"
    for i, (name, _) in enumerate(names):
        image(stage / name, 10 * i, fmt="JPEG")
    image(stage / "999999_0M99.JPG")                              # in the archive, in no list
    archive = tmp / "archives" / "morph2.zip"
    archive.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(archive, "w") as zf:
        for path in sorted(stage.rglob("*.JPG")):
            zf.write(path, path.relative_to(stage.parent).as_posix())
    return archive, names


def write_setting_a(folder: Path, names, n_train=8, n_test=2) -> dict[int, dict[str, list[str]]]:
    """The 10 setting-A lists in their two released formats: fold 0 space-separated with a CRLF
    header 'race gender age filename database'; folds 1-4 comma-separated with an index column."""
    folds = {}
    for k in range(5):
        chosen = random.Random(k).sample(names, n_train + n_test)
        folds[k] = {"train": [n for n, _ in chosen[:n_train]], "test": [n for n, _ in chosen[n_train:]]}
        for part, rows in (("train", chosen[:n_train]), ("test", chosen[n_train:])):
            if k == 0:
                text = "race gender age filename database\r\n" + "".join(
                    f"0 {i % 2} {age} {name} morph\r\n" for i, (name, age) in enumerate(rows))
            else:
                text = ",race,gender,age,filename,database\r\n" + "".join(
                    f"{4000 + i},0,{i % 2},{age},{name},morph\r\n" for i, (name, age) in enumerate(rows))
            (folder / f"Setting_A_fold{k}_{part}.txt").write_text(text, newline="")
    return folds


def morph_cfg(tmp: Path, archive: Path, setting: str = "A") -> dict:
    files = {"archive": {"path": str(archive)}}
    files.update({name: {"path": str(tmp / "lists" / f"{name}.txt")} for name in morph2.SETTINGS[setting]})
    return {"name": "morph2", "kind": "morph2", "setting": setting, "ranks": [16, 77], "files": files}


def test_morph2_setting_a(in_tmp):
    archive, names = make_morph(in_tmp)
    (in_tmp / "lists").mkdir()
    folds = write_setting_a(in_tmp / "lists", names)
    morph2.fetch(morph_cfg(in_tmp, archive), "data/raw/morph2")
    raw = in_tmp / "data/raw/morph2"
    rows = {Path(r["path"]).name: r for r in labels(raw)}
    assert set(rows) == {n for f in folds.values() for part in f.values() for n in part}
    assert not (raw / "images/Album2/999999_0M99.JPG").exists()          # only listed images are extracted
    ages = dict(names)
    for name, row in rows.items():
        assert int(row["label"]) == ages[name] and row["path"] == f"images/Album2/{name}"
        for k in range(5):
            expected = "train" if name in folds[k]["train"] else "test" if name in folds[k]["test"] else ""
            assert row[f"split{k}"] == expected

    prepare(raw / "labels.csv", raw, 8, [16, 77], in_tmp / "images.npy", in_tmp / "index.csv")
    write_split(in_tmp / "index.csv", 3, {"protocol": "given", "seed": 0, "folds": 5, "val": 0.5}, in_tmp / "f3.csv")
    index, parts = read_index(in_tmp / "index.csv"), read_split(in_tmp / "f3.csv")
    names_of = lambda part: {Path(index["path"][i]).name for i in parts[part]}   # noqa: E731
    assert names_of("test") == set(folds[3]["test"])
    assert names_of("train") | names_of("val") == set(folds[3]["train"]) and names_of("val")


def test_morph2_missing_licensed_archive(in_tmp):
    (in_tmp / "lists").mkdir()
    write_setting_a(in_tmp / "lists", morph_names(12))
    cfg = morph_cfg(in_tmp, Path("data/archives/morph2/morph2.zip"))
    with pytest.raises(DataError) as err:
        morph2.fetch(cfg, "data/raw/morph2")
    message = str(err.value)
    assert "expected morph2.zip (MORPH II images archive) at data/archives/morph2/morph2.zip" in message
    assert "https://ebill.uncw.edu/" in message and message.endswith("then rerun")
    assert not (in_tmp / "data/raw/morph2").exists()


def test_morph2_settings_c_lists(in_tmp):
    archive, names = make_morph(in_tmp, n=10)
    (in_tmp / "lists").mkdir()
    for k in range(5):
        (in_tmp / "lists" / f"morph_C_0{k}.txt").write_text(
            "".join(f"../../datasets/Morph/image/{name} {age}\n" for name, age in names[2 * k:2 * k + 2]))
    morph2.fetch(morph_cfg(in_tmp, archive, "C"), "data/raw/morph2")
    rows = labels(in_tmp / "data/raw/morph2")
    assert sorted(int(r["fold"]) for r in rows) == [0, 0, 1, 1, 2, 2, 3, 3, 4, 4]
    assert {Path(r["path"]).name: int(r["fold"]) for r in rows}[names[5][0]] == 2


@pytest.mark.parametrize("row, message", [
    ("0 0 abc 100000_0M20.JPG morph", r"Setting_A_fold0_test.txt line 2: age 'abc' is not a whole number"),
    ("0 0 20 100000_0M20.JPG", r"Setting_A_fold0_test.txt line 2: 4 fields for the 5 columns"),
    ("0 0 20 555555_0M20.JPG morph", r"Setting_A_fold0_test.txt line 2: image 555555_0M20.JPG is not in .*morph2.zip"),
])
def test_morph2_bad_rows(in_tmp, row, message):
    archive, names = make_morph(in_tmp)
    (in_tmp / "lists").mkdir()
    write_setting_a(in_tmp / "lists", names)
    (in_tmp / "lists/Setting_A_fold0_test.txt").write_text(f"race gender age filename database\n{row}\n")
    with pytest.raises(DataError, match=message):
        morph2.fetch(morph_cfg(in_tmp, archive), "data/raw/morph2")


def test_morph2_conflicting_ages_and_unknown_setting(in_tmp):
    archive, names = make_morph(in_tmp)
    (in_tmp / "lists").mkdir()
    write_setting_a(in_tmp / "lists", names)
    name, age = names[0]
    with open(in_tmp / "lists/Setting_A_fold4_test.txt", "a") as f:
        f.write(f"9,0,0,{age + 1},{name},morph\n")
    with pytest.raises(DataError, match=f"{name} has age {age + 1}, but {age} at"):
        morph2.fetch(morph_cfg(in_tmp, archive), "data/raw/morph2")
    with pytest.raises(ConfigError, match="datasets.morph2.setting: 'E'"):
        morph2.fetch({**morph_cfg(in_tmp, archive), "setting": "E"}, "data/raw/morph2")


def write_setting_b(folder: Path, names) -> list[list[str]]:
    """The 3 setting-B lists as released: space-separated, CRLF, header 'race gender age filename
    database', gender coded 0 for the M of the file name; the names cut into three equal runs."""
    n = len(names) // 3
    lists = [names[k * n:(k + 1) * n] for k in range(3)]
    for k, rows in enumerate(lists):
        text = "race gender age filename database\r\n" + "".join(
            f"{i % 2} {int('F' in name)} {age} {name} morph\r\n" for i, (name, age) in enumerate(rows))
        (folder / f"Setting_B_fold{k}.txt").write_text(text, newline="")
    return [[n for n, _ in rows] for rows in lists]


def split_names(tmp: Path, raw: Path, fold: int, folds: int, val: float = 0.0) -> dict[str, set[str]]:
    """prepare the raw folder once, write the ``given`` split of ``fold``; the file names per part."""
    if not (tmp / "index.csv").exists():
        prepare(raw / "labels.csv", raw, 8, None, tmp / "images.npy", tmp / "index.csv")
    write_split(tmp / "index.csv", fold, {"protocol": "given", "seed": 0, "folds": folds, "val": val},
                tmp / f"fold{fold}.csv")
    index, parts = read_index(tmp / "index.csv"), read_split(tmp / f"fold{fold}.csv")
    return {part: {Path(index["path"][i]).name for i in parts[part]} for part in ("train", "val", "test")}


@pytest.mark.parametrize("orientation", ["train_one", "test_one"])
def test_morph2_setting_b_orientations(in_tmp, orientation):
    archive, names = make_morph(in_tmp, n=18)
    (in_tmp / "lists").mkdir()
    lists = write_setting_b(in_tmp / "lists", names)
    cfg = {**morph_cfg(in_tmp, archive, "B"), "orientation": orientation}
    morph2.fetch(cfg, "data/raw/morph2")
    raw = in_tmp / "data/raw/morph2"
    rows = labels(raw)
    assert len(rows) == 18 and set(rows[0]) == ({"path", "label", "split0", "split1", "split2"}
                                                if orientation == "train_one" else {"path", "label", "fold"})
    record = json.loads((raw / "fetch.json").read_text())
    assert record["orientation"] == orientation and record["subjects"] == 18
    for k in range(3):
        parts = split_names(in_tmp, raw, k, 3, val=0.5)
        others = {n for j in range(3) if j != k for n in lists[j]}
        train, test = (set(lists[k]), others) if orientation == "train_one" else (others, set(lists[k]))
        assert parts["train"] | parts["val"] == train and parts["test"] == test
        assert not parts["train"] & parts["val"]
        assert (len(parts["val"]), len(parts["test"])) == ((3, 12) if orientation == "train_one" else (6, 6))


def test_morph2_setting_b_needs_an_orientation(in_tmp):
    archive, names = make_morph(in_tmp, n=6)
    (in_tmp / "lists").mkdir()
    write_setting_b(in_tmp / "lists", names)
    with pytest.raises(ConfigError, match=r"datasets\.morph2\.orientation: None; setting B needs one of "
                                          r"\['train_one', 'test_one'\]"):
        morph2.fetch(morph_cfg(in_tmp, archive, "B"), "data/raw/morph2")
    with pytest.raises(ConfigError, match="datasets.morph2.orientation: 'train_one' applies to setting B only"):
        morph2.fetch({**morph_cfg(in_tmp, archive, "C"), "orientation": "train_one"}, "data/raw/morph2")


def write_setting_cd(folder: Path, prefix: str, lists: list[list[tuple[str, int]]]) -> None:
    """Settings C/D lists as released: '<relative path> <age>' lines, LF."""
    for k, rows in enumerate(lists):
        (folder / f"{prefix}{k}.txt").write_text(
            "".join(f"../../datasets/Morph/image/{name} {age}\n" for name, age in rows), newline="")


def test_morph2_setting_d_folds_are_subject_exclusive(in_tmp):
    """Setting D: 5 subjects, each with 3 images, one subject per list; every fold tests on one
    subject and trains on the four others; fetch.json counts no subject in two lists."""
    stage = in_tmp / "stage"
    subjects = [[(f"{200000 + s:06d}_{i}{'MF'[s % 2]}{20 + 10 * i}.JPG", 20 + 10 * i) for i in range(3)]
                for s in range(5)]
    for s, rows in enumerate(subjects):
        for i, (name, _) in enumerate(rows):
            image(stage / "Album2" / name, 30 * s + i, fmt="JPEG")
    archive = tar_dir(stage, in_tmp / "morph2.tar")
    (in_tmp / "lists").mkdir()
    write_setting_cd(in_tmp / "lists", "morph_D_0", subjects)
    morph2.fetch(morph_cfg(in_tmp, archive, "D"), "data/raw/morph2")
    raw = in_tmp / "data/raw/morph2"
    record = json.loads((raw / "fetch.json").read_text())
    assert (record["subjects"], record["subjects_in_several_lists"], record["images_of_those_subjects"]) == (5, 0, 0)
    subject = lambda name: name.split("_")[0]   # noqa: E731
    for k in range(5):
        parts = split_names(in_tmp, raw, k, 5, val=0.5)
        trained = parts["train"] | parts["val"]
        assert parts["test"] == {n for n, _ in subjects[k]}
        assert len(trained) == 12 and not trained & parts["test"]
        assert {subject(n) for n in trained}.isdisjoint({subject(n) for n in parts["test"]})

    # a subject whose images are in two lists is counted (the released D lists have 180 such)
    subjects[1].append(subjects[0].pop())
    write_setting_cd(in_tmp / "lists", "morph_D_0", subjects)
    morph2.fetch(morph_cfg(in_tmp, archive, "D"), "data/raw/morph2_shared")
    record = json.loads((in_tmp / "data/raw/morph2_shared/fetch.json").read_text())
    assert (record["subjects_in_several_lists"], record["images_of_those_subjects"]) == (1, 3)


def test_morph2_setting_c_folds(in_tmp):
    archive, names = make_morph(in_tmp, n=10)
    (in_tmp / "lists").mkdir()
    lists = [names[2 * k:2 * k + 2] for k in range(5)]
    write_setting_cd(in_tmp / "lists", "morph_C_0", lists)
    morph2.fetch(morph_cfg(in_tmp, archive, "C"), "data/raw/morph2")
    raw = in_tmp / "data/raw/morph2"
    for k in range(5):
        parts = split_names(in_tmp, raw, k, 5, val=0.5)
        assert parts["test"] == {n for n, _ in lists[k]} and len(parts["train"] | parts["val"]) == 8


def test_morph2_list_checksum_and_missing_list(in_tmp):
    archive, names = make_morph(in_tmp, n=6)
    www = in_tmp / "www"
    www.mkdir()
    write_setting_b(www, names)
    cfg = {**morph_cfg(in_tmp, archive, "B"), "orientation": "train_one"}
    with serve(www) as (url, _):
        for k in range(3):
            cfg["files"][f"Setting_B_fold{k}"] = {"url": f"{url}/Setting_B_fold{k}.txt",
                                                  "sha256": sha256(www / f"Setting_B_fold{k}.txt")}
        cfg["files"]["Setting_B_fold1"]["sha256"] = "b" * 64
        with pytest.raises(DataError, match=rf"{url}/Setting_B_fold1.txt: sha256 mismatch: expected b{{64}}, got "
                                            rf"{sha256(www / 'Setting_B_fold1.txt')}; the download was discarded"):
            morph2.fetch(cfg, "data/raw/morph2")
    cfg["files"]["Setting_B_fold1"] = {"path": str(www / "Setting_B_fold1.txt"), "sha256": "c" * 64}
    with pytest.raises(DataError, match=r"datasets\.morph2\.files\.Setting_B_fold1: .*Setting_B_fold1.txt: "
                                        r"sha256 mismatch: expected c{64}"):
        morph2.fetch(cfg, "data/raw/morph2")
    cfg["files"]["Setting_B_fold1"] = {"path": "data/archives/morph2/Setting_B_fold1.txt"}
    with pytest.raises(DataError, match=r"expected Setting_B_fold1.txt \(MORPH II setting B list\) at "
                                        r"data/archives/morph2/Setting_B_fold1.txt; get it from L2RCLIP's datalist/morph"):
        morph2.fetch(cfg, "data/raw/morph2")
    assert not (in_tmp / "data/raw/morph2").exists()


# ---- CLAP2015 -------------------------------------------------------------------------------------

CLAP_ROWS = [("image_4797.jpg", 21, "4.026539", "train"), ("image_3532.jpg", 21, "5.26745", "train"),
             ("image_3720.jpg", 28, "3.569742", "train"), ("image_985.jpg", 48, "4.406435", "train"),
             ("image_12.jpg", 3, "0.699854", "train"), ("image_77.jpg", 48, "6.1", "val"),
             ("image_78.jpg", 28, "2.5", "val"), ("image_3780.jpg", 27, "3.862139", "test"),
             ("image_2301.jpg", 17, "3.550372", "test"), ("image_854.jpg", 85, "4.583221", "test")]


def clap_list(rows=CLAP_ROWS, extra: str = "") -> str:
    """total_2015.csv as L2RCLIP ships it: comma-separated, CRLF, header filename,age,stdv,database."""
    return "filename,age,stdv,database\r\n" + "".join(f"{n},{a},{s},{d}\r\n" for n, a, s, d in rows) + extra


def make_clap(tmp: Path) -> Path:
    """The images as the challenge's three zips unpack: one folder per part, any layout."""
    folder = {"train": "Train", "val": "Validation", "test": "Test"}
    images = tmp / "archives" / "clap2015" / "images"
    for i, (name, _, _, part) in enumerate(CLAP_ROWS):
        image(images / folder[part] / name, 20 * i, fmt="JPEG")
    image(images / "Train" / "image_99999.jpg")                      # unlisted: not extracted
    return images


def clap_cfg(images: Path, lst: dict) -> dict:
    return {"name": "clap2015", "kind": "clap2015", "ranks": [3, 85], "files": {"images": {"path": str(images)}, "list": lst}}


def test_clap2015_downloaded_list_and_given_fold(in_tmp):
    images = make_clap(in_tmp)
    www = in_tmp / "www"
    www.mkdir()
    (www / "total_2015.csv").write_text(clap_list(), newline="")
    with serve(www) as (url, _):
        clap2015.fetch(clap_cfg(images, {"url": f"{url}/total_2015.csv", "sha256": sha256(www / "total_2015.csv")}),
                       "data/raw/clap2015")
    raw = in_tmp / "data/raw/clap2015"
    rows = {Path(r["path"]).name: r for r in labels(raw)}
    assert set(rows) == {n for n, *_ in CLAP_ROWS} and (raw / rows["image_77.jpg"]["path"]).is_file()
    assert rows["image_77.jpg"]["path"] == "images/Validation/image_77.jpg"
    for name, age, stdv, part in CLAP_ROWS:
        assert (int(rows[name]["label"]), rows[name]["stdv"], rows[name]["split0"]) == (age, stdv, part)
    record = json.loads((raw / "fetch.json").read_text())
    assert record["parts"] == {"train": 5, "val": 2, "test": 3}
    assert record["files"]["list"]["sha256"] == sha256(www / "total_2015.csv")

    prepare(raw / "labels.csv", raw, 8, [3, 85], in_tmp / "images.npy", in_tmp / "index.csv")
    write_split(in_tmp / "index.csv", 0, {"protocol": "given", "seed": 0, "folds": 1}, in_tmp / "f0.csv")
    index, parts = read_index(in_tmp / "index.csv"), read_split(in_tmp / "f0.csv")
    assert index["rank"].min() == 0 and index["rank"].max() == 82          # ages 3..85
    for part in ("train", "val", "test"):
        assert {Path(index["path"][i]).name for i in parts[part]} == {n for n, *_, d in CLAP_ROWS if d == part}


@pytest.mark.parametrize("extra, message", [
    ("image_5.jpg,21.5,3.1,train\r\n", r"total_2015.csv line 12: age '21.5' is not a whole number"),
    ("image_5.jpg,21,3.1,dev\r\n", r"total_2015.csv line 12: database 'dev' is not one of \['train', 'val', 'test'\]"),
    ("image_5.jpg,21,n/a,train\r\n", r"total_2015.csv line 12: stdv 'n/a' is not a number"),
    ("image_5.jpg,21,train\r\n", r"total_2015.csv line 12: 3 fields for the 4 columns"),
    ("IMAGE_77.JPG,48,6.1,val\r\n", r"total_2015.csv line 12: IMAGE_77.JPG is also at line 7"),
    ("image_5.jpg,21,3.1,train\r\n",                              # well formed, but no such image
     r"total_2015.csv line 12: image image_5.jpg is not in .*images \(1 of 11 listed images missing, "
     r"11 images there\); get them from the ChaLearn LAP 2015"),
])
def test_clap2015_bad_rows(in_tmp, extra, message):
    images = make_clap(in_tmp)
    (in_tmp / "total_2015.csv").write_text(clap_list(extra=extra), newline="")
    cfg = clap_cfg(images, {"path": str(in_tmp / "total_2015.csv")})
    with pytest.raises(DataError, match=message):
        clap2015.fetch(cfg, "data/raw/clap2015")
    assert not (in_tmp / "data/raw/clap2015").exists()


def test_clap2015_header_checksum_and_missing_images(in_tmp):
    (in_tmp / "total_2015.csv").write_text("filename;age;stdv;database\n", newline="")
    cfg = clap_cfg(in_tmp / "data/archives/clap2015/images", {"path": str(in_tmp / "total_2015.csv")})
    with pytest.raises(DataError, match=r"total_2015.csv line 1: the header must name \['filename', 'age', 'stdv', "):
        clap2015.fetch(cfg, "data/raw/clap2015")
    (in_tmp / "total_2015.csv").write_text(clap_list(), newline="")
    cfg["files"]["list"]["sha256"] = "d" * 64
    with pytest.raises(DataError, match=r"datasets\.clap2015\.files\.list: .*total_2015.csv: sha256 mismatch"):
        clap2015.fetch(cfg, "data/raw/clap2015")
    cfg["files"]["list"]["sha256"] = sha256(in_tmp / "total_2015.csv")
    with pytest.raises(DataError, match=r"expected images \(CLAP2015 images\) at .*data/archives/clap2015/images; "
                                        r"get it from the ChaLearn LAP 2015 apparent age data, after registration"):
        clap2015.fetch(cfg, "data/raw/clap2015")


# ---- FG-NET ---------------------------------------------------------------------------------------

# subject -> images (the released naming: a letter suffix marks a second image at the same age)
FGNET = {"001": ["001A02.JPG", "001A05.JPG", "001A10.JPG", "001A14.JPG", "001A22.JPG"],
         "002": ["002A03.JPG", "002A05.JPG", "002A10.JPG", "002A10a.JPG", "002A14.JPG"],
         "010": ["010A05.JPG", "010A07.JPG", "010A07a.JPG", "010A10.JPG", "010A14.JPG", "010A69.JPG"],
         "082": ["082A00.JPG", "082A05.JPG", "082A10.JPG", "082A14.JPG", "082A22.JPG"]}


def make_fgnet(tmp: Path, subjects=FGNET, extra: tuple[str, ...] = ()) -> Path:
    """FGNET.zip as commonly distributed: FGNET/images/*.JPG and FGNET/points/*.pts."""
    archive = tmp / "data" / "archives" / "fgnet" / "FGNET.zip"
    archive.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(archive, "w") as zf:
        for i, name in enumerate(sorted(n for names in subjects.values() for n in names) + list(extra)):
            path = image(tmp / "stage" / name, 9 * i, fmt="JPEG")
            zf.write(path, f"FGNET/images/{name}")
            zf.writestr(f"FGNET/points/{Path(name).stem}.pts", "version: 1\nn_points: 68\n")
    return archive


def fgnet_cfg(archive: Path, folds: int | None = None) -> dict:
    split = {"protocol": "given", "val": 0.5, **({"folds": folds} if folds else {})}
    return {"name": "fgnet", "kind": "fgnet", "ranks": [0, 69], "split": split, "files": {"archive": {"path": str(archive)}}}


def test_fgnet_labels_from_names_and_leave_one_person_out(in_tmp):
    archive = make_fgnet(in_tmp)
    fgnet.fetch(fgnet_cfg(archive, folds=4), "data/raw/fgnet")
    raw = in_tmp / "data/raw/fgnet"
    rows = {Path(r["path"]).name: r for r in labels(raw)}
    assert set(rows) == {n for names in FGNET.values() for n in names}
    assert rows["010A07a.JPG"]["path"] == "images/FGNET/images/010A07a.JPG"
    assert (int(rows["010A07a.JPG"]["label"]), int(rows["082A00.JPG"]["label"]), int(rows["010A69.JPG"]["label"])) \
        == (7, 0, 69)
    assert {r["fold"] for n, r in rows.items() if n.startswith("010")} == {"2"}
    assert not list((raw / "images").rglob("*.pts"))
    record = json.loads((raw / "fetch.json").read_text())
    assert (record["images"], record["subjects"]) == (21, 4)
    assert record["fold_subjects"] == {"0": "001", "1": "002", "2": "010", "3": "082"}

    prepare(raw / "labels.csv", raw, 8, [0, 69], in_tmp / "images.npy", in_tmp / "index.csv")
    for k, subject in enumerate(sorted(FGNET)):
        write_split(in_tmp / "index.csv", k, fgnet_cfg(archive, 4)["split"] | {"seed": 0}, in_tmp / f"f{k}.csv")
        index, parts = read_index(in_tmp / "index.csv"), read_split(in_tmp / f"f{k}.csv")
        names = {part: {Path(index["path"][i]).name for i in parts[part]} for part in ("train", "val", "test")}
        assert names["test"] == set(FGNET[subject])
        assert names["train"] | names["val"] == {n for s, ns in FGNET.items() if s != subject for n in ns}
        # val: half of each age's train images (round half to even); an age with one train image stays in train
        ages = [int(n[4:6]) for s, ns in FGNET.items() if s != subject for n in ns]
        assert len(names["val"]) == sum(round(0.5 * ages.count(a)) for a in set(ages))
        single = [n for n in names["train"] | names["val"] if ages.count(int(n[4:6])) == 1]
        assert single and all(n in names["train"] for n in single)


@pytest.mark.parametrize("extra, message", [
    (("001A2.JPG",), r"FGNET.zip: image 'FGNET/images/001A2.JPG' is not named like an FG-NET image"),
    (("thumbs.jpg",), r"FGNET.zip: image 'FGNET/images/thumbs.jpg' is not named like an FG-NET image"),
    (("001a02.jpg",), r"FGNET.zip: two files match '001a02.jpg': FGNET/images/001A02.JPG and FGNET/images/001a02.jpg"),
])
def test_fgnet_bad_names(in_tmp, extra, message):
    with pytest.raises(DataError, match=message):
        fgnet.fetch(fgnet_cfg(make_fgnet(in_tmp, extra=extra)), "data/raw/fgnet")
    assert not (in_tmp / "data/raw/fgnet").exists()


def test_fgnet_subjects_must_match_the_folds_and_archive_must_be_placed(in_tmp):
    with pytest.raises(DataError, match=r"expected FGNET.zip \(FG-NET images archive\) at "
                                        r"data/archives/fgnet/FGNET.zip; get it from the FG-NET aging database"):
        fgnet.fetch(fgnet_cfg(Path("data/archives/fgnet/FGNET.zip"), 82), "data/raw/fgnet")
    archive = make_fgnet(in_tmp)
    with pytest.raises(DataError, match=r"FGNET.zip: 21 images of 4 subjects, but datasets.fgnet.split.folds is 82 "
                                        r"\(leave-one-person-out: one fold per subject\)"):
        fgnet.fetch(fgnet_cfg(archive, 82), "data/raw/fgnet")
    cfg = fgnet_cfg(archive, 4)
    cfg["files"]["archive"]["sha256"] = "e" * 64
    with pytest.raises(DataError, match=r"datasets\.fgnet\.files\.archive: .*FGNET.zip: sha256 mismatch"):
        fgnet.fetch(cfg, "data/raw/fgnet")
    assert not (in_tmp / "data/raw/fgnet").exists()


def test_cli_fetch_prepare_split_fgnet_layout(tmp_path):
    """The registry, the schema and the CLI on an FG-NET-like archive: 3 subjects, 3 folds."""
    make_fgnet(tmp_path, {s: FGNET[s] for s in ("001", "002", "082")})
    (tmp_path / "mine.yaml").write_text("""
datasets:
  fgnet: {split: {protocol: given, folds: 3, val: 0.5}}
suites:
  mine: {backbone: tiny, datasets: [fgnet], methods: [zeroshot], folds: 3}
""")
    outputs = []
    for args in (["fetch", "--dataset", "fgnet"], ["prepare", "--dataset", "fgnet", "--size", "36"],
                 ["split", "--suite", "mine", "--dataset", "fgnet", "--fold", "2"]):
        done = run_cli(tmp_path, *args)
        assert done.returncode == 0, done.stderr
        outputs.append(done.stderr)
    assert "ordclip: fgnet: 15 images of 3 subjects (3 leave-one-person-out folds)" in outputs[0]
    parts = read_split(tmp_path / "results/mine/splits/fgnet/fold2.csv")
    index = read_index(tmp_path / "data/prepared/fgnet/36px/index.csv")
    assert {Path(index["path"][i]).name for i in parts["test"]} == set(FGNET["082"])


# ---- Adience --------------------------------------------------------------------------------------

FOLD_HEADER = ("user_id\toriginal_image\tface_id\tage\tgender\tx\ty\tdx\tdy\ttilt_ang\t"
               "fiducial_yaw_angle\tfiducial_score")
AGES = ["(0, 2)", "(4, 6)", "(8, 12)", "(15, 20)", "(25, 32)", "(38, 43)", "(48, 53)", "(60, 100)",
        "(27, 32)", "13", "None", "35", "(38, 48)"]
GROUP_OF = [0, 1, 2, 3, 4, 5, 6, 7, 4, 2, None, None, None]


def make_adience(tmp: Path, users_per_fold: int = 2) -> tuple[Path, dict]:
    """aligned.tar.gz (aligned/<user>/landmark_aligned_face.<face_id>.<image>) and fold_k_data.txt,
    each user in one fold only."""
    stage, faces = tmp / "adience_stage", {}
    for k in range(5):
        lines = [FOLD_HEADER]
        for u in range(users_per_fold):
            user = f"{1000 + 10 * k + u}@N0{k}"
            for j, age in enumerate(AGES):
                face_id, original = 100 * k + 10 * u + j, f"{9000 + j}_{u}abc_o.jpg"
                image(stage / "aligned" / user / f"landmark_aligned_face.{face_id}.{original}", 17 * j)
                lines.append(f"{user}\t{original}\t{face_id}\t{age}\tf\t1\t2\t30\t30\t0\t0\t80")
                faces[f"{user}/landmark_aligned_face.{face_id}.{original}"] = (k, GROUP_OF[j])
        (tmp / f"fold_{k}_data.txt").write_text("\n".join(lines) + "\n")
    return tar_dir(stage, tmp / "aligned.tar.gz", "w:gz"), faces


def adience_cfg(tmp: Path, archive: Path, lists: str = "official") -> dict:
    names = adience.LISTS[lists]
    files = {"aligned": {"path": str(archive)}, **{n: {"path": str(tmp / f"{n}.txt")} for n in names}}
    return {"name": "adience", "kind": "adience", "lists": lists, "files": files}


def test_age_group():
    assert [adience.age_group(a) for a in AGES] == GROUP_OF
    with pytest.raises(ValueError):
        adience.age_group("about 30")


def test_adience_official_folds_are_subject_exclusive(in_tmp):
    archive, faces = make_adience(in_tmp)
    adience.fetch(adience_cfg(in_tmp, archive), "data/raw/adience")
    raw = in_tmp / "data/raw/adience"
    rows = labels(raw)
    kept = {f: v for f, v in faces.items() if v[1] is not None}
    assert {r["path"].removeprefix("images/aligned/"): (int(r["fold"]), int(r["label"])) for r in rows} == kept
    record = json.loads((raw / "fetch.json").read_text())
    assert record["left_out_no_single_group"] == {f"fold_{k}_data": 6 for k in range(5)}

    prepare(raw / "labels.csv", raw, 8, [0, 7], in_tmp / "images.npy", in_tmp / "index.csv")
    index = read_index(in_tmp / "index.csv")
    users = np.array([p.split("/")[2] for p in index["path"]])
    for k in range(5):
        write_split(in_tmp / "index.csv", k, {"protocol": "given", "seed": 1, "folds": 5, "val": 0.1}, in_tmp / "f.csv")
        parts = read_split(in_tmp / "f.csv")
        test_users = set(users[parts["test"]])
        assert set(parts["test"]) == set(np.flatnonzero(index["fold"] == k))
        assert not test_users & set(users[np.concatenate([parts["train"], parts["val"]])])
        assert len(parts["train"]) + len(parts["val"]) + len(parts["test"]) == len(users)


def test_adience_l2rclip_lists(in_tmp):
    archive, faces = make_adience(in_tmp)
    for k in range(5):
        (in_tmp / f"simplified_adience_{k}.txt").write_text(
            "".join(f"{face} {group}\n" for face, (fold, group) in faces.items() if fold == k and group is not None))
    adience.fetch(adience_cfg(in_tmp, archive, "l2rclip"), "data/raw/adience")
    assert len(labels(in_tmp / "data/raw/adience")) == sum(g is not None for _, g in faces.values())


def test_adience_bad_rows(in_tmp):
    archive, _ = make_adience(in_tmp, users_per_fold=1)
    path = in_tmp / "fold_2_data.txt"
    lines = path.read_text().splitlines()
    path.write_text("\n".join([*lines[:4], lines[4].replace("(15, 20)", "teen"), *lines[5:]]) + "\n")
    with pytest.raises(DataError, match=r"fold_2_data.txt line 5: age 'teen' is neither"):
        adience.fetch(adience_cfg(in_tmp, archive), "data/raw/adience")
    path.write_text(FOLD_HEADER + "\n" + "x@N01\tmissing.jpg\t7\t(0, 2)\tf\t1\t2\t3\t4\t0\t0\t1\n")
    with pytest.raises(DataError, match=r"fold_2_data.txt line 2: face x@N01/landmark_aligned_face.7.missing.jpg "
                                        r"is not in .*aligned.tar.gz"):
        adience.fetch(adience_cfg(in_tmp, archive), "data/raw/adience")
    path.unlink()
    with pytest.raises(DataError, match=r"expected fold_2_data.txt \(Adience fold 2 list\) .*Adience-data.html"):
        adience.fetch(adience_cfg(in_tmp, archive), "data/raw/adience")


# ---- Image Aesthetics -----------------------------------------------------------------------------

def make_aesthetics(tmp: Path, n: int = 10) -> tuple[Path, Path, list[tuple[str, int]]]:
    """Flickr photos <id>.jpg in a folder; the category list says <id>.png<TAB><level>.0."""
    photos = [(str(4317609574 + 7 * i), 1 + i % 5) for i in range(n)]
    for i, (pid, _) in enumerate(photos):
        image(tmp / "photos" / f"{pid}.jpg", 20 * i, fmt="JPEG")
    image(tmp / "photos" / "1111.jpg")                              # another category's photo
    lst = tmp / "animals_datasets.txt"
    lst.write_text("".join(f"{pid}.png\t{level}.0\n" for pid, level in photos))
    return tmp / "photos", lst, photos


def aesthetics_cfg(photos: Path, lst: Path, **extra) -> dict:
    return {"name": "aesthetics_animals", "kind": "aesthetics", "category": "animals",
            "files": {"images": {"path": str(photos)}, "list": {"path": str(lst)}}, **extra}


def test_aesthetics_matches_photos_by_id(in_tmp):
    photos, lst, listed = make_aesthetics(in_tmp)
    aesthetics.fetch(aesthetics_cfg(photos, lst), "data/raw/aesthetics_animals")
    rows = labels(in_tmp / "data/raw/aesthetics_animals")
    assert [(Path(r["path"]).stem, int(r["label"])) for r in rows] == listed
    assert not (in_tmp / "data/raw/aesthetics_animals/images/1111.jpg").exists()


@pytest.mark.parametrize("line, message", [
    ("4317609574.png\t2.5", r"line 1: level '2.5' is not a whole level 1-5"),
    ("4317609574.png\tgood", r"line 1: level 'good' is not a number"),
    ("4317609574.png\t6.0", r"line 1: level '6.0' is not a whole level 1-5"),
    ("4317609574.png", r"line 1: expected '<photo file> <level>'"),
])
def test_aesthetics_bad_rows(in_tmp, line, message):
    photos, lst, _ = make_aesthetics(in_tmp)
    lst.write_text(line + "\n" + lst.read_text().split("\n", 1)[1])
    with pytest.raises(DataError, match=message):
        aesthetics.fetch(aesthetics_cfg(photos, lst), "data/raw/aesthetics_animals")


def test_aesthetics_missing_photos(in_tmp):
    photos, lst, listed = make_aesthetics(in_tmp)
    (photos / f"{listed[3][0]}.jpg").unlink()
    with pytest.raises(DataError, match=rf"line 4: photo {listed[3][0]} is not in .*1 of 10 .*allow_missing"):
        aesthetics.fetch(aesthetics_cfg(photos, lst), "data/raw/aesthetics_animals")
    aesthetics.fetch(aesthetics_cfg(photos, lst, allow_missing=True), "data/raw/aesthetics_animals")
    assert len(labels(in_tmp / "data/raw/aesthetics_animals")) == 9
    record = json.loads((in_tmp / "data/raw/aesthetics_animals/fetch.json").read_text())
    assert record["missing_left_out"] == [listed[3][0]]



def test_aesthetics_fixed_split_is_l2rclips_train_and_test_lists(in_tmp):
    """lists: fixed reads <category>_train.txt and _test.txt (NumCLIP aesthetics.yaml:5-7 trains on the
    first and tests on the second): one fold whose test part is exactly the test list, val carved from
    train; a photo on both lists is refused with both places named."""
    import numpy as np

    photos, lst, listed = make_aesthetics(in_tmp)
    rows = lst.read_text().splitlines(keepends=True)
    (in_tmp / "animals_train.txt").write_text("".join(rows[:8]))
    (in_tmp / "animals_test.txt").write_text("".join(rows[8:]))
    cfg = {"name": "aesthetics_fixed_animals", "kind": "aesthetics", "category": "animals", "lists": "fixed",
           "files": {"images": {"path": str(photos)}, "train": {"path": str(in_tmp / "animals_train.txt")},
                     "test": {"path": str(in_tmp / "animals_test.txt")}}}
    aesthetics.fetch(cfg, "data/raw/aesthetics_fixed_animals")
    got = labels(in_tmp / "data/raw/aesthetics_fixed_animals")
    assert [(Path(r["path"]).stem, int(r["label"]), r["split0"]) for r in got] == \
        [(p, lv, "train" if i < 8 else "test") for i, (p, lv) in enumerate(listed)]
    index = {"rank": np.array([int(r["label"]) - 1 for r in got]), "split0": np.array([r["split0"] for r in got])}
    split = given(index, 0, 0, {"folds": 1, "val": 0.5})
    assert list(split[8:]) == ["test", "test"] and set(split[:8]) == {"train", "val"}
    (in_tmp / "animals_test.txt").write_text(rows[8] + rows[0])
    with pytest.raises(DataError, match=r"animals_test.txt line 2: photo 4317609574 is also in .*animals_train.txt line 1"):
        aesthetics.fetch(cfg, "data/raw/aesthetics_fixed_animals")
    with pytest.raises(ConfigError, match=r"datasets.aesthetics_fixed_animals.lists: 'kfold'; expected one of"):
        aesthetics.fetch({**cfg, "lists": "kfold"}, "data/raw/aesthetics_fixed_animals")


# ---- split protocols ------------------------------------------------------------------------------

def test_per_class_210_5_50():
    ranks = np.repeat(np.arange(5), 265)
    cfg = {"train": 210, "val": 5, "test": 50}
    folds = [per_class(ranks, k, 0, cfg) for k in range(10)]
    for split in folds:
        for r in range(5):
            parts = split[ranks == r]
            assert [(parts == p).sum() for p in ("train", "val", "test")] == [210, 5, 50]
    assert (folds[0] == per_class(ranks, 0, 0, cfg)).all()
    assert len({tuple(np.flatnonzero(s == "test")) for s in folds}) == 10     # 10 different random splits
    with pytest.raises(DataError, match="rank 2 has 264 images; the per_class split needs 210\\+5\\+50 = 265"):
        per_class(np.delete(ranks, 2 * 265), 0, 0, cfg)


def test_kfold_tests_every_image_once():
    ranks = np.repeat(np.arange(5), [4, 40, 100, 60, 11])
    cfg = {"folds": 5, "val": 0.05}
    folds = [kfold(ranks, k, 3, cfg) for k in range(5)]
    tested = np.stack([s == "test" for s in folds])
    assert (tested.sum(axis=0) == 1).all()                          # a partition: each image tested once
    for split in folds:
        assert set(split) == {"train", "val", "test"}
        assert (split[ranks == 2] == "val").sum() == 5 and (split[ranks == 2] == "test").sum() == 20


def index_with(columns: dict, n: int, ranks=None) -> dict:
    out = {"index": np.arange(n), "rank": np.asarray(ranks if ranks is not None else np.arange(n) % 2)}
    for name, values in columns.items():
        out[name] = np.asarray(values, dtype=object if name.startswith("split") else np.int64)
    return out


def test_given_fold_column_and_val_carving():
    fold = np.repeat(np.arange(3), 20)
    split = given(index_with({"fold": fold}, 60), 1, 0, {"folds": 3, "val": 0.25})
    assert (split[fold == 1] == "test").all()
    assert (split[fold != 1] == "val").sum() == 10 and (split[fold != 1] == "train").sum() == 30
    assert "val" not in given(index_with({"fold": fold}, 60), 1, 0, {"folds": 3, "val": 0.0})
    with pytest.raises(DataError, match=r"the fold column holds folds \[0, 1, 2\]; split.folds is 5"):
        given(index_with({"fold": fold}, 60), 1, 0, {"folds": 5})


def test_given_split_columns():
    cols = {"split0": ["train", "test", "", "val"], "split1": ["test", "train", "train", ""]}
    assert list(given(index_with(cols, 4), 0, 0, {"folds": 2, "val": 0.5})) == ["train", "test", "", "val"]
    assert list(given(index_with(cols, 4), 1, 0, {"folds": 2})) == ["test", "train", "train", ""]
    with pytest.raises(DataError, match="gives 2 folds .*split.folds is 5"):
        given(index_with(cols, 4), 0, 0, {"folds": 5})


def test_given_without_folds_names_the_index(tmp_path):
    (tmp_path / "index.csv").write_text("index,path,label,rank\n0,a.png,3,0\n1,b.png,4,1\n")
    with pytest.raises(DataError, match=r"index.csv: split protocol 'given', fold 0: .*'fold' column"):
        write_split(tmp_path / "index.csv", 0, {"protocol": "given", "seed": 0, "folds": 5}, tmp_path / "f.csv")


# ---- labels, index and split files: errors name the file and line ---------------------------------

def write_images(root: Path, names) -> None:
    for name in names:
        image(root / name)


def test_prepare_carries_protocol_columns(tmp_path):
    write_images(tmp_path, ["a.png", "b.png"])
    (tmp_path / "labels.csv").write_text("path,label,gender,fold,split0\na.png,3,f,1,train\nb.png,5,m,0,\n")
    prepare(tmp_path / "labels.csv", tmp_path, 8, None, tmp_path / "x.npy", tmp_path / "index.csv")
    assert (tmp_path / "index.csv").read_text().splitlines() == [
        "index,path,label,rank,fold,split0", "0,a.png,3,0,1,train", "1,b.png,5,2,0,"]
    index = read_index(tmp_path / "index.csv")
    assert index["fold"].tolist() == [1, 0] and index["split0"].tolist() == ["train", ""]


@pytest.mark.parametrize("text, message", [
    ("path,label,fold\na.png,3,x\n", "line 2: fold 'x' is not a fold number"),
    ("path,label,split0\n\na.png,3,learn\n", "line 3: split0 'learn' is not one of train, val, test"),
    ("path,label\na.png,3,extra\n", "line 2: 3 fields for 2 columns"),
])
def test_bad_protocol_rows(tmp_path, text, message):
    write_images(tmp_path, ["a.png"])
    (tmp_path / "labels.csv").write_text(text)
    with pytest.raises(DataError, match=message):
        read_label_table(tmp_path / "labels.csv", tmp_path)


def test_unreadable_image_names_its_true_line(tmp_path):
    write_images(tmp_path, ["a.png"])
    (tmp_path / "bad.jpg").write_bytes(b"not an image")
    (tmp_path / "labels.csv").write_text("path,label\n\na.png,1\n\n\nbad.jpg,2\n")
    with pytest.raises(DataError, match="labels.csv line 6: cannot decode image bad.jpg"):
        prepare(tmp_path / "labels.csv", tmp_path, 8, None, tmp_path / "x.npy", tmp_path / "i.csv")


def test_index_and_split_errors_name_the_file(tmp_path):
    with pytest.raises(DataError, match=r"index.csv: prepared index not found"):
        read_index(tmp_path / "index.csv")
    (tmp_path / "index.csv").write_text("index,path,label\n0,a.png,1\n")
    with pytest.raises(DataError, match=r"index.csv: missing column\(s\) \['rank'\]"):
        read_index(tmp_path / "index.csv")
    (tmp_path / "index.csv").write_text("index,path,label,rank\n0,a.png,1,x\n")
    with pytest.raises(DataError, match=r"index.csv line 2: rank 'x' is not an integer"):
        read_index(tmp_path / "index.csv")
    (tmp_path / "fold0.csv").write_text("index,split\n0,train\n1,holdout\n")
    with pytest.raises(DataError, match=r"fold0.csv line 3: split 'holdout' is not train, val or test"):
        read_split(tmp_path / "fold0.csv")
    with pytest.raises(DataError, match=r"fold9.csv: fold split file not found"):
        read_split(tmp_path / "fold9.csv")


# ---- the CLI: fetch -> prepare -> split -----------------------------------------------------------

def run_cli(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("http_proxy", None)
    env.pop("HTTP_PROXY", None)
    return subprocess.run([sys.executable, "-m", "ordclip", *args, "--params", str(ROOT / "params.yaml"),
                           "--params", "mine.yaml", "--set", "suite=mine"],
                          cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def test_cli_fetch_prepare_split_hci_layout(tmp_path):
    archive = make_hci(tmp_path, per_decade=4)
    with serve(archive.parent) as (url, _):
        (tmp_path / "mine.yaml").write_text(f"""
datasets:
  hci_tiny:
    kind: hci
    ranks: [0, 4]
    rank_names: [1930s, 1940s, 1950s, 1960s, 1970s]
    prompt: {{context: "a photo taken in the"}}
    split: {{protocol: per_class, folds: 2, train: 2, val: 1, test: 1}}
    files: {{archive: {{url: "{url}/{archive.name}", sha256: {sha256(archive)}}}}}
  morph_mine:
    kind: morph2
    setting: A
    ranks: [16, 77]
    prompt: {{context: "age estimation: the age of the person is"}}
    split: {{protocol: given, folds: 5, val: 0.1}}
    files: {{archive: {{path: data/archives/morph2/morph2.zip}}}}
suites:
  mine: {{backbone: tiny, datasets: [hci_tiny], methods: [zeroshot], folds: 3}}
""")
        fetched = run_cli(tmp_path, "fetch", "--dataset", "hci_tiny")
        assert fetched.returncode == 0, fetched.stderr
    assert "hci: 20 images" in fetched.stderr
    prepared = run_cli(tmp_path, "prepare", "--dataset", "hci_tiny", "--size", "36")
    assert prepared.returncode == 0, prepared.stderr
    assert np.load(tmp_path / "data/prepared/hci_tiny/36px/images.npy").shape == (20, 36, 36, 3)
    for fold in (0, 1):
        split = run_cli(tmp_path, "split", "--suite", "mine", "--dataset", "hci_tiny", "--fold", str(fold))
        assert split.returncode == 0, split.stderr
        parts = read_split(tmp_path / f"results/mine/splits/hci_tiny/fold{fold}.csv")
        assert [len(parts[p]) for p in ("train", "val", "test")] == [10, 5, 5]

    missing = run_cli(tmp_path, "fetch", "--dataset", "morph_mine")
    assert missing.returncode == 2
    assert ("ordclip fetch: error: datasets.morph_mine: expected morph2.zip (MORPH II images archive) at "
            "data/archives/morph2/morph2.zip; get it from the MORPH II academic licence") in missing.stderr
    not_fetched = run_cli(tmp_path, "fetch", "--dataset", "counting")
    assert not_fetched.returncode == 2 and "kind 'synthetic' is not fetched" in not_fetched.stderr


# ---- params.yaml: the real datasets' entries and their schema -------------------------------------

def test_real_dataset_entries():
    from ordclip.config import dataset_config, load_params, split_config

    params = load_params([ROOT / "params.yaml"])
    names = ("morph2", "morph2_B", "morph2_C", "morph2_D", "clap2015", "fgnet", "adience", "hci",
             "aesthetics_animals", "aesthetics_nature", "aesthetics_people", "aesthetics_urban")
    folds = {d: split_config(params, "demo", d)["folds"] for d in names}
    assert folds == {"morph2": 5, "morph2_B": 3, "morph2_C": 5, "morph2_D": 5, "clap2015": 1, "fgnet": 82,
                     "adience": 5, "hci": 10, "aesthetics_animals": 5, "aesthetics_nature": 5,
                     "aesthetics_people": 5, "aesthetics_urban": 5}
    for name, setting in (("morph2", "A"), ("morph2_B", "B"), ("morph2_C", "C"), ("morph2_D", "D")):
        ds = dataset_config(params, name)
        assert ds["setting"] == setting and set(ds["files"]) == {"archive", *morph2.SETTINGS[setting]}
        assert ds["files"]["archive"] == {"path": "data/archives/morph2/morph2.zip"} and ds["ranks"] == [16, 77]
        for list_name in morph2.SETTINGS[setting]:
            assert ds["files"][list_name]["url"].endswith(f"/datalist/morph/setting{setting}/{list_name}.txt")
    assert dataset_config(params, "morph2_B")["orientation"] == "train_one"
    for category in ("animals", "nature", "people", "urban"):   # L2RCLIP's fixed 80/20 split of each category
        fixed = dataset_config(params, f"aesthetics_fixed_{category}")
        assert fixed["lists"] == "fixed" and split_config(params, "paper", fixed["name"])["folds"] == 1
        assert {k: v["url"].rsplit("/", 1)[1] for k, v in fixed["files"].items() if "url" in v} == \
            {"train": f"{category}_train.txt", "test": f"{category}_test.txt"}
    assert dataset_config(params, "clap2015")["files"]["list"]["url"].endswith("/datalist/clap2015/total_2015.csv")
    for name in folds:
        for entry in dataset_config(params, name)["files"].values():
            if "url" in entry and "L2RCLIP" in entry["url"]:
                assert "/168fd4b8bf1ff2c2d66b17430d66c407fd48c35e/datalist/" in entry["url"] and "sha256" in entry
    hci_split = dataset_config(params, "hci")["split"]
    assert (hci_split["train"], hci_split["val"], hci_split["test"]) == (210, 5, 50)


@pytest.mark.parametrize("entry, message", [
    ({"split": {"protocol": "per_class", "train": 0.8, "val": 0.1, "test": 0.1}},
     r"mine\.split\.train: 0\.8 is not of type 'integer'"),
    ({"split": {"protocol": "given", "train": 0.8}}, r"mine\.split: .* should not be valid"),
    ({"split": {"protocol": "kfold"}}, r"mine\.split: 'val' is a required property"),
    ({"files": {"archive": {"url": "https://example.org/a.tar"}}}, r"mine\.files\.archive: .* is not valid"),
    ({"files": {"archive": {"path": "a.tar"}, "extra": {"path": "b"}}}, r"mine\.files: Additional properties"),
])
def test_fetched_dataset_schema(tmp_path, entry, message):
    import yaml

    from ordclip.config import load_params

    base = {"kind": "hci", "ranks": [0, 4], "prompt": {"context": "a photo taken in the"},
            "split": {"protocol": "per_class", "train": 2, "val": 1, "test": 1},
            "files": {"archive": {"path": "a.tar"}}}
    import yaml

    (tmp_path / "extra.yaml").write_text(yaml.safe_dump({"datasets": {"mine": {**base, **entry}}}))
    with pytest.raises(ConfigError, match=message):
        load_params([ROOT / "params.yaml", tmp_path / "extra.yaml"])


def test_morph2_needs_a_setting(tmp_path):
    import yaml

    from ordclip.config import load_params

    (tmp_path / "extra.yaml").write_text(yaml.safe_dump({"datasets": {"morph2": {"setting": None}}}))
    with pytest.raises(ConfigError, match=r"datasets\.morph2\.setting: None is not one of"):
        load_params([ROOT / "params.yaml", tmp_path / "extra.yaml"])


@pytest.mark.parametrize("entry, message", [
    ({"morph2_B": {"orientation": None}}, r"datasets\.morph2_B\.orientation: None is not one of \['train_one', 'test_one'\]"),
    ({"morph2_C": {"orientation": "test_one"}}, r"datasets\.morph2_C\.orientation: 'test_one' should not be valid"),
])
def test_morph2_orientation_schema(tmp_path, entry, message):
    import yaml

    from ordclip.config import load_params

    (tmp_path / "extra.yaml").write_text(yaml.safe_dump({"datasets": entry}))
    with pytest.raises(ConfigError, match=message):
        load_params([ROOT / "params.yaml", tmp_path / "extra.yaml"])
