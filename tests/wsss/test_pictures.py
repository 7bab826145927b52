"""wsss/pictures.py: heat maps over the image, and a row of captioned panels per image."""
import numpy as np

from datasets.files import bit_palette
from datasets.voc import CLASS_NAMES
from wsss.pictures import GAP, cam_picture_row, caption_height, heatmap_overlay


def row_width(n_panels, panel_width):
    return n_panels * panel_width + (n_panels - 1) * GAP


def test_heatmap_overlay_blends_a_colour_map_over_the_image():
    image = np.zeros((4, 6, 3), dtype=np.uint8)
    cam = np.linspace(0, 1, 24, dtype=np.float32).reshape(4, 6)
    heat = heatmap_overlay(image, cam, alpha=1.0)
    assert heat.shape == (4, 6, 3) and heat.dtype == np.uint8
    assert heat[0, 0, 2] > heat[0, 0, 0] and heat[-1, -1, 0] > heat[-1, -1, 2]  # jet: blue at 0, red at 1
    assert (heatmap_overlay(image, cam, alpha=0.0) == 0).all()


def test_row_has_a_panel_per_class_plus_image_labels_and_gt():
    image = np.full((10, 12, 3), 128, dtype=np.uint8)
    cams = np.random.default_rng(0).random((3, 10, 12), dtype=np.float32)
    label = np.zeros((10, 12), dtype=np.uint8)
    palette = bit_palette()
    row = cam_picture_row("x", image, cams, [0, 4, 19], [("label", label)], CLASS_NAMES, palette, gt=label)
    assert row.size == (row_width(1 + 3 + 1 + 1, 12), 10 + caption_height())
    scaled = cam_picture_row("x", image, cams[:1], [0], [("label", label), ("crf", label)], CLASS_NAMES, palette,
                             height=20)
    assert scaled.size == (row_width(1 + 1 + 2, 24), 20 + caption_height())
