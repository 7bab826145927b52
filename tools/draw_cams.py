"""Pictures of CAMs: per image, side by side, the image, each present class's CAM as a heat map over
it, the pseudo label (and with --crf the CRF-refined one) and the ground truth, in VOC colours.

    python tools/draw_cams.py --config configs/voc.yaml [--names A,B | --count N] [--crf]
                              [--height PX] [--out FILE.png] [key=value ...]

Images are the --names given or the first --count names of cam.split (default 4). Without --out
each picture is labels.picture_dir/<name>.png; with --out the rows of all images go into one
picture at FILE.png. Labels use labels.bkgscore (null: cam.bkgscore) and labels.crf_params, as
tools/pseudo_labels.py makes them; the ground truth comes from eval.gt_dir when its PNG exists.
"""
import os
import sys

if not __package__:
    # Run as `python tools/draw_cams.py`: Python puts tools/ (not the repository root) on sys.path.
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import argparse  # noqa: E402
import functools  # noqa: E402

import matplotlib  # noqa: E402
import numpy as np  # noqa: E402
from PIL import Image, ImageDraw, ImageFont  # noqa: E402

from datasets import voc  # noqa: E402
from tools.cam import load_cam_file  # noqa: E402
from tools.cli import build_parser, parse_config, run_main  # noqa: E402
from tools.errors import UserError  # noqa: E402
from tools.io import prepare_output_dir, save_image  # noqa: E402
from tools.pseudo_labels import cam_path, label_colours, label_options, pseudo_label, read_image_like  # noqa: E402

HEATMAP = "jet"
HEATMAP_ALPHA = 0.5  # weight of the heat-map colour over the image
GAP = 4  # white pixels between panels and between rows
DEFAULT_COUNT = 4


# ---------------------------------------------------------------------------------------------
# Arrays and panels

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


def cam_picture_row(name, image, high_res, keys, labels, gt=None, height=None):
    """The row of one image: image | CAM of each class | each (caption, label map) of `labels` | ground truth."""
    nearest = Image.Resampling.NEAREST
    panels = [captioned_panel(image, name, height)]
    panels += [captioned_panel(heatmap_overlay(image, cam), voc.CLASS_NAMES[key], height)
               for cam, key in zip(high_res, keys)]
    panels += [captioned_panel(label_colours(label), caption, height, nearest) for caption, label in labels]
    if gt is not None:
        panels.append(captioned_panel(label_colours(gt), "ground truth", height, nearest))
    return side_by_side(panels)


# ---------------------------------------------------------------------------------------------
# Files

def chosen_names(cfg, names_arg, count):
    if names_arg:
        names = [name.strip() for name in names_arg.split(",") if name.strip()]
        if not names:
            raise UserError(f"--names {names_arg!r} names no image; give image names separated by commas")
        return names
    if count < 1:
        raise UserError(f"--count must be at least 1, got {count}")
    return voc.read_name_list(cfg.cam.split)[:count]


def picture_row_of(cfg, name, bkgscore, crf_params, height):
    """Read the CAM file, image and ground truth of `name` -> its picture row."""
    cam_dir = cfg.exp.cam_dir
    record = load_cam_file(cam_path(cam_dir, name))
    high_res, keys = record["high_res"], record["keys"]
    image = read_image_like(cfg.dataset.root_dir, name, high_res, cam_dir)
    labels = [(f"label (bkg {bkgscore:g})", pseudo_label(high_res, keys, bkgscore))]
    if crf_params is not None:
        labels.append(("label + CRF", pseudo_label(high_res, keys, bkgscore, image, crf_params)))
    gt_path = os.path.join(cfg.eval.gt_dir, name + ".png")
    gt = voc.read_label(gt_path) if os.path.isfile(gt_path) else None
    return cam_picture_row(name, image, high_res, keys, labels, gt, height)


def draw_cams(cfg, names, crf=False, height=None, out=None):
    """Write one picture per image under labels.picture_dir, or all rows into `out`; returns the paths written."""
    bkgscore, crf_params = label_options(cfg, crf=crf or None)
    if height is not None and height < 8:
        raise UserError(f"--height must be at least 8 pixels, got {height}")
    voc.check_voc_root(cfg.dataset.root_dir)
    if out:
        prepare_output_dir(os.path.dirname(os.path.abspath(out)), "--out")
    else:
        prepare_output_dir(cfg.labels.picture_dir, "labels.picture_dir")
    rows = [picture_row_of(cfg, name, bkgscore, crf_params, height) for name in names]
    if out:
        save_image(out, one_above_another(rows), optimize=True)
        return [out]
    paths = [os.path.join(cfg.labels.picture_dir, name + ".png") for name in names]
    for path, row in zip(paths, rows):
        save_image(path, row, optimize=True)
    return paths


def main(argv=None):
    parser = build_parser(__doc__)
    parser.formatter_class = argparse.RawDescriptionHelpFormatter  # keep the usage lines of the docstring
    choice = parser.add_mutually_exclusive_group()
    choice.add_argument("--names", default=None, help="comma-separated image names")
    choice.add_argument("--count", type=int, default=DEFAULT_COUNT,
                        help=f"the first N names of cam.split (default {DEFAULT_COUNT})")
    parser.add_argument("--crf", action="store_true", help="also show the CRF-refined label (labels.crf_params)")
    parser.add_argument("--height", type=int, default=None, help="panel height in pixels (default: the image's)")
    parser.add_argument("--out", default=None, help="one PNG with a row per image, instead of labels.picture_dir")
    args, cfg = parse_config(parser, argv)
    paths = draw_cams(cfg, chosen_names(cfg, args.names, args.count), args.crf, args.height, args.out)
    print(f"wrote {paths[0]}" if len(paths) == 1 else f"wrote {len(paths)} pictures to {cfg.labels.picture_dir}")


if __name__ == "__main__":
    run_main(main)
