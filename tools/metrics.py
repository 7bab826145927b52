"""Segmentation scores: confusion matrices, IoU, accuracies; and CAM -> label maps."""
import numpy as np

N_SEG_CLASSES = 21  # background + 20 VOC classes
TABLE_COLUMNS = ("bkg", "aero", "bike", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
                 "table", "dog", "horse", "motor", "person", "plant", "sheep", "sofa", "train", "tv")


def confusion_matrix(gt, pred, n_classes=N_SEG_CLASSES):
    """(n, n) counts, rows = ground truth, columns = prediction; gt pixels outside [0, n) (255) are ignored."""
    gt = np.asarray(gt).ravel().astype(np.int64)
    pred = np.asarray(pred).ravel().astype(np.int64)
    valid = (gt >= 0) & (gt < n_classes)
    return np.bincount(n_classes * gt[valid] + pred[valid], minlength=n_classes ** 2).reshape(n_classes, n_classes)


def scores(confusion):
    """Scores in percent: IoU per class (None when absent from both ground truth and prediction), mIoU and
    mean class accuracy over the classes present in the ground truth, pixel accuracy."""
    confusion = np.asarray(confusion, dtype=np.float64)
    true_positive = np.diag(confusion)
    gt_count, pred_count = confusion.sum(axis=1), confusion.sum(axis=0)
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


def cam_to_label(high_res, keys, bkgscore):
    """Argmax over [constant background map, CAMs of the present classes] -> (H, W) class ids."""
    high_res = np.asarray(high_res)
    padded = np.concatenate([np.full((1,) + high_res.shape[1:], bkgscore, dtype=high_res.dtype), high_res])
    class_ids = np.concatenate([[0], np.asarray(keys, dtype=np.int64) + 1])
    return class_ids[padded.argmax(axis=0)].astype(np.uint8)


def format_table(result):
    """The per-class IoU table in the paper's column order, ending with mIoU."""
    headers = list(TABLE_COLUMNS) + ["mIoU"]
    values = list(result["iou"]) + [result["miou"]]
    cells = ["-" if value is None else f"{value:.1f}" for value in values]
    widths = [max(len(header), len(cell)) for header, cell in zip(headers, cells)]
    return "\n".join(" ".join(text.rjust(width) for text, width in zip(row, widths)) for row in (headers, cells))
