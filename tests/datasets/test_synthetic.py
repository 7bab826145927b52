"""The synthetic VOC-layout dataset: layout, label PNGs, cls_labels, determinism, caching."""
import json
import os
import re
import xml.etree.ElementTree as ET
from itertools import combinations

import numpy as np
import pytest
from PIL import Image

from datasets import synthetic
from datasets.files import IGNORE_INDEX
from datasets.voc import CLASS_NAMES, N_CLASSES, name_to_int
from engine.errors import UserError
from tests.support import ROOT
SMALL = dict(n_train_aug=20, n_train=6, n_val=8, min_size=50, max_size=77, max_objects=3, seed=3)


def read_names(root, split):
    with open(os.path.join(root, split + ".txt")) as handle:
        text = handle.read()
    assert text.endswith("\n")
    return text.split()


def load_label(root, folder, name):
    return Image.open(os.path.join(root, folder, name + ".png"))


def file_bytes(root):
    """{relative path: bytes} of every file under root."""
    out = {}
    for folder, _, files in os.walk(root):
        for entry in files:
            path = os.path.join(folder, entry)
            with open(path, "rb") as handle:
                out[os.path.relpath(path, root)] = handle.read()
    return out


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("synthetic"))
    summary = synthetic.generate(root, **SMALL)
    return root, summary


def all_names(root):
    return read_names(root, "train_aug") + read_names(root, "val")


def test_layout_and_splits(dataset):
    root, summary = dataset
    for folder in synthetic.SUBFOLDERS:
        assert os.path.isdir(os.path.join(root, folder))
    for entry in ("cls_labels.npy", "train_aug.txt", "train.txt", "val.txt", "synthetic.json"):
        assert os.path.isfile(os.path.join(root, entry))
    train_aug, train, val = (read_names(root, split) for split in ("train_aug", "train", "val"))
    assert (len(train_aug), len(train), len(val)) == (SMALL["n_train_aug"], SMALL["n_train"], SMALL["n_val"])
    assert len(set(train_aug)) == len(train_aug) and len(set(val)) == len(val)
    assert set(train) <= set(train_aug)
    assert not set(val) & set(train_aug)
    names = train_aug + val
    assert all(re.match(r"^\d{4}_\d{6}$", name) for name in names)
    assert len({name_to_int(name) for name in names}) == len(names)
    for name in names:
        for folder, ext in zip(synthetic.SUBFOLDERS, (".jpg", ".png", ".png", ".xml")):
            assert os.path.isfile(os.path.join(root, folder, name + ext)), (folder, name)
    # nothing else in the image folders (no stray temporary files)
    for folder in synthetic.SUBFOLDERS:
        assert len(os.listdir(os.path.join(root, folder))) == len(names)
    assert summary["n_images"] == len(names)
    with open(os.path.join(root, "synthetic.json")) as handle:
        manifest = json.load(handle)
    assert manifest["complete"] is True and manifest["params"] == SMALL


