"""The dense CRF input (softmax over [bkgscore, CAMs]), its class-id mapping and its effect at a colour edge."""
import numpy as np
import pytest

from wsss.crf import cam_softmax, channel_class_ids, check_crf_params, crf_label
from engine.errors import UserError
from wsss.labels import cam_to_label

AUTHORS = {"gaussian_sxy": 1, "gaussian_compat": 3, "bilateral_sxy": 64, "bilateral_srgb": 3,
           "bilateral_compat": 4, "iterations": 10}
EDGE = 16  # column where the red left half meets the blue right half


def red_blue_image(height=16, width=32, seed=0):
    """Left half red, right half blue, with a little pixel noise."""
    image = np.zeros((height, width, 3), dtype=np.float32)
    image[:, :EDGE] = (200, 30, 30)
    image[:, EDGE:] = (30, 30, 200)
    noise = np.random.default_rng(seed).normal(0, 4, image.shape)
    return np.clip(image + noise, 0, 255).astype(np.uint8)


def test_cam_softmax_is_a_distribution_in_cam_to_label_channel_order():
    rng = np.random.default_rng(1)
    high_res = rng.random((3, 5, 7), dtype=np.float32)
    high_res[:, 0, 0] = 0.2  # a tie with the background: background wins, as in cam_to_label
    keys = np.array([2, 7, 19])
    probs = cam_softmax(high_res, 0.2)
    assert probs.shape == (4, 5, 7) and probs.dtype == np.float32
    np.testing.assert_allclose(probs.sum(axis=0), 1, rtol=1e-6)
    assert np.array_equal(channel_class_ids(keys)[probs.argmax(axis=0)], cam_to_label(high_res, keys, 0.2))


# The object (class id 5) covers the red half; its CAM spills 3 px onto the blue half, or stops 3 px short.
@pytest.mark.parametrize("cam_row", [
    [1.0] * EDGE + [0.5, 0.4, 0.3] + [0.0] * 13,
    [1.0] * (EDGE - 3) + [0.12, 0.1, 0.05] + [0.0] * 16,
], ids=["spills_over_edge", "stops_short_of_edge"])
def test_crf_moves_label_boundary_to_colour_edge(cam_row):
    high_res = np.tile(np.array(cam_row, dtype=np.float32), (16, 1))[None]
    keys = np.array([4])
    plain = cam_to_label(high_res, keys, 0.14)
    refined = crf_label(red_blue_image(), high_res, keys, 0.14, check_crf_params(AUTHORS))
    expected = np.where(np.arange(32) < EDGE, 5, 0)
    assert refined.dtype == np.uint8 and refined.shape == (16, 32)
    assert (refined == expected).all()
    assert not (plain == expected).all()  # without the CRF the boundary stays where the CAM put it


def test_crf_params_are_checked():
    assert check_crf_params(dict(AUTHORS)) == AUTHORS
    with pytest.raises(UserError, match="labels.crf_params has no iterations"):
        check_crf_params({key: value for key, value in AUTHORS.items() if key != "iterations"})
    with pytest.raises(UserError, match="unknown keys sxy"):
        check_crf_params({**AUTHORS, "sxy": 3})
    with pytest.raises(UserError, match="labels.crf_params.iterations must be a positive integer"):
        check_crf_params({**AUTHORS, "iterations": 2.5})
    with pytest.raises(UserError, match="labels.crf_params.bilateral_srgb must be a positive number"):
        check_crf_params({**AUTHORS, "bilateral_srgb": 0})
    with pytest.raises(UserError, match="must be a mapping"):
        check_crf_params(None)
