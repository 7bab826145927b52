"""Pictures of CAMs: per image, side by side, the image, each present class's CAM as a heat map over
it, the pseudo label (and with --crf the CRF-refined one) and the ground truth, in the dataset's colours.

    python -m tools.draw_cams --config configs/voc.yaml [--names A,B | --count N] [--crf]
                              [--height PX] [--out FILE.png] [key=value ...]

Images are the --names given or the first --count names of cam.split (default 4). Without --out
each picture is labels.picture_dir/<name>.png; with --out the rows of all images go into one
picture at FILE.png. Labels use labels.bkgscore (null: cam.bkgscore) and labels.crf_params, as
tools.pseudo_labels makes them; the ground truth comes from eval.gt_dir when its PNG exists.
"""
import os
import sys

if __name__ == "__main__" and not __package__:
    print("error: run this tool from the repository root as a module: "
          "python -m tools.draw_cams ...", file=sys.stderr)
    sys.exit(2)

from datasets import build_source
from datasets.files import read_label
from engine.cli import build_parser, parse_config
from engine.errors import UserError, run_main
from engine.files import prepare_output_dir, save_image
from wsss.cam_files import image_of_cam, load_cam_file
from wsss.labels import label_options, pseudo_label
from wsss.pictures import cam_picture_row, one_above_another
from wsss.schema import DEFAULT_CONFIG, ROOT, SCHEMA

DEFAULT_COUNT = 4


def chosen_names(cfg, source, names_arg, count):
    """The --names given (each must be in cam.split, whose CAMs infer_cam.py makes) or the first --count."""
    split = source.read_names(cfg.cam.split)
    if not names_arg:
        if count < 1:
            raise UserError(f"--count must be at least 1, got {count}")
        return split[:count]
    names = [name.strip() for name in names_arg.split(",") if name.strip()]
    if not names:
        raise UserError(f"--names {names_arg!r} names no image; give image names separated by commas")
    unknown = sorted(set(names) - set(split))
    if unknown:
        raise UserError(f"{', '.join(unknown[:3])}{', ...' if len(unknown) > 3 else ''} "
                        f"{'is' if len(unknown) == 1 else 'are'} not in cam.split {cfg.cam.split}; name images of "
                        f"that list, or set cam.split to the list whose CAMs you made")
    return names


def picture_row_of(cfg, source, name, bkgscore, crf_params, height):
    """Read the CAM file, image and ground truth of `name` -> its picture row."""
    cam_dir = cfg.exp.cam_dir
    record = load_cam_file(os.path.join(cam_dir, name + ".npy"))
    high_res, keys = record["high_res"], record["keys"]
    image = image_of_cam(source, name, high_res, cam_dir)
    labels = [(f"label (bkg {bkgscore:g})", pseudo_label(high_res, keys, bkgscore))]
    if crf_params is not None:
        labels.append(("label + CRF", pseudo_label(high_res, keys, bkgscore, image, crf_params)))
    gt_path = os.path.join(cfg.eval.gt_dir, name + ".png")
    gt = read_label(gt_path) if os.path.isfile(gt_path) else None
    return cam_picture_row(name, image, high_res, keys, labels, source.class_names, source.palette, gt, height)


def draw_cams(cfg, source, names, crf=False, height=None, out=None):
    """Write one picture per image under labels.picture_dir, or all rows into `out`; returns the paths written."""
    bkgscore, crf_params = label_options(cfg, crf=crf or None)
    if height is not None and height < 8:
        raise UserError(f"--height must be at least 8 pixels, got {height}")
    source.check_root()
    if out:
        prepare_output_dir(os.path.dirname(os.path.abspath(out)), "--out")
    else:
        prepare_output_dir(cfg.labels.picture_dir, "labels.picture_dir")
    rows = [picture_row_of(cfg, source, name, bkgscore, crf_params, height) for name in names]
    if out:
        save_image(out, one_above_another(rows), optimize=True)
        return [out]
    paths = [os.path.join(cfg.labels.picture_dir, name + ".png") for name in names]
    for path, row in zip(paths, rows):
        save_image(path, row, optimize=True)
    return paths


def main(argv=None):
    parser = build_parser(__doc__, DEFAULT_CONFIG, gpu=False)
    choice = parser.add_mutually_exclusive_group()
    choice.add_argument("--names", default=None, help="comma-separated image names")
    choice.add_argument("--count", type=int, default=DEFAULT_COUNT,
                        help=f"the first N names of cam.split (default {DEFAULT_COUNT})")
    parser.add_argument("--crf", action="store_true", help="also show the CRF-refined label (labels.crf_params)")
    parser.add_argument("--height", type=int, default=None, help="panel height in pixels (default: the image's)")
    parser.add_argument("--out", default=None, help="one PNG with a row per image, instead of labels.picture_dir")
    args, cfg = parse_config(parser, SCHEMA, argv, ROOT)
    source = build_source(cfg)
    paths = draw_cams(cfg, source, chosen_names(cfg, source, args.names, args.count), args.crf, args.height, args.out)
    print(f"wrote {paths[0]}" if len(paths) == 1 else f"wrote {len(paths)} pictures to {cfg.labels.picture_dir}")


if __name__ == "__main__":
    run_main(main)
