"""IR labels (IRNet's inter-pixel relation labels): a CAM record -> confident foreground, confident background
and unsure pixels, the training labels of the relation network (SPEC_REFINE.md, section 2).

Each of two thresholds gives a hard label map (argmax over [constant threshold plane, CAMs]) that a dense
CRF then snaps to the image's edges; the CRF's unary comes from the hard labels themselves (pydensecrf's
unary_from_labels), not from a softmax of the scores as in wsss/crf.py. A pixel is foreground where the high
threshold (conf_fg) leaves it a class, background where even the low threshold (conf_bg) leaves it background,
and unsure (255) in between.
"""
import numpy as np

from datasets.files import IGNORE_INDEX
from engine.errors import UserError
from wsss.crf import channel_class_ids, check_crf_params, crf_argmax

# IRNet's settings: its confidence thresholds and the CRF of its hard-label refinement.
CONF_FG = 0.30
CONF_BG = 0.05
IR_CRF_PARAMS = {"gaussian_sxy": 3, "gaussian_compat": 3, "bilateral_sxy": 50, "bilateral_srgb": 5,
                 "bilateral_compat": 10, "iterations": 10, "gt_prob": 0.7}


def check_ir_crf_params(params, key="ir_labels.crf_params"):
    """The IR-label CRF parameters: check_crf_params's keys plus gt_prob in (0, 1) (the probability the
    unary gives each pixel's hard label); a plain dict, or UserError naming the key."""
    checked = check_crf_params(params, key, extra_keys=("gt_prob",))
    gt_prob = checked["gt_prob"]
    if isinstance(gt_prob, bool) or not isinstance(gt_prob, (int, float)) or not 0 < gt_prob < 1:
        raise UserError(f"{key}.gt_prob must be a number between 0 and 1 (exclusive), got {gt_prob!r}")
    return {**checked, "gt_prob": float(gt_prob)}


def thresholded_index_map(high_res, threshold):
    """(k, H, W) CAMs -> (H, W) int64 channel of the argmax over [constant `threshold` plane, CAMs]:
    0 is background (also where a CAM ties with the threshold), j the j-th present class."""
    high_res = np.asarray(high_res, dtype=np.float32)  # the threshold plane in float32, as IRNet's padded CAMs
    scores = np.concatenate([np.full((1,) + high_res.shape[1:], threshold, dtype=np.float32), high_res])
    return scores.argmax(axis=0)


def crf_hard_label(image, high_res, keys, threshold, params):
    """One threshold of the IR labels: the (H, W, 3) uint8 image and its CAM record ((k, H, W) `high_res`,
    class indices `keys`) -> (H, W) uint8 class ids (0 background, keys[j - 1] + 1 for channel j).

    The hard index map of `threshold` is refined by the dense CRF whose unary gives each pixel's hard label
    the probability params["gt_prob"] and the other k labels (1 - gt_prob) / k (unary_from_labels with
    zero_unsure False: index 0 is the background label, not "unknown").
    params: check_ir_crf_params's dict.
    """
    from pydensecrf.utils import unary_from_labels

    high_res = np.asarray(high_res)
    if image.shape[:2] != high_res.shape[1:]:
        raise ValueError(f"image {image.shape} and CAMs {high_res.shape} differ in size")
    indices = thresholded_index_map(high_res, threshold)
    n_labels = len(high_res) + 1
    if n_labels == 1:
        # No present class: a CRF over one label has one labelling, all background. Not run: pydensecrf's
        # unary_from_labels divides by n_labels - 1 (ZeroDivisionError) for a single label.
        return np.zeros(indices.shape, dtype=np.uint8)
    unary = unary_from_labels(indices, n_labels, params["gt_prob"], zero_unsure=False)
    return channel_class_ids(keys)[crf_argmax(image, unary, params)].astype(np.uint8)


def ir_label(image, high_res, keys, conf_fg, conf_bg, crf_params):
    """The IR label of one image: (H, W, 3) uint8 image and its CAM record -> (H, W) uint8 with class ids
    where the conf_fg map is confident foreground, 0 where the conf_bg map is background too, 255 elsewhere.

    fg = crf_hard_label at conf_fg (IRNet: 0.30), bg = the same at conf_bg (0.05). A pixel keeps fg's class;
    where fg is background it is 0 if bg is background as well, else unsure (255: the low threshold still
    sees an object there). An image without present classes (k = 0) is background everywhere.
    crf_params: check_ir_crf_params's dict.
    """
    fg = crf_hard_label(image, high_res, keys, conf_fg, crf_params)
    bg = crf_hard_label(image, high_res, keys, conf_bg, crf_params)
    label = fg.copy()
    label[fg == 0] = IGNORE_INDEX
    label[(fg == 0) & (bg == 0)] = 0
    return label
