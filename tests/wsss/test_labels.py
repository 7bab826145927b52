"""wsss/labels.py: CAMs to class ids, label colours and overlays in the dataset's palette, the labels settings."""
import numpy as np
import pytest
from PIL import Image

from datasets.files import bit_palette, read_label, save_label_png
from engine.config import load_config
from engine.errors import UserError
from wsss.labels import cam_to_label, label_colours, label_options, overlay_labels, pseudo_label
from wsss.schema import SCHEMA

PALETTE = bit_palette()


def test_cam_to_label_maps_channels_to_class_ids_with_a_background_threshold():
    high_res = np.array([[[0.1, 0.9, 0.3]], [[0.5, 0.2, 0.2]]], dtype=np.float32)
    label = cam_to_label(high_res, np.array([4, 14]), bkgscore=0.25)
    assert label.tolist() == [[15, 5, 5]] and label.dtype == np.uint8
    assert cam_to_label(high_res, np.array([4, 14]), bkgscore=0.95).tolist() == [[0, 0, 0]]
    assert np.array_equal(pseudo_label(high_res, np.array([4, 14]), 0.25), label)  # no CRF: the same labels


def test_label_png_round_trips_through_the_palette(tmp_path):
    label = np.array([[0, 1, 20], [15, 255, 7]], dtype=np.uint8)
    save_label_png(str(tmp_path / "l.png"), label, PALETTE)
    assert np.array_equal(read_label(str(tmp_path / "l.png")), label)
    with Image.open(tmp_path / "l.png") as image:
        assert image.mode == "P" and image.getpalette() == PALETTE
    assert label_colours(label, PALETTE)[0, 1].tolist() == PALETTE[3:6]  # aeroplane: (128, 0, 0)


def test_overlay_keeps_background_and_tints_classes():
    image = np.full((2, 2, 3), 100, dtype=np.uint8)
    label = np.array([[0, 1], [0, 15]], dtype=np.uint8)
    overlay = overlay_labels(image, label, PALETTE, alpha=0.5)
    assert overlay.dtype == np.uint8 and (overlay[label == 0] == 100).all()
    assert overlay[0, 1].tolist() == [114, 50, 50]  # halfway between grey 100 and (128, 0, 0)


def test_label_options_take_cam_bkgscore_when_labels_bkgscore_is_null():
    cfg = load_config("configs/voc.yaml", SCHEMA)
    assert label_options(cfg) == (0.14, None)
    bkgscore, crf_params = label_options(load_config("configs/voc.yaml", SCHEMA, ["labels.bkgscore=0.3"]), crf=True)
    assert bkgscore == 0.3 and crf_params["bilateral_sxy"] == 64
    with pytest.raises(UserError, match=r"cam.bkgscore \(labels.bkgscore is null\) must be one number"):
        label_options(load_config("configs/voc.yaml", SCHEMA, ["cam.bkgscore=[0.1,0.2]"]))
