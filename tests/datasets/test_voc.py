"""datasets/voc.py and datasets/files.py: VOC names, labels and lists; image, label and split files;
the source chosen by dataset.name."""
import numpy as np
import pytest
from PIL import Image

from datasets import build_source, files, voc
from engine.config import Config
from engine.errors import UserError

SOURCE = voc.VOC("data/VOCdevkit/VOC2012", "datasets/voc/cls_labels.npy")


def test_names_and_palette():
    assert voc.name_to_int("2007_000032") == 2007000032 and voc.int_to_name(2007000032) == "2007_000032"
    palette = files.bit_palette()
    assert palette[3:6] == [128, 0, 0] and palette[15 * 3:16 * 3] == [192, 128, 128]
    assert SOURCE.palette == palette and SOURCE.n_classes == 20 and len(SOURCE.table_columns) == 21


def test_label_png_round_trip_reads_indices(tmp_path):
    label = np.array([[0, 1, 20], [255, 15, 0]], np.uint8)
    files.save_label_png(str(tmp_path / "a.png"), label, SOURCE.palette)
    assert Image.open(tmp_path / "a.png").mode == "P"
    assert np.array_equal(files.read_label(str(tmp_path / "a.png")), label)


def test_rgb_label_is_refused(tmp_path):
    Image.new("RGB", (4, 4), (128, 0, 0)).save(tmp_path / "rgb.png")
    with pytest.raises(UserError, match="rgb.png is a RGB image"):
        files.read_label(str(tmp_path / "rgb.png"))


def test_unreadable_image_and_missing_image_are_named(tmp_path):
    (tmp_path / "bad.jpg").write_bytes(b"\xff\xd8 truncated")
    with pytest.raises(UserError, match="bad.jpg cannot be decoded"):
        files.read_image(str(tmp_path / "bad.jpg"))
    with pytest.raises(UserError, match="missing.jpg does not exist"):
        files.read_image(str(tmp_path / "missing.jpg"))


def test_split_files_and_labels(tmp_path):
    (tmp_path / "empty.txt").write_text("\n")
    with pytest.raises(UserError, match="empty"):
        files.read_name_list(str(tmp_path / "empty.txt"))
    labels = SOURCE.load_cls_labels()
    assert len(labels) == 12031
    names = files.read_name_list("datasets/voc/train.txt")
    assert len(names) == 1464 and SOURCE.labels_for(names, labels).shape == (1464, 20)
    with pytest.raises(UserError, match="1 image"):
        SOURCE.labels_for(["2099_000001"], labels)


def test_voc_split_sizes_match_the_spec():
    sizes = {split: len(files.read_name_list(f"datasets/voc/{split}.txt"))
             for split in ("train_aug", "train", "val", "test")}
    assert sizes == {"train_aug": 10582, "train": 1464, "val": 1449, "test": 1456}


def test_the_source_comes_from_dataset_name_and_gives_the_class_count():
    source = build_source(Config({"dataset": {"name": "voc", "root_dir": "r", "cls_labels": "c.npy"}}))
    assert isinstance(source, voc.VOC) and source.image_path("2007_000032") == "r/JPEGImages/2007_000032.jpg"
    assert isinstance(build_source(Config({"dataset": {"root_dir": "r"}})), voc.VOC)  # configs older than the key
    with pytest.raises(UserError, match="dataset.n_classes is 21 but voc has 20 classes"):
        build_source(Config({"dataset": {"name": "voc", "root_dir": "r", "n_classes": 21}}))
