"""cls_labels.npy rebuilt from VOC Annotations XML: datasets/voc.py and python -m tools.make_cls_labels."""
import os
import xml.etree.ElementTree as ET

import numpy as np
import pytest

from datasets import synthetic
from datasets.voc import CLASS_NAMES, N_CLASSES, build_cls_labels, labels_from_xml
from engine.errors import UserError
from tests.support import assert_clean_error, assert_ok, run, temporaries


@pytest.fixture(scope="module")
def voc_root(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("voc"))
    synthetic.generate(root, n_train_aug=30, n_train=10, n_val=10, min_size=50, max_size=70, seed=0)
    return root


def load(path):
    return np.load(path, allow_pickle=True).item()


def assert_same_labels(a, b):
    assert set(a) == set(b)
    for key in a:
        assert type(key) is np.int32
        assert a[key].dtype == np.float32 and a[key].shape == (N_CLASSES,)
        np.testing.assert_array_equal(a[key], b[key])


def write_xml(path, objects):
    root = ET.Element("annotation")
    ET.SubElement(root, "filename").text = os.path.basename(path)[:-4] + ".jpg"
    for name, difficult in objects:
        obj = ET.SubElement(root, "object")
        ET.SubElement(obj, "name").text = name
        ET.SubElement(obj, "difficult").text = str(difficult)
    ET.ElementTree(root).write(path)


def test_matches_generated_labels_including_difficult(voc_root):
    difficult = 0
    for entry in os.listdir(os.path.join(voc_root, "Annotations")):
        root = ET.parse(os.path.join(voc_root, "Annotations", entry)).getroot()
        difficult += sum(obj.findtext("difficult") == "1" for obj in root.iter("object"))
    assert difficult > 0  # the dataset exercises difficult objects
    built = build_cls_labels(voc_root)
    assert_same_labels(built, load(os.path.join(voc_root, "cls_labels.npy")))


def test_labels_from_xml_counts_difficult(tmp_path):
    path = str(tmp_path / "2008_000001.xml")
    write_xml(path, [("person", 0), ("tvmonitor", 1), ("person", 1)])
    labels = labels_from_xml(path)
    assert labels.dtype == np.float32 and labels.shape == (N_CLASSES,)
    assert np.flatnonzero(labels).tolist() == [CLASS_NAMES.index("person"), CLASS_NAMES.index("tvmonitor")]


def test_unknown_class_and_missing_file(tmp_path):
    (tmp_path / "Annotations").mkdir()
    path = str(tmp_path / "Annotations" / "2008_000002.xml")
    write_xml(path, [("unicorn", 0)])
    with pytest.raises(UserError, match=r"2008_000002\.xml.*unicorn"):
        build_cls_labels(str(tmp_path))
    with pytest.raises(UserError, match=r"2008_000003\.xml"):
        build_cls_labels(str(tmp_path), ["2008_000003"])


@pytest.mark.slow
def test_cli_with_names(voc_root, tmp_path):
    out = str(tmp_path / "sub" / "cls_labels.npy")
    lists = [os.path.join(voc_root, "train.txt"), os.path.join(voc_root, "val.txt")]
    assert "wrote 20 image labels" in assert_ok(run("-m", "tools.make_cls_labels", "--voc-root", voc_root,
                                                    "--out", out, "--names", *lists))
    built = load(out)
    names = []
    for path in lists:
        with open(path) as handle:
            names += handle.read().split()
    assert len(built) == len(names) == 20
    reference = load(os.path.join(voc_root, "cls_labels.npy"))
    assert_same_labels(built, {key: reference[key] for key in built})


@pytest.mark.slow
def test_cli_missing_xml_is_an_error_and_writes_nothing(voc_root, tmp_path):
    names = tmp_path / "names.txt"
    names.write_text("2007_000001\n2011_999999\n")
    out = tmp_path / "out.npy"
    result = run("-m", "tools.make_cls_labels", "--voc-root", voc_root, "--out", str(out), "--names", str(names))
    assert_clean_error(result, "2011_999999.xml")
    assert not out.exists() and not temporaries(tmp_path)


@pytest.mark.slow
def test_cli_without_names_takes_every_xml(voc_root, tmp_path):
    out = str(tmp_path / "all.npy")
    result = run("-m", "tools.make_cls_labels", "--voc-root", voc_root, "--out", out)
    assert "wrote 40 image labels" in assert_ok(result)
    assert_same_labels(load(out), load(os.path.join(voc_root, "cls_labels.npy")))