def test_images_and_label_pngs(dataset):
    root, _ = dataset
    sizes = set()
    for name in all_names(root):
        image = Image.open(os.path.join(root, "JPEGImages", name + ".jpg"))
        assert image.format == "JPEG" and image.mode == "RGB"
        assert SMALL["min_size"] <= image.width <= SMALL["max_size"]
        assert SMALL["min_size"] <= image.height <= SMALL["max_size"]
        sizes.add(image.size)
        label_png = load_label(root, "SegmentationClass", name)
        assert label_png.mode == "P" and label_png.size == image.size
        label = np.asarray(label_png)
        aug = load_label(root, "SegmentationClassAug", name)
        assert aug.mode == "P"
        np.testing.assert_array_equal(np.asarray(aug), label)
        values = set(np.unique(label).tolist())
        assert values <= set(range(N_CLASSES + 1)) | {IGNORE_INDEX}
        assert IGNORE_INDEX in values and values - {0, IGNORE_INDEX}, name

        # The band separates different labels: no two 8-neighbours carry different non-ignore labels.
        height, width = label.shape
        padded = np.pad(label, 1, mode="edge")
        for dy in (-1, 0, 1):
            for dx in (-1, 0, 1):
                other = padded[1 + dy:1 + dy + height, 1 + dx:1 + dx + width]
                clash = (label != other) & (label != IGNORE_INDEX) & (other != IGNORE_INDEX)
                assert not clash.any(), name
        # ... it is thin, and it straddles: band pixels touch both background and objects.
        ignore = label == IGNORE_INDEX
        assert ignore.mean() < 0.3
        near = np.zeros_like(ignore)
        for dy in (-1, 0, 1):
            for dx in (-1, 0, 1):
                near |= np.pad(ignore, 1)[1 + dy:1 + dy + height, 1 + dx:1 + dx + width]
        assert (near & (label == 0)).any() and (near & (label > 0) & ~ignore).any()
    assert len(sizes) > 1  # sizes vary
    assert any(w % 4 or h % 4 for w, h in sizes)


def test_label_band_width_straddles():
    """Directly on one scene: the band covers both sides of the boundary (about 2 px)."""
    rng = np.random.default_rng(0)
    for _ in range(5):
        image, label, annotations = synthetic.make_scene(rng, 70, 90, 1)
        assert image.shape == (70, 90, 3) and image.dtype == np.uint8
        assert label.shape == (70, 90) and len(annotations) == 1
        ignore = label == IGNORE_INDEX
        rows = [row for row in range(70) if ignore[row].any()]
        # across any row that meets the object, each run of 255 is 2 or 3 px (straddling the edge)
        for row in rows:
            runs = np.diff(np.flatnonzero(np.diff(np.r_[0, ignore[row].astype(int), 0])))[::2]
            assert runs.min() >= 1 and np.median(runs) >= 2


def test_cls_labels_format_and_consistency(dataset):
    root, _ = dataset
    real = np.load(os.path.join(ROOT, "datasets", "voc", "cls_labels.npy"), allow_pickle=True).item()
    real_key, real_value = next(iter(real.items()))
    labels = np.load(os.path.join(root, "cls_labels.npy"), allow_pickle=True).item()
    assert type(labels) is type(real)
    names = all_names(root)
    assert set(labels) == {name_to_int(name) for name in names}
    for key, value in labels.items():
        assert type(key) is type(real_key)
        assert value.dtype == real_value.dtype and value.shape == real_value.shape
        assert set(np.unique(value).tolist()) <= {0.0, 1.0} and value.sum() >= 1
    for name in names:
        label = np.asarray(load_label(root, "SegmentationClass", name))
        present = set(np.unique(label).tolist()) - {0, IGNORE_INDEX}
        expected = {int(k) + 1 for k in np.flatnonzero(labels[np.int32(name_to_int(name))])}
        assert present == expected, name
        # the XML agrees too, and its size is the image's
        root_xml = ET.parse(os.path.join(root, "Annotations", name + ".xml")).getroot()
        assert root_xml.findtext("filename") == name + ".jpg"
        assert int(root_xml.findtext("size/width")) == label.shape[1]
        assert int(root_xml.findtext("size/height")) == label.shape[0]
        assert root_xml.findtext("size/depth") == "3"
        xml_classes = {CLASS_NAMES.index(obj.findtext("name")) + 1 for obj in root_xml.iter("object")}
        assert xml_classes == expected
        for obj in root_xml.iter("object"):
            assert obj.findtext("difficult") in ("0", "1")
            box = [int(obj.findtext("bndbox/" + key)) for key in ("xmin", "ymin", "xmax", "ymax")]
            assert 1 <= box[0] <= box[2] <= label.shape[1] and 1 <= box[1] <= box[3] <= label.shape[0]


