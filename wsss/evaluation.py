"""The streaming, parallel evaluator every evaluation of the pipeline uses: predictions against ground truth.

Predictions are files in a folder, one per image: CAM files (scored at one or many background
thresholds in one pass) or label PNGs (a pixel labelled 255 counts as a miss). Worker processes
each score chunks of images and return summed confusion matrices, so memory does not grow with
the number of images; an error in a worker (a corrupt file, an RGB label, a size mismatch) is
still one UserError naming the file.
"""
import ctypes
import ctypes.util
import functools
import os

import numpy as np
from tqdm import tqdm

from datasets.files import IGNORE_INDEX, image_size, read_label
from engine.errors import UserError
from engine.files import atomic_open, missing_files, prepare_output_dir, save_json
from engine.parallel import imap_unordered, worker_count
from wsss.cam_files import load_cam_file
from wsss.metrics import format_table, label_confusion, scores, sweep_confusions

SUFFIXES = {"cam": ".npy", "png": ".png"}  # kind of prediction -> file extension
SHOWN_MISSING = 5          # names printed of the missing files
CHUNKS_PER_WORKER = 4      # a few chunks per worker: balanced load, a progress bar that moves
MAX_CHUNK = 64             # images per task at most (each task returns one small array)
MALLOC_MMAP_THRESHOLD = 32 << 20  # bytes; glibc's mallopt settings, see keep_freed_memory
MALLOC_TRIM_THRESHOLD = 64 << 20


# ---------------------------------------------------------------------------------------------
# One image, one chunk (these run in the worker processes)

def read_cam(path, n_classes):
    """A CAM file -> (high_res (k, H, W), keys (k,)), its class keys checked (UserError if not 0..n_classes-1)."""
    record = load_cam_file(path)
    keys = record["keys"]
    if keys.size and (keys.dtype.kind not in "iu" or keys.min() < 0 or keys.max() >= n_classes):
        raise UserError(f"CAM file {path} has class keys {keys.tolist()} outside 0..{n_classes - 1}; "
                        f"run infer_cam.py again (it redoes such files)")
    return record["high_res"], keys


def _size(shape):
    return f"{shape[1]}x{shape[0]}"


def check_same_size(gt, gt_path, prediction_shape, path, image_path=None):
    """Predictions are made at the image's size: on a mismatch the image (when there) tells which side is wrong."""
    if gt.shape == tuple(prediction_shape):
        return
    image_shape = image_size(image_path) if image_path else None
    if image_shape == gt.shape:
        raise UserError(f"{path} is {_size(prediction_shape)} but its image {image_path} and label {gt_path} are "
                        f"{_size(gt.shape)}; the prediction was made from another image: make it again")
    if image_shape == tuple(prediction_shape):
        raise UserError(f"label {gt_path} is {_size(gt.shape)} but its image {image_path} is {_size(image_shape)}; "
                        f"the label belongs to another image or was resized: check eval.gt_dir")
    raise UserError(f"label {gt_path} is {_size(gt.shape)} but {path} is {_size(prediction_shape)}; "
                    f"predictions and labels come from different images")


def check_class_ids(label, path, n_classes, advice):
    """A label map holds class ids 0..n_classes-1 and 255 only (else one error naming the file and the ids).
    Run on every image scored: for uint8 maps one pass decides (255 + 1 wraps to 0, so any other id from
    n_classes up is the only way past n_classes)."""
    if label.size == 0:
        return
    if label.dtype == np.uint8 and n_classes < 255:
        if int((label + np.uint8(1)).max()) <= n_classes:
            return
    elif int(label.max()) < n_classes:
        return
    stray = np.unique(label[(label >= n_classes) & (label != IGNORE_INDEX)])
    if stray.size:
        shown = ", ".join(str(value) for value in stray[:5].tolist()) + (", ..." if stray.size > 5 else "")
        raise UserError(f"label {path} holds ids {shown} above {n_classes - 1} (the dataset's class ids are "
                        f"0..{n_classes - 1}, 255 unscored); {advice}")


def image_confusions(name, pred_dir, gt_dir, kind, thresholds, n_classes, source=None):
    """One image -> (T, n, n) confusions for CAMs (one per threshold), (1, n, n + 1) for a label PNG.
    n_classes counts background; source (optional) finds the image, to say which side is wrong on a size
    mismatch."""
    path = os.path.join(pred_dir, name + SUFFIXES[kind])
    gt_path = os.path.join(gt_dir, name + ".png")
    image_path = source.image_path(name) if source is not None else None
    gt = read_label(gt_path)
    check_class_ids(gt, gt_path, n_classes, source.masks_hint if source is not None else "check eval.gt_dir")
    if kind == "png":
        prediction = read_label(path)
        check_class_ids(prediction, path, n_classes, "it was made for another dataset (dataset.name): make it again")
        check_same_size(gt, gt_path, prediction.shape, path, image_path)
        return label_confusion(gt, prediction, n_classes)[None]
    high_res, keys = read_cam(path, n_classes - 1)
    check_same_size(gt, gt_path, high_res.shape[1:], path, image_path)
    try:
        return sweep_confusions(gt, high_res, keys, thresholds, n_classes)
    except ValueError as error:
        raise UserError(f"CAM file {path} cannot be scored ({error}); run infer_cam.py again") from None


