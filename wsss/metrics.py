"""Segmentation scores: confusion matrices, IoU, accuracies, and every background threshold of a CAM in one pass.

n_classes counts every label id that is scored: background and the foreground classes (21 on VOC).
"""
import functools

import numpy as np


def confusion_matrix(gt, pred, n_classes):
    """(n, n) counts, rows = ground truth, columns = prediction; gt pixels outside [0, n) (255) are ignored."""
    gt = np.asarray(gt).ravel().astype(np.int64)
    pred = np.asarray(pred).ravel().astype(np.int64)
    valid = (gt >= 0) & (gt < n_classes)
    return np.bincount(n_classes * gt[valid] + pred[valid], minlength=n_classes ** 2).reshape(n_classes, n_classes)


def scores(confusion):
    """Scores in percent: IoU per class (None when absent from both ground truth and prediction), mIoU and
    mean class accuracy over the classes present in the ground truth, pixel accuracy.

    confusion: (n, n), or (n, n + 1) whose last column counts pixels predicted as no class (255 in a
    label PNG): they are misses of their ground-truth class and nobody's false positive.
    """
    confusion = np.asarray(confusion, dtype=np.float64)
    n_classes = confusion.shape[0]
    true_positive = np.diag(confusion[:, :n_classes])
    gt_count, pred_count = confusion.sum(axis=1), confusion[:, :n_classes].sum(axis=0)
    union = gt_count + pred_count - true_positive
    with np.errstate(divide="ignore", invalid="ignore"):
        iou = true_positive / union
        class_acc = true_positive / gt_count
    in_gt = gt_count > 0
    return {
        "miou": float(100 * iou[in_gt].mean()) if in_gt.any() else None,
        "iou": [None if np.isnan(value) else float(100 * value) for value in iou],
        "pixel_acc": float(100 * true_positive.sum() / confusion.sum()) if confusion.sum() else None,
        "mean_acc": float(100 * class_acc[in_gt].mean()) if in_gt.any() else None,
    }


def sweep_grid(first=0.05, last=0.40, step=0.01):
    """Thresholds first, first + step, ..., last (36 by default), rounded so that they print and compare as
    typed (0.07, not 0.07000000000000001)."""
    count = int(round((last - first) / step)) + 1
    return [round(first + index * step, 9) for index in range(count)]


def label_rows(label, n_classes):
    """Flattened class ids with every id outside [0, n) (255, -1) replaced by n: one extra row/column for them."""
    label = np.asarray(label).ravel()
    if label.dtype.kind == "u":
        return np.minimum(label, n_classes)  # one cheap pass for uint8 PNG indices
    return np.where((label >= 0) & (label < n_classes), label, n_classes)


def label_confusion(gt, pred, n_classes):
    """(n, n + 1) counts of a predicted label map (e.g. a label PNG): rows = ground truth (ids outside [0, n)
    ignored), columns = prediction, the last column = predicted ids outside [0, n) (255: no label)."""
    index = label_rows(gt, n_classes).astype(np.intp) * (n_classes + 1) + label_rows(pred, n_classes)
    counts = np.bincount(index, minlength=(n_classes + 1) ** 2)
    return counts.reshape(n_classes + 1, n_classes + 1)[:n_classes]


def top_cam(cams):
    """(k, N) CAMs, k >= 1 -> (largest value, uint8 index of the first channel holding it) per pixel.

    Same as max/argmax over axis 0, but a pass per channel over contiguous rows, which is several
    times faster than numpy's strided argmax for the few classes of an image.
    """
    top = cams[0].copy()
    top_key = np.zeros(top.shape, dtype=np.uint8)
    for key_index in range(1, len(cams)):
        np.copyto(top_key, key_index, where=cams[key_index] > top)  # strict: the first maximum wins ties
        np.maximum(top, cams[key_index], out=top)
    return top, top_key


TABLE_SHIFT = 12  # count_below: a float32 is looked up by its top 20 bits (cells of 4096 ulps)


@functools.lru_cache(maxsize=8)
def _below_table(threshold_bytes):
    """For count_below: uint8 table, cell -> number of thresholds below the cell, 255 for a cell that
    holds a threshold (its values need a real comparison). Cached: a sweep builds it once per process."""
    cells = np.frombuffer(threshold_bytes, dtype=np.float32).view(np.int32) >> TABLE_SHIFT
    table = np.searchsorted(cells, np.arange(cells[-1] + 2, dtype=np.int32), side="left").astype(np.uint8)
    table[cells] = 255
    return table


