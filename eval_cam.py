"""Stage 3: score the CAMs (or label PNGs) against the VOC ground truth (mIoU, per-class IoU, accuracies).

    python eval_cam.py --config configs/voc.yaml [cam.bkgscore=0.14 ...]
    python eval_cam.py --sweep                          # bkgscore 0.05, 0.06, ..., 0.40 in one pass, and a plot
    python eval_cam.py cam.bkgscore=[0.10,0.14,0.18]    # these thresholds in one pass
    python eval_cam.py --type png [eval.png_dir=DIR]    # label PNGs (pseudo labels, CRF output) instead of CAMs
    python eval_cam.py --allow-missing                  # score the images that have a file, list the others

Images are scored in parallel worker processes (eval.num_workers) that each return a summed
confusion matrix per threshold, so memory does not grow with the number of images.
"""
import ctypes
import ctypes.util
import functools
import os

import numpy as np
from tqdm import tqdm

from datasets import voc
from tools.cam import load_cam_file
from tools.cli import build_parser, parse_config, run_main
from tools.errors import UserError
from tools.io import atomic_open, missing_files, prepare_output_dir, save_json
from tools.parallel import imap_unordered, worker_count
from tools.metrics import N_SEG_CLASSES, format_table, label_confusion, scores, sweep_confusions, sweep_grid

SUFFIXES = {"cam": ".npy", "png": ".png"}  # --type -> file extension of the predictions
SHOWN_MISSING = 5          # names printed of the missing files
CHUNKS_PER_WORKER = 4      # a few chunks per worker: balanced load, a progress bar that moves
MAX_CHUNK = 64             # images per task at most (each task returns one small array)
MALLOC_MMAP_THRESHOLD = 32 << 20  # bytes; glibc's mallopt settings, see keep_freed_memory
MALLOC_TRIM_THRESHOLD = 64 << 20


# ---------------------------------------------------------------------------------------------
# Settings

def bkgscore_thresholds(bkgscore, sweep):
    """cam.bkgscore (a number or a list) or the --sweep grid -> ascending, distinct float thresholds."""
    if sweep:
        if isinstance(bkgscore, (list, tuple)):
            raise UserError("--sweep and a cam.bkgscore list both choose the thresholds; drop one of them")
        return sweep_grid()
    values = list(bkgscore) if isinstance(bkgscore, (list, tuple)) else [bkgscore]  # checked by the config schema
    return sorted({float(value) for value in values})


# ---------------------------------------------------------------------------------------------
# One image, one chunk (these run in the worker processes)

def read_cam(path):
    """A CAM file -> (high_res (k, H, W), keys (k,)), its class keys checked (UserError if not 0..19)."""
    record = load_cam_file(path)
    keys = record["keys"]
    if keys.size and (keys.dtype.kind not in "iu" or keys.min() < 0 or keys.max() >= voc.N_CLASSES):
        raise UserError(f"CAM file {path} has class keys {keys.tolist()} outside 0..{voc.N_CLASSES - 1}; "
                        f"run infer_cam.py again (it redoes such files)")
    return record["high_res"], keys


def _size(shape):
    return f"{shape[1]}x{shape[0]}"


def check_same_size(gt, gt_path, prediction_shape, path, image_path=None):
    """Predictions are made at the image's size: on a mismatch the image (when there) tells which side is wrong."""
    if gt.shape == tuple(prediction_shape):
        return
    image_shape = voc.image_size(image_path) if image_path else None
    if image_shape == gt.shape:
        raise UserError(f"{path} is {_size(prediction_shape)} but its image {image_path} and label {gt_path} are "
                        f"{_size(gt.shape)}; the prediction was made from another image: make it again")
    if image_shape == tuple(prediction_shape):
        raise UserError(f"label {gt_path} is {_size(gt.shape)} but its image {image_path} is {_size(image_shape)}; "
                        f"the label belongs to another image or was resized: check eval.gt_dir")
    raise UserError(f"label {gt_path} is {_size(gt.shape)} but {path} is {_size(prediction_shape)}; "
                    f"predictions and labels come from different images")


def image_confusions(name, pred_dir, gt_dir, kind, thresholds, image_root=None):
    """One image -> (T, 21, 21) confusions for CAMs (one per threshold), (1, 21, 22) for a label PNG."""
    path = os.path.join(pred_dir, name + SUFFIXES[kind])
    gt_path = os.path.join(gt_dir, name + ".png")
    image_path = voc.image_path(image_root, name) if image_root else None
    gt = voc.read_label(gt_path)
    if kind == "png":
        prediction = voc.read_label(path)
        check_same_size(gt, gt_path, prediction.shape, path, image_path)
        return label_confusion(gt, prediction)[None]
    high_res, keys = read_cam(path)
    check_same_size(gt, gt_path, high_res.shape[1:], path, image_path)
    try:
        return sweep_confusions(gt, high_res, keys, thresholds)
    except ValueError as error:
        raise UserError(f"CAM file {path} cannot be scored ({error}); run infer_cam.py again") from None


