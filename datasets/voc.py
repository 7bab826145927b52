"""PASCAL VOC 2012: class names, image names, label files and the datasets of the three stages."""
import os

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from datasets import transforms as T
from tools.errors import UserError
from tools.io import missing_files, save_image

CLASS_NAMES = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train",
    "tvmonitor",
)
N_CLASSES = len(CLASS_NAMES)  # foreground classes; label ids are 1..20, 0 is background
IGNORE_INDEX = 255


def voc_palette():
    """The 256-colour VOC palette as a flat list of 768 ints (class id -> RGB by bit interleaving)."""
    palette = []
    for index in range(256):
        red = green = blue = 0
        bits = index
        for shift in range(7, -1, -1):
            red |= ((bits >> 0) & 1) << shift
            green |= ((bits >> 1) & 1) << shift
            blue |= ((bits >> 2) & 1) << shift
            bits >>= 3
        palette += [red, green, blue]
    return palette


def name_to_int(name):
    """'2007_000032' -> 2007000032, the key format of cls_labels.npy."""
    return int(name.replace("_", ""))


def int_to_name(number):
    """2007000032 -> '2007_000032'."""
    digits = str(int(number))
    return digits[:4] + "_" + digits[4:]


def save_label_png(path, label):
    """Write a (H, W) uint8 array of class ids as a palette PNG (indices are the ids)."""
    image = Image.fromarray(np.asarray(label, dtype=np.uint8), mode="P")
    image.putpalette(voc_palette())
    save_image(path, image)


# ---------------------------------------------------------------------------------------------
# Reading files (every failure names the file and says what to do)

VOC_HELP = ("VOC 2012 comes from http://host.robots.ox.ac.uk/pascal/VOC/voc2012/ (VOCtrainval_11-May-2012.tar); "
            "SegmentationClassAug (SBD-augmented labels) is the usual SegmentationClassAug.zip of the WSSS "
            "literature, unzipped inside VOC2012/")


def check_voc_root(root, folders=("JPEGImages",)):
    if not os.path.isdir(root):
        raise UserError(f"dataset.root_dir {root} does not exist; point it at VOCdevkit/VOC2012. {VOC_HELP}")
    for folder in folders:
        if not os.path.isdir(os.path.join(root, folder)):
            raise UserError(f"dataset.root_dir {root} has no {folder}/ folder. {VOC_HELP}")


def read_name_list(path):
    """A split file: one image name (YYYY_NNNNNN) per line."""
    if not os.path.isfile(path):
        raise UserError(f"split file {path} does not exist; see datasets/voc/ for the VOC lists")
    with open(path) as handle:
        names = [line.strip().split()[0] for line in handle if line.strip()]
    if not names:
        raise UserError(f"split file {path} is empty; it should list one image name per line")
    return names


def read_split(root, split_path, split_key):
    """The names of a split file whose images all exist under <root>/JPEGImages (else one error that
    counts the missing ones and names the first few)."""
    names = read_name_list(split_path)
    missing = missing_files(names, os.path.join(root, "JPEGImages"), ".jpg")
    if missing:
        raise UserError(f"{split_key} {split_path} names {len(missing)} of {len(names)} images that are not in "
                        f"{os.path.join(root, 'JPEGImages')}, e.g. {', '.join(missing[:3])}; "
                        f"check dataset.root_dir and the split file")
    return names


def decodes(reader, path):
    """True when `path` exists and `reader` (read_label / read_image) decodes it."""
    if not os.path.exists(path):
        return False
    try:
        reader(path)
        return True
    except UserError:
        return False