def test_looks_are_distinct():
    assert len(synthetic.LOOKS) == N_CLASSES == len(set(synthetic.LOOKS))
    for a, b in combinations(synthetic.LOOKS, 2):
        assert sum(x != y for x, y in zip(a, b)) >= 2, (a, b)


def test_deterministic(tmp_path, dataset):
    root, _ = dataset
    again = str(tmp_path / "again")
    synthetic.generate(again, **SMALL)
    first, second = file_bytes(root), file_bytes(again)
    assert first.keys() == second.keys()
    for path in first:
        assert first[path] == second[path], path

    other = str(tmp_path / "other")
    synthetic.generate(other, **dict(SMALL, seed=SMALL["seed"] + 1))
    name = read_names(root, "train_aug")[0]
    a = np.asarray(Image.open(os.path.join(root, "JPEGImages", name + ".jpg")))
    b = np.asarray(Image.open(os.path.join(other, "JPEGImages", name + ".jpg")))
    assert a.shape != b.shape or not np.array_equal(a, b)
    assert first["cls_labels.npy"] != file_bytes(other)["cls_labels.npy"]


def test_ensure_dataset_caches_and_regenerates(tmp_path):
    root = str(tmp_path / "voc")
    params = dict(SMALL, n_train_aug=6, n_train=2, n_val=3)
    assert synthetic.ensure_dataset(root, **params)["generated"] is True

    def mtimes():
        return {path: os.stat(os.path.join(root, path)).st_mtime_ns for path in file_bytes(root)}

    before = mtimes()
    summary = synthetic.ensure_dataset(root, **params)
    assert summary["generated"] is False and summary["n_images"] == 9
    assert mtimes() == before

    # different parameters: regenerated, and files of names no longer in the set are removed
    smaller = dict(params, n_train_aug=4, seed=params["seed"] + 1)
    assert synthetic.ensure_dataset(root, **smaller)["generated"] is True
    with open(os.path.join(root, "synthetic.json")) as handle:
        assert json.load(handle)["params"] == smaller
    names = all_names(root)
    assert len(names) == 7
    for folder in synthetic.SUBFOLDERS:
        assert sorted(os.path.splitext(e)[0] for e in os.listdir(os.path.join(root, folder))) == sorted(names)

    # an incomplete dataset (a file missing) is regenerated
    os.remove(os.path.join(root, "JPEGImages", names[0] + ".jpg"))
    assert synthetic.ensure_dataset(root, **smaller)["generated"] is True
    assert os.path.isfile(os.path.join(root, "JPEGImages", names[0] + ".jpg"))


def test_refuses_foreign_folder_and_bad_params(tmp_path):
    root = tmp_path / "real_voc"
    (root / "JPEGImages").mkdir(parents=True)
    (root / "JPEGImages" / "2007_000032.jpg").write_bytes(b"not ours")
    with pytest.raises(UserError, match="not a dataset this project generated.*dataset.synthetic=null"):
        synthetic.generate(str(root), **SMALL)
    assert (root / "JPEGImages" / "2007_000032.jpg").read_bytes() == b"not ours"
    with pytest.raises(UserError, match=r"dataset\.synthetic.*n_train \(21\) must not exceed n_train_aug"):
        synthetic.generate(str(tmp_path / "x"), **dict(SMALL, n_train=SMALL["n_train_aug"] + 1))
    with pytest.raises(UserError, match="need 32 <= min_size <= max_size, got 90, 80"):
        synthetic.generate(str(tmp_path / "x"), **dict(SMALL, min_size=90, max_size=80))


def test_cli(tmp_path, capsys):
    out = str(tmp_path / "cli")
    args = ["--out", out, "--train-aug", "4", "--train", "2", "--val", "2", "--min-size", "40",
            "--max-size", "60", "--seed", "1"]
    assert synthetic.main(args) == 0
    first = capsys.readouterr().out
    assert "generated" in first and len(first.strip().splitlines()) == 1
    assert synthetic.main(args) == 0
    assert "already present" in capsys.readouterr().out
