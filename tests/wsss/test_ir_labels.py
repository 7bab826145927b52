"""wsss/ir_labels.py: the IR labels (confident foreground, background, unsure) of hand-made images and CAMs,
the hard-label CRF against a direct pydensecrf call, no present class, the parameter check."""
import numpy as np
import pytest

from engine.errors import UserError
from wsss.ir_labels import (CONF_BG, CONF_FG, IR_CRF_PARAMS, check_ir_crf_params, crf_hard_label, ir_label,
                            thresholded_index_map)

HEIGHT, WIDTH = 40, 50
EDGE = 25  # column where the red left half meets the blue right half


def noisy(image, seed):
    noise = np.random.default_rng(seed).normal(0, 4, image.shape)
    return np.clip(image + noise, 0, 255).astype(np.uint8)


def distance_to_centre():
    rows, columns = np.mgrid[:HEIGHT, :WIDTH]
    return np.hypot(rows - 20, columns - 25)


def ring_scene(seed=0):
    """A red disc (radius 8) in a green ring (radius 14) on grey, and a CAM that is high on the disc (0.9),
    between the thresholds on the ring (0.15) and low on the grey (0.01)."""
    distance = distance_to_centre()
    image = np.full((HEIGHT, WIDTH, 3), 120, dtype=np.float32)
    image[distance < 14] = (40, 160, 40)
    image[distance < 8] = (200, 30, 30)
    cam = np.where(distance < 8, 0.9, np.where(distance < 14, 0.15, 0.01)).astype(np.float32)
    return noisy(image, seed), cam[None]


def red_blue_image(seed=0):
    image = np.zeros((HEIGHT, WIDTH, 3), dtype=np.float32)
    image[:, :EDGE] = (200, 30, 30)
    image[:, EDGE:] = (30, 30, 200)
    return noisy(image, seed)


def test_confident_disc_unsure_ring_and_background():
    image, high_res = ring_scene()
    label = ir_label(image, high_res, np.array([6]), CONF_FG, CONF_BG, IR_CRF_PARAMS)
    distance = distance_to_centre()
    assert label.dtype == np.uint8 and label.shape == (HEIGHT, WIDTH)
    assert set(np.unique(label)) == {0, 7, 255}
    assert (label[distance < 8] == 7).all()  # the confident disc keeps its class (keys 6 -> id 7)
    assert (label[(distance >= 8) & (distance < 14)] == 255).all()  # between the thresholds: unsure
    assert (label[distance >= 14] == 0).all()  # far from the object: background


def test_crf_snaps_a_noisy_hard_label_map_to_the_colour_edge():
    # The object (class index 2) covers the red half; its CAM runs 3 px over the edge, and 15 % of the pixels
    # are flipped between object and background.
    rng = np.random.default_rng(1)
    cam = np.tile(np.where(np.arange(WIDTH) < EDGE + 3, 0.8, 0.0), (HEIGHT, 1))
    cam = np.where(rng.random((HEIGHT, WIDTH)) < 0.15, 0.8 - cam, cam).astype(np.float32)[None]
    expected = np.tile(np.where(np.arange(WIDTH) < EDGE, 3, 0), (HEIGHT, 1))
    hard = np.array([0, 3])[thresholded_index_map(cam, CONF_FG)]
    refined = crf_hard_label(red_blue_image(), cam, np.array([2]), CONF_FG, IR_CRF_PARAMS)
    assert (hard != expected).sum() > 300  # the hard labels before the CRF: noise and the shifted boundary
    assert refined.dtype == np.uint8 and np.array_equal(refined, expected)


def test_keys_map_channels_to_class_ids():
    # Two classes, left and right half: channel 1 -> keys[0] + 1 = 5, channel 2 -> keys[1] + 1 = 15.
    left = np.tile(np.arange(WIDTH) < EDGE, (HEIGHT, 1))
    high_res = np.stack([np.where(left, 0.9, 0.0), np.where(left, 0.0, 0.9)]).astype(np.float32)
    label = ir_label(red_blue_image(), high_res, np.array([4, 14]), CONF_FG, CONF_BG, IR_CRF_PARAMS)
    assert np.array_equal(label, np.where(left, 5, 15))


