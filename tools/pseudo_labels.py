"""Pseudo labels from CAMs: one VOC-palette label PNG per cam.split image, optionally refined by a dense CRF.

    python tools/pseudo_labels.py --config configs/voc.yaml [--crf] [--overwrite] [key=value ...]

Without the CRF a label is tools.metrics.cam_to_label of the CAM file at labels.bkgscore (null:
cam.bkgscore), the very labels eval_cam.py scores; with --crf (labels.crf) the softmax over
[bkgscore map, CAMs] goes through the dense CRF of labels.crf_params. Writes
labels.dir/<name>.png (pixel values = class ids, VOC palette) and, unless labels.overlay_dir is
null, labels.overlay_dir/<name>.jpg (label colours over the image, for viewing). Images run in
parallel over labels.num_workers processes. Images whose outputs exist and decode are skipped
(an interrupted run continues), provided labels_settings.json in labels.dir shows the same
settings and CAM folder; --overwrite redoes every image.
"""
import os
import sys

if not __package__:
    # Run as `python tools/pseudo_labels.py`: Python puts tools/ (not the repository root) on sys.path.
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import argparse  # noqa: E402
import functools  # noqa: E402
import json  # noqa: E402

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402
from tqdm import tqdm  # noqa: E402

from datasets import voc  # noqa: E402
from tools.cam import CAM_SETTINGS_FILE, load_cam_file  # noqa: E402
from tools.cli import build_parser, parse_config, run_main  # noqa: E402
from tools.crf import check_crf_params, crf_label  # noqa: E402
from tools.errors import UserError  # noqa: E402
from tools.io import missing_files, prepare_output_dir, save_image, save_json, settings_changes  # noqa: E402
from tools.metrics import cam_to_label  # noqa: E402
from tools.parallel import imap_unordered, worker_count  # noqa: E402

MANIFEST = "labels_settings.json"  # in labels.dir: what made the files there
OVERLAY_SUFFIX = ".jpg"
OVERLAY_ALPHA = 0.5  # weight of the label colour over the image
OVERLAY_QUALITY = 90
PALETTE = np.array(voc.voc_palette(), dtype=np.uint8).reshape(256, 3)


# ---------------------------------------------------------------------------------------------
# Arrays

def pseudo_label(high_res, keys, bkgscore, image=None, crf_params=None):
    """(k, H, W) CAMs of the classes `keys` -> (H, W) uint8 class ids: cam_to_label, or through the
    dense CRF on the (H, W, 3) uint8 `image` when crf_params is given."""
    if crf_params is None:
        return cam_to_label(high_res, keys, bkgscore)
    return crf_label(image, high_res, keys, bkgscore, crf_params)


def label_colours(label):
    """(H, W) class ids -> (H, W, 3) uint8 VOC colours (255, the ignore index, is VOC's cream)."""
    return PALETTE[np.asarray(label, dtype=np.uint8)]


def overlay_labels(image, label, alpha=OVERLAY_ALPHA):
    """Blend the label colours over the (H, W, 3) uint8 image; background (0) pixels keep the image."""
    blended = (1 - alpha) * image.astype(np.float32) + alpha * label_colours(label).astype(np.float32)
    return np.where((np.asarray(label) == 0)[..., None], image, np.round(blended).astype(np.uint8))


# ---------------------------------------------------------------------------------------------
# Config

def check_bkgscore(value, key):
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise UserError(f"{key} must be one number for pseudo labels, got {value!r}; set labels.bkgscore=0.14")
    return float(value)


def label_options(cfg, crf=None):
    """(bkgscore, crf_params or None) from the labels section; crf (bool) overrides labels.crf."""
    if cfg.labels.bkgscore is None:
        bkgscore = check_bkgscore(cfg.cam.bkgscore, "cam.bkgscore (labels.bkgscore is null)")
    else:
        bkgscore = check_bkgscore(cfg.labels.bkgscore, "labels.bkgscore")
    use_crf = cfg.labels.crf if crf is None else crf
    return bkgscore, (check_crf_params(cfg.get("labels.crf_params")) if use_crf else None)


# ---------------------------------------------------------------------------------------------
# Files

def cam_path(cam_dir, name):
    return os.path.join(cam_dir, name + ".npy")


def read_image_like(root, name, high_res, cam_dir):
    """The image of `name`, checked to be the size of its CAMs."""
    path = voc.image_path(root, name)
    image = voc.read_image(path)
    if image.shape[:2] != high_res.shape[1:]:
        raise UserError(f"image {path} is {image.shape[1]}x{image.shape[0]} but its CAM in {cam_dir} is "
                        f"{high_res.shape[2]}x{high_res.shape[1]}; CAMs and images come from different datasets")
    return image


def label_settings(cam_dir, bkgscore, crf_params, overlay_dir):
    """What the label files depend on: the CAM folder and the settings that made it, bkgscore, the CRF."""
    cam_manifest = os.path.join(cam_dir, CAM_SETTINGS_FILE)
    cams = None
    if os.path.isfile(cam_manifest):
        with open(cam_manifest) as handle:
            cams = json.load(handle)
    return {"cam_dir": os.path.abspath(cam_dir), "cam_settings": cams, "bkgscore": bkgscore,
            "crf": crf_params is not None, "crf_params": crf_params,
            "overlay_dir": os.path.abspath(overlay_dir) if overlay_dir else None}


UNFINISHED = "unfinished_overwrite"  # manifest flag while --overwrite replaces labels of other settings


