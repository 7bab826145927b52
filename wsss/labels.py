"""From CAMs to label maps (a constant background score, optionally the dense CRF), and label colours."""
import numpy as np

from engine.errors import UserError
from wsss.crf import check_crf_params, crf_label

OVERLAY_ALPHA = 0.5  # weight of the label colour over the image


def cam_to_label(high_res, keys, bkgscore):
    """Argmax over [constant background map, CAMs of the present classes] -> (H, W) class ids."""
    high_res = np.asarray(high_res)
    padded = np.concatenate([np.full((1,) + high_res.shape[1:], bkgscore, dtype=high_res.dtype), high_res])
    class_ids = np.concatenate([[0], np.asarray(keys, dtype=np.int64) + 1])
    return class_ids[padded.argmax(axis=0)].astype(np.uint8)


def pseudo_label(high_res, keys, bkgscore, image=None, crf_params=None):
    """(k, H, W) CAMs of the classes `keys` -> (H, W) uint8 class ids: cam_to_label, or through the
    dense CRF on the (H, W, 3) uint8 `image` when crf_params is given."""
    if crf_params is None:
        return cam_to_label(high_res, keys, bkgscore)
    return crf_label(image, high_res, keys, bkgscore, crf_params)


def _one_bkgscore(value, key):
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise UserError(f"{key} must be one number for pseudo labels, got {value!r}; set labels.bkgscore=0.14")
    return float(value)


def label_options(cfg, crf=None):
    """(bkgscore, crf_params or None) of the labels section; crf (bool) overrides labels.crf."""
    if cfg.labels.bkgscore is None:
        bkgscore = _one_bkgscore(cfg.cam.bkgscore, "cam.bkgscore (labels.bkgscore is null)")
    else:
        bkgscore = _one_bkgscore(cfg.labels.bkgscore, "labels.bkgscore")
    use_crf = cfg.labels.crf if crf is None else crf
    return bkgscore, (check_crf_params(cfg.get("labels.crf_params")) if use_crf else None)


def label_colours(label, palette):
    """(H, W) class ids -> (H, W, 3) uint8 colours of the flat 768-value `palette` (255, the ignore index,
    takes the palette's last colour)."""
    return np.asarray(palette, dtype=np.uint8).reshape(-1, 3)[np.asarray(label, dtype=np.uint8)]


def overlay_labels(image, label, palette, alpha=OVERLAY_ALPHA):
    """Blend the label colours over the (H, W, 3) uint8 image; background (0) pixels keep the image."""
    blended = (1 - alpha) * image.astype(np.float32) + alpha * label_colours(label, palette).astype(np.float32)
    return np.where((np.asarray(label) == 0)[..., None], image, np.round(blended).astype(np.uint8))
