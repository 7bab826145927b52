"""PASCAL VOC 2012 (with the SBD-augmented SegmentationClassAug labels): its classes, files and image labels."""
import os
import xml.etree.ElementTree as ET

import numpy as np

from datasets.source import ImageSource
from engine.errors import UserError

CLASS_NAMES = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train",
    "tvmonitor",
)
N_CLASSES = len(CLASS_NAMES)  # foreground classes; label ids are 1..20, 0 is background
# Score-table columns: background, then the classes in CLASS_NAMES order, as the papers print them.
TABLE_COLUMNS = ("bkg", "aero", "bike", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
                 "table", "dog", "horse", "motor", "person", "plant", "sheep", "sofa", "train", "tv")

VOC_HELP = ("VOC 2012 comes from http://host.robots.ox.ac.uk/pascal/VOC/voc2012/ (VOCtrainval_11-May-2012.tar); "
            "SegmentationClassAug (SBD-augmented labels) is the usual SegmentationClassAug.zip of the WSSS "
            "literature, unzipped inside VOC2012/")
LISTS_HINT = "see datasets/voc/ for the VOC lists"


def name_to_int(name):
    """'2007_000032' -> 2007000032, the key format of cls_labels.npy."""
    return int(name.replace("_", ""))


def int_to_name(number):
    """2007000032 -> '2007_000032'."""
    digits = str(int(number))
    return digits[:4] + "_" + digits[4:]


class VOC(ImageSource):
    """The VOC 2012 source: where an image is (JPEGImages/), which classes it shows (image-level labels), how
    its classes are named, printed and coloured."""

    name = "voc"
    class_names = CLASS_NAMES
    table_columns = TABLE_COLUMNS
    help = VOC_HELP
    lists_hint = LISTS_HINT
    labels_hint = "build it with python -m tools.make_cls_labels (datasets/voc/cls_labels.npy is VOC's)"
    root_folders = ("JPEGImages",)
    masks_hint = "eval.gt_dir should be SegmentationClassAug (class ids 0..20, 255 on boundaries)"
    root_name = "VOCdevkit/VOC2012"

    def image_path(self, name):
        return os.path.join(self.root_dir, "JPEGImages", name + ".jpg")

    def label_key(self, name):
        return name_to_int(name)


# ---------------------------------------------------------------------------------------------
# Image-level labels from the Annotations XML (python -m tools.make_cls_labels)

_CLASS_INDEX = {name: index for index, name in enumerate(CLASS_NAMES)}


def labels_from_xml(path):
    """float32[20] multi-hot of the object classes in one VOC annotation file (difficult included)."""
    try:
        root = ET.parse(path).getroot()
    except FileNotFoundError:
        raise UserError(f"missing annotation file {path}") from None
    except (OSError, ET.ParseError) as error:
        raise UserError(f"cannot read annotation file {path}: {error}") from None
    labels = np.zeros(N_CLASSES, dtype=np.float32)
    for obj in root.iter("object"):
        name = (obj.findtext("name") or "").strip()
        if name not in _CLASS_INDEX:
            raise UserError(f"{path}: unknown class {name!r}")
        labels[_CLASS_INDEX[name]] = 1.0
    return labels


def _key(name, path):
    try:
        key = name_to_int(name)
    except ValueError:
        key = None
    if key is None or not 0 <= key <= np.iinfo(np.int32).max:
        raise UserError(f"{path}: image name {name!r} is not of the form YYYY_NNNNNN")
    return np.int32(key)


def build_cls_labels(voc_root, names=None):
    """{numpy.int32 key: float32[20]} for `names` (default: every XML in voc_root/Annotations), the format of
    datasets/voc/cls_labels.npy."""
    folder = os.path.join(os.fspath(voc_root), "Annotations")
    if names is None:
        if not os.path.isdir(folder):
            raise UserError(f"missing annotation folder {folder}")
        names = sorted(entry[:-4] for entry in os.listdir(folder) if entry.endswith(".xml"))
    cls_labels = {}
    for name in names:
        path = os.path.join(folder, name + ".xml")
        labels = labels_from_xml(path)  # a missing file is reported before a malformed name
        cls_labels[_key(name, path)] = labels
    return cls_labels