def load_cls_labels(path):
    """cls_labels.npy: a pickled dict {int name: float32[20] multi-hot} (rebuild with tools/make_cls_labels.py)."""
    if not os.path.isfile(path):
        raise UserError(f"dataset.cls_labels {path} does not exist; build it with tools/make_cls_labels.py")
    try:
        labels = np.load(path, allow_pickle=True).item()
    except Exception as error:
        raise UserError(f"dataset.cls_labels {path} is not a cls_labels.npy file ({type(error).__name__})") from None
    if not isinstance(labels, dict):
        raise UserError(f"dataset.cls_labels {path} does not hold a dict of image labels")
    return {int(key): np.asarray(value, dtype=np.float32) for key, value in labels.items()}


def labels_for(names, cls_labels, labels_path="dataset.cls_labels"):
    """(N, 20) float32 labels of `names`; names absent from the labels file are an error."""
    absent = [name for name in names if name_to_int(name) not in cls_labels]
    if absent:
        raise UserError(f"{len(absent)} image(s) have no label in {labels_path}, e.g. {', '.join(absent[:3])}; "
                        f"rebuild it with tools/make_cls_labels.py")
    return np.stack([cls_labels[name_to_int(name)] for name in names])


def image_path(root, name):
    return os.path.join(root, "JPEGImages", name + ".jpg")


SKIP_HINT = "or set dataset.skip_undecodable=true to leave such images out of training"


def read_image(path, advice="replace or remove it"):
    """An RGB image as a uint8 (H, W, 3) array; `advice` ends the message when it cannot be decoded."""
    try:
        with Image.open(path) as image:
            return np.asarray(image.convert("RGB"))
    except FileNotFoundError:
        raise UserError(f"image {path} does not exist") from None
    except Exception as error:
        raise UserError(f"image {path} cannot be decoded ({type(error).__name__}); {advice}") from None


def image_size(path):
    """(height, width) of an image from its header, without decoding it; None if it cannot be read."""
    try:
        with Image.open(path) as image:
            return image.height, image.width
    except Exception:
        return None


def read_label(path):
    """A VOC label PNG as (H, W) uint8 class indices; RGB-coloured labels are refused (read indices, never colours)."""
    try:
        with Image.open(path) as image:
            if image.mode not in ("P", "L"):
                raise UserError(f"label {path} is a {image.mode} image; VOC labels are palette PNGs whose "
                                f"pixel indices are class ids (use SegmentationClassAug, not coloured renderings)")
            return np.asarray(image)
    except FileNotFoundError:
        raise UserError(f"ground-truth label {path} does not exist") from None
    except UserError:
        raise
    except Exception as error:
        raise UserError(f"label {path} cannot be decoded ({type(error).__name__})") from None


# ---------------------------------------------------------------------------------------------
# Datasets

class ClassificationDataset(Dataset):
    """Images and their image-level labels, augmented as for training (or top-left cropped for validation).

    Randomness is drawn from a generator seeded by (seed, epoch, index): a sample's augmentation
    does not depend on the number of workers or processes, so runs are repeatable.
    """

    def __init__(self, root, names, labels, crop_size, resize_long=None, hflip=False,
                 crop="random", seed=0):
        self.root, self.names, self.labels = root, list(names), labels
        self.crop_size, self.resize_long, self.hflip = crop_size, resize_long, hflip
        self.crop, self.seed, self.epoch = crop, seed, 0

    def set_epoch(self, epoch):
        self.epoch = epoch

    def __len__(self):
        return len(self.names)

    def __getitem__(self, index):
        name = self.names[index]
        rng = np.random.default_rng((self.seed, self.epoch, index))
        image = read_image(image_path(self.root, name), f"replace or remove it, {SKIP_HINT}")
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

    def __init__(self, root, names, labels, scales):
        self.root, self.names, self.labels, self.scales = root, list(names), labels, list(scales)

    def __len__(self):
        return len(self.names)

    def __getitem__(self, index):
        name = self.names[index]
        image = read_image(image_path(self.root, name))
        pyramid = flip_pyramid(image, self.scales)
        return {"name": name, "img": pyramid, "size": image.shape[:2], "label": torch.from_numpy(self.labels[index])}