def chunk_confusions(names, **image_arguments):
    """The summed confusions of `names` and their count (what a worker sends back)."""
    total = None
    for name in names:
        confusions = image_confusions(name, **image_arguments)
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


def score_images(names, pred_dir, gt_dir, n_classes, kind="cam", thresholds=(0.14,), num_workers=None,
                 progress=True, source=None):
    """Summed confusions over `names`: (T, n, n) for CAMs at the ascending `thresholds`, (1, n, n + 1)
    for label PNGs (thresholds=[None]); n = n_classes, background included. num_workers as
    eval.num_workers: None = every usable core, 0 or 1 = in this process (whose malloc then keeps freed
    memory, see keep_freed_memory)."""
    workers = min(worker_count(num_workers, "eval.num_workers"), len(names))
    chunk_size = max(1, min(MAX_CHUNK, -(-len(names) // max(1, workers * CHUNKS_PER_WORKER))))
    chunks = [names[start:start + chunk_size] for start in range(0, len(names), chunk_size)]
    score_chunk = functools.partial(chunk_confusions, pred_dir=pred_dir, gt_dir=gt_dir, kind=kind,
                                    thresholds=list(thresholds), n_classes=n_classes, source=source)
    total = np.zeros((len(thresholds), n_classes, n_classes + (kind == "png")), dtype=np.int64)
    with tqdm(total=len(names), desc="eval", dynamic_ncols=True, disable=not progress) as bar:
        for count, confusions in imap_unordered(score_chunk, chunks, workers, initializer=keep_freed_memory,
                                                    workers_key="eval.num_workers"):
            total += confusions
            bar.update(count)
    return total


# ---------------------------------------------------------------------------------------------
# A whole evaluation

def present_predictions(names, pred_dir, kind, allow_missing, what, producer):
    """(the names that have a prediction file, the missing names); missing files are an error that counts them
    and names the first few, unless allow_missing (then a warning), or every file is missing."""
    missing = missing_files(names, pred_dir, SUFFIXES[kind])
    if not missing:
        return names, missing
    examples = ", ".join(missing[:SHOWN_MISSING]) + (", ..." if len(missing) > SHOWN_MISSING else "")
    n_present = len(names) - len(missing)
    if not allow_missing or n_present == 0:
        advice = f", or pass --allow-missing to score the other {n_present}" if n_present else ""
        raise UserError(f"{len(missing)} of {len(names)} {what} are missing from {pred_dir} "
                        f"(e.g. {examples}); {producer}{advice}")
    print(f"warning: {len(missing)} of {len(names)} {what} are missing from {pred_dir} ({examples}); "
          f"scoring the other {n_present}", flush=True)
    missing_set = set(missing)
    return [name for name in names if name not in missing_set], missing


def best_index(results):
    """The threshold with the highest mIoU (the lowest threshold among equals)."""
    mious = [-np.inf if result["miou"] is None else result["miou"] for result in results]
    return int(np.argmax(mious))


def evaluate(names, pred_dir, gt_dir, source, json_path, kind="cam", thresholds=(None,), num_workers=None,
             allow_missing=False, what="predictions", producer="make them first", sweep=False, context=None,
             configured=None, plot_path=None):
    """Score the predictions of `names` in pred_dir against gt_dir, print the report, write it to json_path
    -> the result dict: the scores of the best threshold, the threshold, counts, the `context` entries,
    the missing names; for label PNGs the share of unlabelled pixels.

    sweep=True: every threshold's scores go under "sweep" and, when plot_path is given, into a plot;
    `configured` (the config's own threshold) is marked there and its scores reported beside the best."""
    if not os.path.isdir(gt_dir):
        raise UserError(f"ground-truth folder {gt_dir} does not exist; set eval.gt_dir. {source.help}")
    names, missing = present_predictions(names, pred_dir, kind, allow_missing, what, producer)
    no_gt = missing_files(names, gt_dir, ".png")
    if no_gt:
        raise UserError(f"{len(no_gt)} of the {len(names)} images scored have no ground truth in {gt_dir} (e.g. "
                        f"{', '.join(no_gt[:3])}); {source.missing_masks_hint}")
    prepare_output_dir(os.path.dirname(os.path.abspath(json_path)), "eval.json")  # before the work, not after it
    confusions = score_images(names, pred_dir, gt_dir, source.n_classes + 1, kind, thresholds, num_workers,
                              source=source)
    per_threshold = [scores(confusion) for confusion in confusions]
    best = best_index(per_threshold)
    result = {**per_threshold[best], "bkgscore": thresholds[best], "n_images": len(names), **(context or {}),
              "type": kind, "n_missing": len(missing), "missing": missing}
    if kind == "png":  # predicted 255 (no label): a miss of the ground-truth class, nobody's false positive
        result["png_dir"] = pred_dir
        result["unlabelled_pct"] = float(100 * confusions[0][:, -1].sum() / max(1, confusions[0].sum()))
    if sweep:
        result["sweep"] = [{"bkgscore": threshold, "miou": row["miou"], "pixel_acc": row["pixel_acc"],
                            "mean_acc": row["mean_acc"]} for threshold, row in zip(thresholds, per_threshold)]
        result["configured_bkgscore"] = configured
    print_report(result, source.table_columns)
    save_json(json_path, result)
    print(f"wrote {json_path}")
    if sweep and plot_path and result["miou"] is not None:
        save_sweep_plot(plot_path, result["sweep"], result, configured,
                        title=f"CAM mIoU of {len(names)} images by background threshold")
        print(f"wrote {plot_path}")
    return result


# ---------------------------------------------------------------------------------------------
# Results

def save_sweep_plot(path, sweep, best, configured=None, title=None):
    """mIoU against bkgscore, the best threshold marked (and the `configured` one, when given), as a PNG
    written atomically."""
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
    if configured is not None:
        axes.axvline(configured, color="tab:gray", linestyle="--", label=f"configured: bkgscore {configured:g}")
    if title:
        axes.set_title(title)
    axes.set_xlabel("background threshold (cam.bkgscore)")
    axes.set_ylabel("mIoU (%)")
    axes.grid(alpha=0.3)
    axes.legend(loc="best")
    with atomic_open(path, "wb") as handle:
        figure.savefig(handle, format="png", dpi=120)


def sweep_lines(sweep, best):
    """The sweep as a small table, thresholds with as many decimals as typed (at least 2), the best marked
    (and the configured one, result["configured_bkgscore"], when it is among them)."""
    decimals = max(2, *(len(repr(row["bkgscore"]).partition(".")[2]) for row in sweep))
    lines = [f"{'bkgscore':>8} {'mIoU':>6} {'pix acc':>7} {'mean acc':>8}"]
    for row in sweep:
        cells = ["-" if row[key] is None else f"{row[key]:.2f}" for key in ("miou", "pixel_acc", "mean_acc")]
        marker = "  <- best" if row["bkgscore"] == best["bkgscore"] else ""
        marker += "  <- configured" if row["bkgscore"] == best.get("configured_bkgscore") else ""
        lines.append(f"{row['bkgscore']:>8.{min(decimals, 6)}f} {cells[0]:>6} {cells[1]:>7} {cells[2]:>8}{marker}")
    if len(sweep) > 2 and best["bkgscore"] in (sweep[0]["bkgscore"], sweep[-1]["bkgscore"]):
        lines.append("note: the best threshold is at an end of the sweep; the optimum may lie beyond it "
                     "(cam.bkgscore=[...] sets other thresholds)")
    return lines


def print_report(result, columns):
    """The per-class table (`columns`: the source's table columns), the sweep if any, and a summary line."""
    sweep = result.get("sweep")
    if sweep:
        print(f"per-class IoU at the best of {len(sweep)} thresholds, bkgscore {result['bkgscore']:g} "
              f"(picked on these same images):")
    print(format_table(result, columns))
    if sweep:
        print("\n".join(sweep_lines(sweep, result)))
        configured = [row for row in sweep if row["bkgscore"] == result.get("configured_bkgscore")]
        if configured and configured[0]["miou"] is not None:
            print(f"at the configured bkgscore {configured[0]['bkgscore']:g}: mIoU {configured[0]['miou']:.2f}")
    if result["type"] == "cam":
        setting = f"bkgscore {result['bkgscore']:g}" + (f", best of {len(sweep)}" if sweep else "")
    else:
        setting = f"label PNGs from {result['png_dir']}, {result['unlabelled_pct']:.2f}% unlabelled"
    miou, pixel_acc, mean_acc = ("-" if result[key] is None else f"{result[key]:.2f}"
                                 for key in ("miou", "pixel_acc", "mean_acc"))
    print(f"mIoU {miou}  pixel acc {pixel_acc}  mean acc {mean_acc}  ({setting}, {result['n_images']} images)")
