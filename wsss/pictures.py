"""Pictures of CAMs: heat maps over the image and label maps as captioned panels, laid out in rows."""
import functools

import matplotlib
import numpy as np
from PIL import Image, ImageDraw, ImageFont

from wsss.labels import label_colours

HEATMAP = "jet"
HEATMAP_ALPHA = 0.5  # weight of the heat-map colour over the image
GAP = 4  # white pixels between panels and between rows


def heatmap_overlay(image, cam, alpha=HEATMAP_ALPHA, colormap=HEATMAP):
    """Blend a (H, W) map with values in [0, 1] as a matplotlib colour map over the (H, W, 3) uint8 image."""
    colours = matplotlib.colormaps[colormap](np.clip(cam, 0, 1))[..., :3] * 255
    return np.round((1 - alpha) * image.astype(np.float32) + alpha * colours).astype(np.uint8)


@functools.cache
def caption_height():
    """Pixels of the caption strip under each panel: ImageDraw's default font plus a margin."""
    return ImageFont.load_default().getbbox("Ag")[3] + 4


def captioned_panel(pixels, caption, height=None, resample=Image.Resampling.BILINEAR):
    """(H, W, 3) uint8 pixels -> a PIL panel, scaled to `height` pixels (None: as is), with a caption below.

    Label maps should be scaled with resample=NEAREST so that no colours outside the palette appear.
    """
    panel = Image.fromarray(pixels)
    if height and panel.height != height:
        panel = panel.resize((max(1, round(panel.width * height / panel.height)), height), resample)
    framed = Image.new("RGB", (panel.width, panel.height + caption_height()), "white")
    framed.paste(panel, (0, 0))
    ImageDraw.Draw(framed).text((2, panel.height + 2), caption, fill="black")
    return framed


def side_by_side(panels, gap=GAP):
    """PIL images in a row (top-aligned), `gap` white pixels apart."""
    width = sum(panel.width for panel in panels) + gap * (len(panels) - 1)
    row = Image.new("RGB", (width, max(panel.height for panel in panels)), "white")
    left = 0
    for panel in panels:
        row.paste(panel, (left, 0))
        left += panel.width + gap
    return row


def one_above_another(rows, gap=GAP):
    """PIL images in a column (left-aligned), `gap` white pixels apart."""
    column = Image.new("RGB", (max(row.width for row in rows), sum(row.height for row in rows) + gap * (len(rows) - 1)),
                       "white")
    top = 0
    for row in rows:
        column.paste(row, (0, top))
        top += row.height + gap
    return column


def cam_picture_row(name, image, high_res, keys, labels, class_names, palette, gt=None, height=None):
    """The row of one image: image | CAM of each class | each (caption, label map) of `labels` | ground truth.
    class_names name the CAM keys (0-based); palette colours the label maps."""
    nearest = Image.Resampling.NEAREST
    panels = [captioned_panel(image, name, height)]
    panels += [captioned_panel(heatmap_overlay(image, cam), class_names[key], height)
               for cam, key in zip(high_res, keys)]
    panels += [captioned_panel(label_colours(label, palette), caption, height, nearest) for caption, label in labels]
    if gt is not None:
        panels.append(captioned_panel(label_colours(gt, palette), "ground truth", height, nearest))
    return side_by_side(panels)
