import numpy as np
import pytest
from PIL import Image

from datasets import voc
from tools.errors import UserError


def test_names_and_palette():
    assert voc.name_to_int("2007_000032") == 2007000032 and voc.int_to_name(2007000032) == "2007_000032"
    palette = voc.voc_palette()
    assert palette[3:6] == [128, 0, 0] and palette[15 * 3:16 * 3] == [192, 128, 128]


def test_label_png_round_trip_reads_indices(tmp_path):
    label = np.array([[0, 1, 20], [255, 15, 0]], np.uint8)
    voc.save_label_png(str(tmp_path / "a.png"), label)
    assert Image.open(tmp_path / "a.png").mode == "P"
    assert np.array_equal(voc.read_label(str(tmp_path / "a.png")), label)


def test_rgb_label_is_refused(tmp_path):
    Image.new("RGB", (4, 4), (128, 0, 0)).save(tmp_path / "rgb.png")
    with pytest.raises(UserError, match="rgb.png is a RGB image"):
        voc.read_label(str(tmp_path / "rgb.png"))


def test_unreadable_image_and_missing_image_are_named(tmp_path):
    (tmp_path / "bad.jpg").write_bytes(b"\xff\xd8 truncated")
    with pytest.raises(UserError, match="bad.jpg cannot be decoded"):
        voc.read_image(str(tmp_path / "bad.jpg"))
    with pytest.raises(UserError, match="missing.jpg does not exist"):
        voc.read_image(str(tmp_path / "missing.jpg"))


def test_split_files_and_labels(tmp_path):
    (tmp_path / "empty.txt").write_text("\n")
    with pytest.raises(UserError, match="empty"):
        voc.read_name_list(str(tmp_path / "empty.txt"))
    labels = voc.load_cls_labels("datasets/voc/cls_labels.npy")
    assert len(labels) == 12031
    names = voc.read_name_list("datasets/voc/train.txt")
    assert len(names) == 1464 and voc.labels_for(names, labels).shape == (1464, 20)
    with pytest.raises(UserError, match="1 image"):
        voc.labels_for(["2099_000001"], labels)


def test_voc_split_sizes_match_the_spec():
    sizes = {split: len(voc.read_name_list(f"datasets/voc/{split}.txt")) for split in ("train_aug", "train", "val", "test")}
    assert sizes == {"train_aug": 10582, "train": 1464, "val": 1449, "test": 1456}