def unfinished_overwrite(manifest_path):
    """True when the manifest says an --overwrite run that changed the settings did not finish."""
    if not os.path.isfile(manifest_path):
        return False
    with open(manifest_path) as handle:
        return bool(json.load(handle).get(UNFINISHED))


def check_label_folder(label_dir, settings, overwrite):
    """Existing labels are reused only if they were made with the same settings (else they would mix).

    Returns True when this run replaces labels of other settings (the manifest then carries UNFINISHED
    until the run ends, so that an interrupted run is not later resumed as if its folder were uniform).
    """
    path = os.path.join(label_dir, MANIFEST)
    changed, unfinished = settings_changes(path, settings), unfinished_overwrite(path)
    if overwrite:
        return bool(changed) or unfinished
    if changed:
        raise UserError(f"{label_dir} holds pseudo labels made with other settings ({'; '.join(changed[:2])}); "
                        f"pass --overwrite to redo them, or set another labels.dir")
    if unfinished:
        raise UserError(f"{label_dir} holds the labels of an interrupted --overwrite run mixed with older "
                        f"ones; pass --overwrite again to finish it")
    return False


def make_label_files(job, name):
    """Write the label PNG (and overlay) of one image -> "skipped", "written" or "redone" (an output was unreadable)."""
    label_file = os.path.join(job["label_dir"], name + ".png")
    overlay_file = os.path.join(job["overlay_dir"], name + OVERLAY_SUFFIX) if job["overlay_dir"] else None
    outputs = [(voc.read_label, label_file)] + ([(voc.read_image, overlay_file)] if overlay_file else [])
    status = "written"
    if not job["overwrite"]:
        done = [voc.decodes(reader, path) for reader, path in outputs]
        if all(done):
            return "skipped"
        if any(os.path.exists(path) and not ok for (_, path), ok in zip(outputs, done)):
            status = "redone"
    record = load_cam_file(cam_path(job["cam_dir"], name))
    image = None
    if job["crf_params"] is not None or overlay_file:
        image = read_image_like(job["image_root"], name, record["high_res"], job["cam_dir"])
    label = pseudo_label(record["high_res"], record["keys"], job["bkgscore"], image, job["crf_params"])
    voc.save_label_png(label_file, label)
    if overlay_file:
        save_image(overlay_file, Image.fromarray(overlay_labels(image, label)), quality=OVERLAY_QUALITY)
    return status


def make_pseudo_labels(cfg):
    bkgscore, crf_params = label_options(cfg)
    num_workers = worker_count(cfg.labels.num_workers, "labels.num_workers")
    names = voc.read_name_list(cfg.cam.split)
    cam_dir, label_dir, overlay_dir = cfg.exp.cam_dir, cfg.labels.dir, cfg.labels.overlay_dir
    missing = missing_files(names, cam_dir, ".npy")
    if missing:
        raise UserError(f"{len(missing)} of {len(names)} CAM files are missing from {cam_dir} "
                        f"(e.g. {', '.join(missing[:3])}); run infer_cam.py first")
    if crf_params is not None or overlay_dir:
        voc.check_voc_root(cfg.dataset.root_dir)
    for folder, key in ((label_dir, "labels.dir"), (overlay_dir, "labels.overlay_dir")):
        if folder:
            prepare_output_dir(folder, key)

    settings = label_settings(cam_dir, bkgscore, crf_params, overlay_dir)
    overwrite = bool(cfg.labels.overwrite)
    replacing = check_label_folder(label_dir, settings, overwrite)
    manifest = os.path.join(label_dir, MANIFEST)
    save_json(manifest, {**settings, UNFINISHED: True} if replacing else settings)

    job = {"cam_dir": cam_dir, "image_root": cfg.dataset.root_dir, "label_dir": label_dir,
           "overlay_dir": overlay_dir, "bkgscore": bkgscore, "crf_params": crf_params, "overwrite": overwrite}
    counts = {"written": 0, "redone": 0, "skipped": 0}
    progress = tqdm(total=len(names), desc="labels" + (" (CRF)" if crf_params else ""), dynamic_ncols=True)
    with progress:
        chunk = max(1, min(16, len(names) // (4 * max(1, num_workers))))  # few round trips, a balanced finish
        for status in imap_unordered(functools.partial(make_label_files, job), names, num_workers, chunksize=chunk):
            counts[status] += 1
            progress.update()
    if replacing:
        save_json(manifest, settings)

    notes = [f"{counts['skipped']} already done, skipped"] if counts["skipped"] else []
    notes += [f"{counts['redone']} unreadable, redone"] if counts["redone"] else []
    print(f"wrote {counts['written'] + counts['redone']} pseudo labels to {label_dir}"
          + (f" and overlays to {overlay_dir}" if overlay_dir else "")
          + (f" ({'; '.join(notes)})" if notes else ""))
    return counts


def main(argv=None):
    parser = build_parser(__doc__)
    parser.formatter_class = argparse.RawDescriptionHelpFormatter  # keep the usage lines of the docstring
    parser.add_argument("--crf", action="store_true", help="refine the labels with the dense CRF (labels.crf)")
    parser.add_argument("--overwrite", action="store_true", help="redo images whose label exists (labels.overwrite)")
    args, cfg = parse_config(parser, argv)
    if args.crf:
        cfg.labels.crf = True
    if args.overwrite:
        cfg.labels.overwrite = True
    make_pseudo_labels(cfg)


if __name__ == "__main__":
    run_main(main)