def test_threshold_plane_wins_ties_and_picks_the_strongest_class():
    high_res = np.array([[[0.3, 0.5, 0.1]], [[0.2, 0.6, 0.31]]], dtype=np.float32)
    assert thresholded_index_map(high_res, 0.3).tolist() == [[0, 2, 2]]
    assert thresholded_index_map(high_res, 0.7).tolist() == [[0, 0, 0]]


def test_no_present_class_is_background_everywhere():
    image, _ = ring_scene()
    high_res = np.zeros((0, HEIGHT, WIDTH), dtype=np.float32)
    keys = np.zeros(0, dtype=np.int64)
    hard = crf_hard_label(image, high_res, keys, CONF_FG, IR_CRF_PARAMS)
    label = ir_label(image, high_res, keys, CONF_FG, CONF_BG, IR_CRF_PARAMS)
    assert hard.dtype == label.dtype == np.uint8
    assert hard.shape == label.shape == (HEIGHT, WIDTH) and not hard.any() and not label.any()


def test_hard_label_crf_is_irnets_pydensecrf_call():
    import pydensecrf.densecrf as dcrf
    from pydensecrf.utils import unary_from_labels

    image, _ = ring_scene(seed=3)
    distance = distance_to_centre()
    # Three classes, noisy: one on the disc, one on the ring, one nowhere in particular.
    high_res = np.random.default_rng(2).random((3, HEIGHT, WIDTH), dtype=np.float32) * 0.4
    high_res[0, distance < 8] += 0.5
    high_res[1, (distance >= 8) & (distance < 14)] += 0.3
    keys = np.array([0, 8, 19])
    scores = np.concatenate([np.full((1, HEIGHT, WIDTH), 0.3, np.float32), high_res])
    crf = dcrf.DenseCRF2D(WIDTH, HEIGHT, 4)
    crf.setUnaryEnergy(unary_from_labels(scores.argmax(axis=0), 4, gt_prob=0.7, zero_unsure=False))
    crf.addPairwiseGaussian(sxy=3, compat=3)
    crf.addPairwiseBilateral(sxy=50, srgb=5, rgbim=np.ascontiguousarray(np.copy(image)), compat=10)
    direct = np.array([0, 1, 9, 20])[np.array(crf.inference(10)).reshape(4, HEIGHT, WIDTH).argmax(axis=0)]
    ours = crf_hard_label(image, high_res, keys, 0.3, IR_CRF_PARAMS)
    assert IR_CRF_PARAMS == {"gaussian_sxy": 3, "gaussian_compat": 3, "bilateral_sxy": 50, "bilateral_srgb": 5,
                             "bilateral_compat": 10, "iterations": 10, "gt_prob": 0.7}
    assert set(np.unique(direct)) == {0, 1, 9} and np.array_equal(ours, direct)


def test_image_and_cams_of_different_sizes_are_refused():
    image, high_res = ring_scene()
    with pytest.raises(ValueError, match="differ in size"):
        crf_hard_label(image[:, :-1], high_res, np.array([6]), CONF_FG, IR_CRF_PARAMS)


def test_crf_params_are_checked():
    assert check_ir_crf_params(dict(IR_CRF_PARAMS)) == IR_CRF_PARAMS
    with pytest.raises(UserError, match="ir_labels.crf_params has no gt_prob"):
        check_ir_crf_params({key: value for key, value in IR_CRF_PARAMS.items() if key != "gt_prob"})
    with pytest.raises(UserError, match="unknown keys zero_unsure"):
        check_ir_crf_params({**IR_CRF_PARAMS, "zero_unsure": False})
    with pytest.raises(UserError, match="gt_prob must be a number between 0 and 1"):
        check_ir_crf_params({**IR_CRF_PARAMS, "gt_prob": 1})
    with pytest.raises(UserError, match="ir.crf.iterations must be a positive integer"):
        check_ir_crf_params({**IR_CRF_PARAMS, "iterations": 0}, key="ir.crf")
