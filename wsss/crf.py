"""Dense CRF refinement of CAM pseudo labels (pydensecrf: fully connected CRF, Krähenbühl & Koltun 2011).

The CRF input follows the method: the unary is the softmax over [constant bkgscore map, normalised
CAMs of the present classes] at full image resolution; the pairwise terms are a Gaussian
(smoothness) kernel and a bilateral (appearance) kernel. The parameters come from the config
(labels.crf_params); configs/voc.yaml holds the authors' values.
"""
import numpy as np

from engine.errors import UserError

CRF_PARAM_KEYS = ("gaussian_sxy", "gaussian_compat", "bilateral_sxy", "bilateral_srgb", "bilateral_compat",
                  "iterations")


def check_crf_params(params, key="labels.crf_params", extra_keys=()):
    """The CRF parameters as a plain dict of positive numbers (iterations an int); UserError naming the key if not.
    extra_keys: further keys the mapping must hold (checked by the caller), returned as given."""
    names = CRF_PARAM_KEYS + tuple(extra_keys)
    if not isinstance(params, dict):
        raise UserError(f"{key} must be a mapping with keys {', '.join(names)}; got {params!r}")
    unknown = sorted(set(params) - set(names))
    missing = [name for name in names if name not in params]
    if unknown or missing:
        raise UserError(f"{key} has " + (f"unknown keys {', '.join(unknown)}" if unknown else
                                          f"no {', '.join(missing)}") + f"; it takes {', '.join(names)}")
    for name in CRF_PARAM_KEYS:
        value = params[name]
        whole = name != "iterations" or isinstance(value, int)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0 or not whole:
            kind = "a positive integer" if name == "iterations" else "a positive number"
            raise UserError(f"{key}.{name} must be {kind}, got {value!r}")
    return {name: params[name] for name in names}


def cam_softmax(high_res, bkgscore):
    """(k, H, W) normalised CAMs -> (1 + k, H, W) float32 softmax over [constant bkgscore map, CAMs].

    Channel order is the one wsss.labels.cam_to_label takes the argmax over.
    """
    high_res = np.asarray(high_res, dtype=np.float32)
    scores = np.concatenate([np.full((1,) + high_res.shape[1:], bkgscore, dtype=np.float32), high_res])
    scores -= scores.max(axis=0, keepdims=True)  # numerically stable softmax
    exp = np.exp(scores)
    return exp / exp.sum(axis=0, keepdims=True)


def channel_class_ids(keys):
    """Channel j of [background, CAMs] -> class id: 0 for channel 0, keys[j - 1] + 1 after (as cam_to_label)."""
    return np.concatenate([[0], np.asarray(keys, dtype=np.int64) + 1])


def crf_argmax(image, unary, params):
    """Dense CRF on the (H, W, 3) uint8 `image` with an (n, H * W) unary energy (minus log probabilities, the
    layout of pydensecrf.utils' unary_from_*) -> (H, W) int64 label of highest marginal after inference.

    params: check_crf_params's dict (a gt_prob key, if there, is not used here).
    """
    import pydensecrf.densecrf as dcrf  # imported here: only CRF runs need the compiled extension

    height, width = image.shape[:2]
    n_labels = unary.shape[0]
    if image.shape != (height, width, 3) or unary.shape != (n_labels, height * width):
        raise ValueError(f"image {image.shape} and unary {unary.shape} do not fit: want (H, W, 3) and (n, H * W)")
    crf = dcrf.DenseCRF2D(width, height, n_labels)
    crf.setUnaryEnergy(np.ascontiguousarray(unary, dtype=np.float32))
    crf.addPairwiseGaussian(sxy=params["gaussian_sxy"], compat=params["gaussian_compat"])
    # pydensecrf wants writable C-contiguous buffers (np.array copies: images read by PIL are read-only).
    crf.addPairwiseBilateral(sxy=params["bilateral_sxy"], srgb=params["bilateral_srgb"],
                             rgbim=np.array(image, dtype=np.uint8, order="C"), compat=params["bilateral_compat"])
    marginals = np.asarray(crf.inference(params["iterations"]), dtype=np.float32)
    return marginals.reshape(n_labels, height, width).argmax(axis=0)


def crf_refine(image, probs, params):
    """Dense CRF on (H, W, 3) uint8 `image` with (n, H, W) class probabilities -> (H, W) int64 argmax channel.

    params: check_crf_params's dict (kernel widths in pixels / intensity levels, compatibilities,
    mean-field iterations).
    """
    from pydensecrf.utils import unary_from_softmax  # imported here: only CRF runs need the compiled extension

    if image.shape[:2] != probs.shape[1:]:
        raise ValueError(f"image {image.shape} and probabilities {probs.shape} differ in size")
    return crf_argmax(image, unary_from_softmax(probs), params)


def crf_label(image, high_res, keys, bkgscore, params):
    """cam_to_label through the dense CRF: (H, W, 3) uint8 image and its CAM record -> (H, W) uint8 class ids."""
    channels = crf_refine(image, cam_softmax(high_res, bkgscore), params)
    return channel_class_ids(keys)[channels].astype(np.uint8)
