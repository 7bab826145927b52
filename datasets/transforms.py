"""Image transforms as pure functions on HWC numpy arrays; randomness comes from an explicit rng."""
import numpy as np
from PIL import Image

IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)
CAFFE_MEAN_BGR = np.array([104.008, 116.669, 122.675], dtype=np.float32)  # Caffe's ImageNet mean, BGR order


def resize(image, size, resample=Image.BICUBIC):
    """Resize a uint8 HWC image to size (h, w) with PIL (bicubic by default, as the paper)."""
    height, width = size
    if (height, width) == image.shape[:2]:
        return image
    return np.asarray(Image.fromarray(image).resize((width, height), resample))


def scaled_size(size, scale):
    """(H, W) * scale, rounded: the size of one scale of the multi-scale inference."""
    return int(np.round(size[0] * scale)), int(np.round(size[1] * scale))


def rescale(image, scale, resample=Image.BICUBIC):
    return resize(image, scaled_size(image.shape[:2], scale), resample)


def random_resize_long(image, min_long, max_long, rng):
    """Resize so the long side is a random integer in [min_long, max_long]."""
    target_long = int(rng.integers(min_long, max_long + 1))
    return rescale(image, target_long / max(image.shape[:2]))


def random_hflip(image, rng):
    return image[:, ::-1] if rng.random() < 0.5 else image


def normalize(image):
    """uint8 RGB -> float32 with ImageNet mean/std."""
    return (image.astype(np.float32) / 255.0 - IMAGENET_MEAN) / IMAGENET_STD


def normalize_caffe(image):
    """RGB (uint8 or float, 0-255) -> float32 BGR minus Caffe's ImageNet mean, no std (the inputs of
    deeplab-pytorch's Caffe ResNet)."""
    return image[..., ::-1].astype(np.float32) - CAFFE_MEAN_BGR


# The preprocessing of each backbone layout (net/deeplab.py INPUT_NORMALIZATION names them).
NORMALIZERS = {"imagenet": normalize, "caffe": normalize_caffe}


def resize_bilinear(image, size):
    """Resize an (H, W, C) image to size (h, w) by bilinear interpolation without antialiasing (the half-pixel
    grid of OpenCV's INTER_LINEAR, which deeplab-pytorch resizes with) -> float32."""
    import torch
    import torch.nn.functional as F

    if tuple(size) == image.shape[:2]:
        return image.astype(np.float32)
    chw = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32).transpose(2, 0, 1))[None]
    return F.interpolate(chw, size=tuple(size), mode="bilinear", align_corners=False)[0].permute(1, 2, 0).numpy()


def paste(image, crop_size, fill, image_top, image_left, canvas_top, canvas_left):
    """A crop_size square canvas of `fill` holding image[image_top:, image_left:] at (canvas_top, canvas_left)."""
    height = min(crop_size, image.shape[0] - image_top)
    width = min(crop_size, image.shape[1] - image_left)
    canvas = np.full((crop_size, crop_size) + image.shape[2:], fill, dtype=image.dtype)
    canvas[canvas_top:canvas_top + height, canvas_left:canvas_left + width] = \
        image[image_top:image_top + height, image_left:image_left + width]
    return canvas


def crop_offsets(size, crop_size, rng):
    """Random offsets of a crop_size square over an image of `size` (h, w) -> (image top, image left, canvas
    top, canvas left): a side longer than crop_size is cropped at random, a shorter one placed at random."""
    offsets = []
    for side in size:
        slack = int(rng.integers(0, abs(side - crop_size) + 1))
        offsets.append((slack, 0) if side > crop_size else (0, slack))  # (image offset, canvas offset)
    (image_top, canvas_top), (image_left, canvas_left) = offsets
    return image_top, image_left, canvas_top, canvas_left


def random_crop(image, crop_size, rng, fill=0):
    """A random crop_size square; a side shorter than crop_size is placed at random on a `fill` canvas."""
    return paste(image, crop_size, fill, *crop_offsets(image.shape[:2], crop_size, rng))


def random_crop_pair(image, label, crop_size, rng, image_fill=0, label_fill=255):
    """random_crop of an image and its label map with the same offsets (canvas image_fill and label_fill)."""
    offsets = crop_offsets(image.shape[:2], crop_size, rng)
    return paste(image, crop_size, image_fill, *offsets), paste(label, crop_size, label_fill, *offsets)


def top_left_crop(image, crop_size, fill=0):
    return paste(image, crop_size, fill, 0, 0, 0, 0)


def to_chw(image):
    return np.ascontiguousarray(image.transpose(2, 0, 1))