def count_below(values, thresholds):
    """Number of `thresholds` (ascending, same dtype as values) strictly below each value; NaN-free values.

    np.searchsorted does this with a binary search per value, whose unpredictable branches cost ~12 ns a
    pixel on CAMs. For float32 and positive thresholds, the int32 view of a non-negative float orders as the
    float does, so a table indexed by its top bits answers every value whose cell holds no threshold
    (negative values clip to cell 0, below all); the ~1% of values in a threshold's cell get the binary search.
    """
    thresholds = np.asarray(thresholds)
    table_ok = (values.dtype == np.float32 and thresholds.dtype == np.float32 and len(thresholds) < 255
                and thresholds[0] > 0 and (thresholds[:1].view(np.int32)[0] >> TABLE_SHIFT) > 0)
    if not table_ok:
        return np.searchsorted(thresholds, values, side="left")
    below = np.take(_below_table(thresholds.tobytes()), values.view(np.int32) >> TABLE_SHIFT, mode="clip")
    unsure = np.flatnonzero(below == 255)
    below[unsure] = np.searchsorted(thresholds, values[unsure], side="left")
    return below


def sweep_confusions(gt, high_res, keys, thresholds, n_classes):
    """(T, n, n) confusion matrices of wsss.labels.cam_to_label(high_res, keys, t) against gt for each of the T
    ascending `thresholds`, in about the time of one.

    A pixel whose largest CAM value m is <= t is background (background wins ties); otherwise it takes
    the class of its first largest CAM. Counting pixels by (gt row, CAM class, number of thresholds
    below m) in one bincount gives every threshold's matrix by a reverse cumulative sum. Thresholds
    are compared in the CAMs' dtype (float32 for infer_cam.py's files), exactly as cam_to_label does.
    NaN CAM values are a ValueError.
    """
    high_res = np.asarray(high_res)
    dtype = high_res.dtype if high_res.dtype.kind == "f" else np.dtype(np.float32)
    thresholds = np.asarray(thresholds, dtype=dtype)
    if thresholds.ndim != 1 or len(thresholds) == 0 or np.any(np.diff(thresholds) < 0):
        raise ValueError("thresholds must be a non-empty ascending sequence")
    n_thresholds, n_keys = len(thresholds), len(keys)
    if high_res.shape[0] != n_keys or high_res.shape[1:] != np.shape(gt):
        raise ValueError(f"CAMs {high_res.shape} do not match {n_keys} keys and labels {np.shape(gt)}")
    rows = label_rows(gt, n_classes)
    confusions = np.zeros((n_thresholds, n_classes, n_classes), dtype=np.int64)
    if n_keys == 0:  # no class in the image: every pixel is background at every threshold
        confusions[:, :, 0] = np.bincount(rows, minlength=n_classes + 1)[:n_classes]
        return confusions
    top, top_key = top_cam(high_res.reshape(n_keys, -1).astype(dtype, copy=False))
    if np.isnan(top).any():
        raise ValueError("CAMs hold NaN values")

    # Bin index ((gt row * k) + key) * (T + 1) + (number of thresholds below m), in small integers.
    n_bins = n_thresholds + 1
    n_cells = (n_classes + 1) * n_keys * n_bins
    index = rows.astype(np.uint16 if n_cells <= 2 ** 16 else np.intp)
    index *= n_keys
    index += top_key
    index *= n_bins
    if n_thresholds <= 4:  # a few comparisons beat any search
        for threshold in thresholds:
            index += top > threshold
    else:
        np.add(index, count_below(top, thresholds), out=index, casting="unsafe")  # < n_cells: fits
    counts = np.bincount(index, minlength=n_cells).reshape(n_classes + 1, n_keys, n_bins)[:n_classes]

    # foreground[g, j, i]: pixels of gt g given key j at threshold i, i.e. with more than i thresholds below m
    foreground = np.cumsum(counts[:, :, ::-1], axis=2)[:, :, ::-1][:, :, 1:]
    for key_index, key in enumerate(np.asarray(keys, dtype=np.int64)):
        confusions[:, :, key + 1] += foreground[:, key_index, :].T
    confusions[:, :, 0] += (counts.sum(axis=(1, 2))[:, None] - foreground.sum(axis=1)).T
    return confusions


ONE_LINE_WIDTH = 136  # characters: a table this wide stays on one line (VOC's 21 classes: at most 133)
BLOCK_WIDTH = 100     # a wider one (COCO's 81 classes) wraps into blocks of columns this wide


def format_table(result, columns, one_line=ONE_LINE_WIDTH, width=BLOCK_WIDTH):
    """The per-class IoU table under the `columns` names (background first), ending with mIoU; a table wider
    than `one_line` characters wraps into blocks of at most `width`, one under the other (the JSON keeps
    every value)."""
    headers = list(columns) + ["mIoU"]
    values = list(result["iou"]) + [result["miou"]]
    cells = ["-" if value is None else f"{value:.1f}" for value in values]
    widths = [max(len(header), len(cell)) for header, cell in zip(headers, cells)]
    if sum(widths) + len(widths) - 1 <= one_line:  # one block of every column
        width = one_line
    blocks, start, used = [], 0, 0
    for index, cell_width in enumerate(widths):
        if used and used + 1 + cell_width > width:
            blocks.append((start, index))
            start, used = index, 0
        used += cell_width + (1 if used else 0)
    blocks.append((start, len(widths)))
    lines = []
    for begin, end in blocks:
        for row in (headers, cells):
            lines.append(" ".join(text.rjust(w) for text, w in zip(row[begin:end], widths[begin:end])))
    return "\n".join(lines)
