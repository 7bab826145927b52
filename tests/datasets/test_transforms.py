import numpy as np

from datasets import transforms as T


def test_random_resize_long_hits_the_range_and_keeps_aspect():
    rng = np.random.default_rng(0)
    image = np.zeros((375, 500, 3), np.uint8)
    for _ in range(10):
        out = T.random_resize_long(image, 320, 640, rng)
        assert 320 <= out.shape[1] <= 640 and out.shape[0] == round(375 * out.shape[1] / 500)


def test_random_crop_pads_small_images_with_zero_and_keeps_all_pixels():
    rng = np.random.default_rng(1)
    image = np.ones((5, 7, 3), np.float32)
    crop = T.random_crop(image, 8, rng)
    assert crop.shape == (8, 8, 3) and crop.sum() == image.sum()


def test_random_crop_of_a_large_image_is_a_window_of_it():
    rng = np.random.default_rng(2)
    image = np.arange(20 * 30).reshape(20, 30, 1)
    crop = T.random_crop(image, 8, rng)
    top, left = divmod(int(crop[0, 0, 0]), 30)
    assert np.array_equal(crop, image[top:top + 8, left:left + 8])


def test_top_left_crop_and_rescale():
    image = np.arange(6 * 4 * 3, dtype=np.uint8).reshape(6, 4, 3)
    crop = T.top_left_crop(image, 5)
    assert np.array_equal(crop[:5, :4], image[:5]) and crop[:, 4:].sum() == 0
    assert T.rescale(image, 1.0) is image
    assert T.rescale(np.zeros((375, 500, 3), np.uint8), 0.5).shape == (188, 250, 3)  # round(187.5) = 188
    assert T.scaled_size((375, 500), 1.5) == (562, 750)


def test_normalize_uses_imagenet_statistics():
    pixel = np.array([[[124, 116, 104]]], np.uint8)
    assert np.abs(T.normalize(pixel)).max() < 0.01