def chunk_confusions(names, pred_dir, gt_dir, kind, thresholds, image_root=None):
    """The summed confusions of `names` and their count (what a worker sends back)."""
    total = None
    for name in names:
        confusions = image_confusions(name, pred_dir, gt_dir, kind, thresholds, image_root)
        total = confusions if total is None else total + confusions
    return len(names), total


def keep_freed_memory():
    """Ask glibc's malloc to keep freed buffers of up to 32 MB for reuse rather than unmap them at once.

    Every CAM file is unpickled into fresh MB-sized buffers; by default glibc maps each anew and unmaps
    it on free, and the page faults of touching new pages cost as much as the scoring itself (measured
    on a VOC-size image: ~790 faults, ~3 ms of 5 ms). Freed memory above 64 MB is still given back.
    Returns False where there is no glibc (the scores are the same, only slower).
    """
    try:
        mallopt = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").mallopt
    except (OSError, AttributeError):
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3  # malloc.h
    return bool(mallopt(m_mmap_threshold, MALLOC_MMAP_THRESHOLD) and mallopt(m_trim_threshold, MALLOC_TRIM_THRESHOLD))


def score_images(names, pred_dir, gt_dir, kind="cam", thresholds=(0.14,), num_workers=None, progress=True,
                 image_root=None):
    """Summed confusions over `names`: (T, 21, 21) for CAMs at the ascending `thresholds`, (1, 21, 22)
    for label PNGs (thresholds=[None]). num_workers as eval.num_workers: None = every usable core,
    0 or 1 = in this process (whose malloc then keeps freed memory, see keep_freed_memory).
    image_root (the VOC folder) only serves to say which side is wrong when sizes disagree."""
    workers = min(worker_count(num_workers, "eval.num_workers"), len(names))
    chunk_size = max(1, min(MAX_CHUNK, -(-len(names) // max(1, workers * CHUNKS_PER_WORKER))))
    chunks = [names[start:start + chunk_size] for start in range(0, len(names), chunk_size)]
    score_chunk = functools.partial(chunk_confusions, pred_dir=pred_dir, gt_dir=gt_dir, kind=kind,
                                    thresholds=list(thresholds), image_root=image_root)
    total = np.zeros((len(thresholds), N_SEG_CLASSES, N_SEG_CLASSES + (kind == "png")), dtype=np.int64)
    with tqdm(total=len(names), desc="eval", dynamic_ncols=True, disable=not progress) as bar:
        for count, confusions in imap_unordered(score_chunk, chunks, workers, initializer=keep_freed_memory):
            total += confusions
            bar.update(count)
    return total


# ---------------------------------------------------------------------------------------------
# Results

def best_index(results):
    """The threshold with the highest mIoU (the lowest threshold among equals)."""
    mious = [-np.inf if result["miou"] is None else result["miou"] for result in results]
    return int(np.argmax(mious))


def save_sweep_plot(path, sweep, best):
    """mIoU against bkgscore, the best threshold marked, as a PNG written atomically."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    thresholds = [row["bkgscore"] for row in sweep]
    mious = [np.nan if row["miou"] is None else row["miou"] for row in sweep]
    figure = Figure(figsize=(6, 4), layout="tight")
    FigureCanvasAgg(figure)  # draws without pyplot or a display
    axes = figure.subplots()
    axes.plot(thresholds, mious, marker=".", color="tab:blue")
    axes.plot([best["bkgscore"]], [best["miou"]], marker="*", markersize=14, color="tab:red", linestyle="none",
              label=f"best: bkgscore {best['bkgscore']:g}, mIoU {best['miou']:.2f}")
    axes.set_xlabel("background threshold (cam.bkgscore)")
    axes.set_ylabel("mIoU (%)")
    axes.grid(alpha=0.3)
    axes.legend(loc="best")
    with atomic_open(path, "wb") as handle:
        figure.savefig(handle, format="png", dpi=120)


def sweep_lines(sweep, best):
    """The sweep as a small table, thresholds with as many decimals as typed (at least 2), best marked."""
    decimals = max(2, *(len(repr(row["bkgscore"]).partition(".")[2]) for row in sweep))
    lines = [f"{'bkgscore':>8} {'mIoU':>6} {'pix acc':>7} {'mean acc':>8}"]
    for row in sweep:
        cells = ["-" if row[key] is None else f"{row[key]:.2f}" for key in ("miou", "pixel_acc", "mean_acc")]
        marker = "  <- best" if row["bkgscore"] == best["bkgscore"] else ""
        lines.append(f"{row['bkgscore']:>8.{min(decimals, 6)}f} {cells[0]:>6} {cells[1]:>7} {cells[2]:>8}{marker}")
    if len(sweep) > 2 and best["bkgscore"] in (sweep[0]["bkgscore"], sweep[-1]["bkgscore"]):
        lines.append("note: the best threshold is at an end of the sweep; the optimum may lie beyond it "
                     "(cam.bkgscore=[...] sets other thresholds)")
    return lines


def prediction_source(cfg, kind):
    """--type -> (folder of the prediction files, what they are called, how to make them)."""
    if kind == "cam":
        return cfg.exp.cam_dir, "CAM files", "run infer_cam.py first"
    png_dir = cfg.get("eval.png_dir") or os.path.join(cfg.exp.work_dir, "pseudo_labels")
    return png_dir, "label PNGs", "write them first (e.g. tools/pseudo_labels.py) or set eval.png_dir"


def print_report(result, n_thresholds):
    print(format_table(result))
    if "sweep" in result:
        print("\n".join(sweep_lines(result["sweep"], result)))
    if result["type"] == "cam":
        setting = f"bkgscore {result['bkgscore']:g}" + (f", best of {n_thresholds}" if "sweep" in result else "")
    else:
        setting = f"label PNGs from {result['png_dir']}, {result['unlabelled_pct']:.2f}% unlabelled"
    miou, pixel_acc, mean_acc = ("-" if result[key] is None else f"{result[key]:.2f}"
                                 for key in ("miou", "pixel_acc", "mean_acc"))
    print(f"mIoU {miou}  pixel acc {pixel_acc}  mean acc {mean_acc}  ({setting}, {result['n_images']} images)")


def evaluate(cfg, kind="cam", sweep=False, allow_missing=False):
    if kind not in SUFFIXES:
        raise UserError(f"--type {kind}: choose one of {', '.join(SUFFIXES)}")
    if kind == "png" and sweep:
        raise UserError("--sweep varies the CAMs' background threshold; label PNGs (--type png) have none")
    thresholds = bkgscore_thresholds(cfg.cam.bkgscore, sweep) if kind == "cam" else [None]
    sweeping = kind == "cam" and (sweep or isinstance(cfg.cam.bkgscore, (list, tuple)))
    num_workers = worker_count(cfg.get("eval.num_workers"), "eval.num_workers")
    names = voc.read_name_list(cfg.cam.split)
    pred_dir, what, producer = prediction_source(cfg, kind)
    gt_dir = cfg.eval.gt_dir
    if not os.path.isdir(gt_dir):
        raise UserError(f"ground-truth folder {gt_dir} does not exist; set eval.gt_dir. {voc.VOC_HELP}")

    missing = missing_files(names, pred_dir, SUFFIXES[kind])
    examples = ", ".join(missing[:SHOWN_MISSING]) + (", ..." if len(missing) > SHOWN_MISSING else "")
    n_present = len(names) - len(missing)
    if missing and (not allow_missing or n_present == 0):
        advice = f", or pass --allow-missing to score the other {n_present}" if n_present else ""
        raise UserError(f"{len(missing)} of {len(names)} {what} are missing from {pred_dir} "
                        f"(e.g. {examples}); {producer}{advice}")
    if missing:
        print(f"warning: {len(missing)} of {len(names)} {what} are missing from {pred_dir} ({examples}); "
              f"scoring the other {n_present}", flush=True)
        missing_set = set(missing)
        names = [name for name in names if name not in missing_set]

    prepare_output_dir(os.path.dirname(os.path.abspath(cfg.eval.json)), "eval.json")
    confusions = score_images(names, pred_dir, gt_dir, kind, thresholds, num_workers,
                              image_root=cfg.dataset.root_dir)
    per_threshold = [scores(confusion) for confusion in confusions]
    best = best_index(per_threshold)
    result = {**per_threshold[best], "bkgscore": thresholds[best], "n_images": len(names), "split": cfg.cam.split,
              "cam_dir": pred_dir if kind == "cam" else None, "type": kind,
              "n_missing": len(missing), "missing": missing}
    if kind == "png":  # predicted 255 (no label): a miss of the ground-truth class, nobody's false positive
        result["png_dir"] = pred_dir
        result["unlabelled_pct"] = float(100 * confusions[0][:, -1].sum() / max(1, confusions[0].sum()))
    if sweeping:
        result["sweep"] = [{"bkgscore": threshold, "miou": row["miou"], "pixel_acc": row["pixel_acc"],
                            "mean_acc": row["mean_acc"]} for threshold, row in zip(thresholds, per_threshold)]

    print_report(result, len(thresholds))
    save_json(cfg.eval.json, result)
    print(f"wrote {cfg.eval.json}")
    if sweeping and result["miou"] is not None:
        plot_path = os.path.splitext(cfg.eval.json)[0] + "_sweep.png"
        save_sweep_plot(plot_path, result["sweep"], result)
        print(f"wrote {plot_path}")
    return result


def main(argv=None):
    parser = build_parser(__doc__)
    parser.add_argument("--type", choices=sorted(SUFFIXES), default="cam",
                        help="cam: the CAM .npy files of exp.cam_dir (default); png: label PNGs of eval.png_dir")
    parser.add_argument("--sweep", action="store_true",
                        help="score cam.bkgscore 0.05, 0.06, ..., 0.40 in one pass; report the best, plot them all")
    parser.add_argument("--allow-missing", action="store_true",
                        help="score the images that have a prediction file and list the missing ones")
    args, cfg = parse_config(parser, argv)
    evaluate(cfg, kind=args.type, sweep=args.sweep, allow_missing=args.allow_missing)


if __name__ == "__main__":
    run_main(main)
