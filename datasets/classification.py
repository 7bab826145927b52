"""The datasets of the CAM stages over any source: augmented crops with image-level labels (training,
validation) and the multi-scale, flipped pyramids of CAM inference."""
import numpy as np
import torch
from torch.utils.data import Dataset

from datasets import transforms as T
from datasets.files import read_image

SKIP_HINT = "or set dataset.skip_undecodable=true to leave such images out of training"


class ClassificationDataset(Dataset):
    """Images and their image-level labels, augmented as for training (or top-left cropped for validation).

    Randomness is drawn from a generator seeded by (seed, epoch, index): a sample's augmentation
    does not depend on the number of workers or processes, so runs are repeatable.
    """

    def __init__(self, source, names, labels, crop_size, resize_long=None, hflip=False, crop="random", seed=0):
        self.source, self.names, self.labels = source, list(names), labels
        self.crop_size, self.resize_long, self.hflip = crop_size, resize_long, hflip
        self.crop, self.seed, self.epoch = crop, seed, 0

    def set_epoch(self, epoch):
        self.epoch = epoch

    def __len__(self):
        return len(self.names)

    def __getitem__(self, index):
        name = self.names[index]
        rng = np.random.default_rng((self.seed, self.epoch, index))
        image = read_image(self.source.image_path(name), f"replace or remove it, {SKIP_HINT}")
        if self.resize_long:
            image = T.random_resize_long(image, *self.resize_long, rng)
        if self.hflip:
            image = T.random_hflip(image, rng)
        image = T.normalize(image)
        if self.crop == "random":
            image = T.random_crop(image, self.crop_size, rng)
        else:
            image = T.top_left_crop(image, self.crop_size)
        return {"name": name, "img": torch.from_numpy(T.to_chw(image)), "label": torch.from_numpy(self.labels[index])}


def flip_pyramid(image, scales):
    """(H, W, 3) uint8 image -> one (2, 3, h, w) float tensor per scale: the normalised image and its mirror."""
    pyramid = []
    for scale in scales:
        scaled = T.to_chw(T.normalize(T.rescale(image, scale)))
        pyramid.append(torch.from_numpy(np.stack([scaled, scaled[:, :, ::-1]])))
    return pyramid


class MultiScaleDataset(Dataset):
    """For CAM inference: each image at every scale, stacked with its horizontal flip, (2, 3, h, w) per scale."""

    def __init__(self, source, names, labels, scales):
        self.source, self.names, self.labels, self.scales = source, list(names), labels, list(scales)

    def __len__(self):
        return len(self.names)

    def __getitem__(self, index):
        name = self.names[index]
        image = read_image(self.source.image_path(name))
        pyramid = flip_pyramid(image, self.scales)
        return {"name": name, "img": pyramid, "size": image.shape[:2], "label": torch.from_numpy(self.labels[index])}
