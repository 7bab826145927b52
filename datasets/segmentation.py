"""Images with label maps (IR labels, pseudo masks) for training on pixels: both augmented alike, so a label
stays on its pixel. The relation network's training set (SPEC_REFINE.md, section 5, augment_pair) and the
segmentation network's (SPEC_SEG.md, deeplab_augment) are such datasets, each with its augmentation."""
import functools
import os

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from datasets import transforms as T
from datasets.files import IGNORE_INDEX, read_image, read_label
from engine.errors import UserError

LABEL_ADVICE = "make the labels again from this dataset's images"


def augment_pair(image, label, crop_size, scale_range, hflip, rng):
    """Training augmentation of a (H, W, 3) uint8 image and its (H, W) uint8 label map (IRNet's order):
    random rescale by s ~ U(scale_range) to round(H s) x round(W s) (image bicubic, label nearest), ImageNet
    normalisation, horizontal flip of both with p 0.5 (if hflip), random_crop_pair (canvas 0 and 255).
    -> (crop_size, crop_size, 3) float32 image, (crop_size, crop_size) uint8 label."""
    size = T.scaled_size(image.shape[:2], rng.uniform(*scale_range))
    image = T.resize(image, size)
    label = T.resize(label, size, Image.NEAREST)  # nearest: a label stays a class id, never a blend of two
    image = T.normalize(image)
    if hflip and rng.random() < 0.5:
        image, label = image[:, ::-1], label[:, ::-1]
    return T.random_crop_pair(image, label, crop_size, rng, label_fill=IGNORE_INDEX)


def deeplab_augment(image, label, crop_size, scales, hflip, normalization, rng):
    """deeplab-pytorch's training augmentation of a (H, W, 3) uint8 RGB image and its (H, W) label map: a scale
    s chosen at random among `scales`, new size (int(H s), int(W s)) (image bilinear, label nearest); the
    layout's normalisation (datasets.transforms NORMALIZERS[normalization]); padding at the bottom and right to
    crop_size (image 0, i.e. the mean colour; label 255); a random crop_size crop; a horizontal flip with p 0.5
    (if hflip). -> (crop_size, crop_size, 3) float32 image, (crop_size, crop_size) uint8 label."""
    scale = scales[int(rng.integers(len(scales)))]
    size = int(image.shape[0] * scale), int(image.shape[1] * scale)
    image = T.NORMALIZERS[normalization](T.resize_bilinear(image, size))
    label = T.resize(label, size, Image.NEAREST)
    height, width = max(size[0], crop_size), max(size[1], crop_size)
    top, left = int(rng.integers(0, height - crop_size + 1)), int(rng.integers(0, width - crop_size + 1))
    image = T.paste(image, crop_size, 0, top, left, 0, 0)  # beyond the image: the padding
    label = T.paste(label, crop_size, IGNORE_INDEX, top, left, 0, 0)
    if hflip and rng.random() < 0.5:
        image, label = image[:, ::-1], label[:, ::-1]
    return image, label


def irnet_augmentation(crop_size=512, scale_range=(0.5, 1.5), hflip=True):
    """augment_pair with its settings: a picklable augment(image, label, rng) for SegmentationDataset."""
    return functools.partial(augment_pair, crop_size=crop_size, scale_range=tuple(scale_range), hflip=hflip)


def deeplab_augmentation(crop_size=321, scales=(0.5, 0.75, 1.0, 1.25, 1.5), hflip=True, normalization="caffe"):
    """deeplab_augment with its settings: a picklable augment(image, label, rng) for SegmentationDataset."""
    return functools.partial(deeplab_augment, crop_size=crop_size, scales=tuple(scales), hflip=hflip,
                             normalization=normalization)


class SegmentationDataset(Dataset):
    """The images `names` of `source` with their label PNGs `<label_dir>/<name>.png` (class ids 0..n_classes,
    255 unsure / ignored), augmented for training by `augment(image, label, rng=...)` (irnet_augmentation,
    deeplab_augmentation).

    Items: {"name", "img": (3, S, S) float32 tensor, "label": (S, S) uint8 tensor} with S the crop size.
    Randomness is drawn from a generator seeded by (seed, epoch, index), as in ClassificationDataset: a
    sample's augmentation does not depend on the number of workers or processes. A label that is missing,
    of another size than its image or holding other values is a UserError naming it and ending with `advice`.
    """

    def __init__(self, source, names, label_dir, n_classes, augment, seed=0, advice=LABEL_ADVICE):
        self.source, self.names, self.label_dir, self.n_classes = source, list(names), label_dir, n_classes
        self.augment, self.seed, self.epoch, self.advice = augment, seed, 0, advice

    def set_epoch(self, epoch):
        self.epoch = epoch

    def __len__(self):
        return len(self.names)

    def label_path(self, name):
        return os.path.join(self.label_dir, name + ".png")

    def read_pair(self, name):
        """The image of `name` and its label map, checked to agree in size and to hold only label values."""
        image_path, label_path = self.source.image_path(name), self.label_path(name)
        image = read_image(image_path)
        if not os.path.isfile(label_path):
            raise UserError(f"label {label_path} does not exist; {self.advice}")
        label = read_label(label_path)
        if label.shape != image.shape[:2]:
            raise UserError(f"label {label_path} is {label.shape[1]}x{label.shape[0]} but its image {image_path} "
                            f"is {image.shape[1]}x{image.shape[0]}; {self.advice}")
        stray = (label > self.n_classes) & (label != IGNORE_INDEX)
        if stray.any():
            values = ", ".join(str(value) for value in np.unique(label[stray])[:5])
            raise UserError(f"label {label_path} holds {values}, not a class id (0..{self.n_classes}) nor "
                            f"{IGNORE_INDEX}; {self.advice}")
        return image, label

    def __getitem__(self, index):
        name = self.names[index]
        rng = np.random.default_rng((self.seed, self.epoch, index))
        image, label = self.augment(*self.read_pair(name), rng=rng)
        return {"name": name, "img": torch.from_numpy(T.to_chw(image)),
                "label": torch.from_numpy(np.ascontiguousarray(label))}
