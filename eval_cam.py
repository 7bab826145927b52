"""Stage 3: score the CAMs (or label PNGs) against the ground truth (mIoU, per-class IoU, accuracies).

    python eval_cam.py --config configs/voc.yaml [cam.bkgscore=0.14 ...]
    python eval_cam.py --sweep                          # bkgscore 0.05, 0.06, ..., 0.40 (+ cam.bkgscore), a plot
    python eval_cam.py cam.bkgscore=[0.10,0.14,0.18]    # these thresholds in one pass
    python eval_cam.py --type png [eval.png_dir=DIR]    # label PNGs (pseudo labels, CRF output) instead of CAMs
    python eval_cam.py --allow-missing                  # score the images that have a file, list the others

The run's score at the configured threshold goes to eval.json (eval_cam.json); a sweep (of --sweep or
a cam.bkgscore list) to <eval.json stem>_sweep.json with its plot <stem>_sweep.png, label PNGs to
eval.png_json (<stem>_png.json), so that neither replaces the run's score. Images are scored in parallel worker
processes (eval.num_workers) that each return a summed confusion matrix per threshold, so memory
does not grow with the number of images (wsss/evaluation.py).
"""
import os

from datasets import build_source
from engine.cli import build_parser, parse_config
from engine.errors import UserError, run_main
from engine.parallel import worker_count
from wsss.cam_files import cams_of_current_images
from wsss.evaluation import SUFFIXES, evaluate
from wsss.metrics import sweep_grid
from wsss.schema import DEFAULT_CONFIG, ROOT, SCHEMA


def bkgscore_thresholds(bkgscore, sweep):
    """cam.bkgscore (a number or a list) or the --sweep grid (with the configured threshold, wherever it lies)
    -> ascending, distinct float thresholds."""
    if sweep:
        if isinstance(bkgscore, (list, tuple)):
            raise UserError("--sweep and a cam.bkgscore list both choose the thresholds; drop one of them")
        return sorted(set(sweep_grid()) | {float(bkgscore)})
    values = list(bkgscore) if isinstance(bkgscore, (list, tuple)) else [bkgscore]  # checked by the config schema
    return sorted({float(value) for value in values})


def output_paths(cfg, kind, sweeping):
    """(JSON, plot or None): eval.json for the run's score, <stem>_sweep.json / .png for a sweep, eval.png_json
    (default <stem>_png.json) for label PNGs, so that neither replaces the run's score."""
    stem = os.path.splitext(cfg.eval.json)[0]
    if kind == "png":
        return cfg.get("eval.png_json") or stem + "_png.json", None
    if sweeping:
        return stem + "_sweep.json", stem + "_sweep.png"
    return cfg.eval.json, None


def prediction_source(cfg, kind):
    """--type -> (folder of the prediction files, what they are called, how to make them)."""
    if kind == "cam":
        return cfg.exp.cam_dir, "CAM files", "run infer_cam.py first"
    return cfg.eval.png_dir, "label PNGs", "write them first (e.g. python -m tools.pseudo_labels) or set eval.png_dir"


def evaluate_cams(cfg, kind="cam", sweep=False, allow_missing=False):
    if kind not in SUFFIXES:
        raise UserError(f"--type {kind}: choose one of {', '.join(SUFFIXES)}")
    if kind == "png" and sweep:
        raise UserError("--sweep varies the CAMs' background threshold; label PNGs (--type png) have none")
    thresholds = bkgscore_thresholds(cfg.cam.bkgscore, sweep) if kind == "cam" else [None]
    sweeping = kind == "cam" and (sweep or isinstance(cfg.cam.bkgscore, (list, tuple)))
    num_workers = worker_count(cfg.get("eval.num_workers"), "eval.num_workers")
    source = build_source(cfg)
    source.check_root(folders=())  # as every stage does: a wrong dataset.root_dir is named first
    names = source.read_names(cfg.cam.split)
    pred_dir, what, producer = prediction_source(cfg, kind)
    if kind == "cam":
        cams_of_current_images(pred_dir, source, names)
    json_path, plot_path = output_paths(cfg, kind, sweeping)
    configured = cfg.cam.bkgscore if not isinstance(cfg.cam.bkgscore, (list, tuple)) else None
    context = {"split": cfg.cam.split, "cam_dir": pred_dir if kind == "cam" else None}
    return evaluate(names, pred_dir, cfg.eval.gt_dir, source, json_path, kind=kind, thresholds=thresholds,
                    num_workers=num_workers, allow_missing=allow_missing, what=what, producer=producer,
                    sweep=sweeping, context=context, configured=configured, plot_path=plot_path)


def main(argv=None):
    parser = build_parser(__doc__, DEFAULT_CONFIG, gpu=False)
    parser.add_argument("--type", choices=sorted(SUFFIXES), default="cam",
                        help="cam: the CAM .npy files of exp.cam_dir (default); png: label PNGs of eval.png_dir")
    parser.add_argument("--sweep", action="store_true",
                        help="score cam.bkgscore 0.05, 0.06, ..., 0.40 and the configured value in one pass; report "
                             "the best, plot them all")
    parser.add_argument("--allow-missing", action="store_true",
                        help="score the images that have a prediction file and list the missing ones")
    args, cfg = parse_config(parser, SCHEMA, argv, ROOT)
    evaluate_cams(cfg, kind=args.type, sweep=args.sweep, allow_missing=args.allow_missing)


if __name__ == "__main__":
    run_main(main)
