"""PASCAL VOC 2012 (with the SBD-augmented SegmentationClassAug labels): its classes, files and image labels."""
import hashlib
import os
import xml.etree.ElementTree as ET

import numpy as np

from datasets.files import bit_palette, read_name_list
from engine.errors import UserError
from engine.files import missing_files

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


class VOC:
    """The VOC 2012 source: where an image is, which classes it shows (image-level labels), how its
    classes are named, printed and coloured. Cheap to build and to pickle (loader workers get a copy)."""

    name = "voc"
    class_names = CLASS_NAMES
    table_columns = TABLE_COLUMNS
    help = VOC_HELP

    def __init__(self, root_dir, cls_labels=None):
        self.root_dir, self.cls_labels_path = root_dir, cls_labels
        self.palette = bit_palette()

    @property
    def n_classes(self):
        """Foreground classes (label ids 1..n_classes; 0 is background)."""
        return len(self.class_names)

    def image_path(self, name):
        return os.path.join(self.root_dir, "JPEGImages", name + ".jpg")

    def check_root(self, folders=("JPEGImages",)):
        """dataset.root_dir exists and holds `folders` (else one error saying where VOC comes from)."""
        root = self.root_dir
        if not os.path.isdir(root):
            raise UserError(f"dataset.root_dir {root} does not exist; point it at VOCdevkit/VOC2012. {VOC_HELP}")
        for folder in folders:
            if not os.path.isdir(os.path.join(root, folder)):
                raise UserError(f"dataset.root_dir {root} has no {folder}/ folder. {VOC_HELP}")

    def read_names(self, split_path):
        """The names of a split file (datasets/voc/ holds VOC's), without looking for their images."""
        return read_name_list(split_path, LISTS_HINT)

    def read_split(self, split_path, split_key):
        """The names of a split file whose images all exist (else one error that counts the missing ones and
        names the first few)."""
        names = self.read_names(split_path)
        folder = os.path.join(self.root_dir, "JPEGImages")
        missing = missing_files(names, folder, ".jpg")
        if missing:
            raise UserError(f"{split_key} {split_path} names {len(missing)} of {len(names)} images that are not in "
                            f"{folder}, e.g. {', '.join(missing[:3])}; check dataset.root_dir and the split file")
        return names

    def image_signatures(self, names):
        """{name: size of its image file in bytes}: what tells a regenerated or replaced image from the one an
        output was made of, without reading the files (a copy or a move of the dataset keeps them)."""
        return {name: os.path.getsize(self.image_path(name)) for name in names}

    def fingerprint(self, names):
        """A short digest of image_signatures(names), for a record of the whole set (a training checkpoint)."""
        digest = hashlib.sha1()
        for name, size in self.image_signatures(names).items():
            digest.update(f"{name} {size}\n".encode())
        return digest.hexdigest()[:16]

    def load_cls_labels(self):
        """cls_labels.npy: a pickled dict {int name: float32[20] multi-hot}, made by python -m tools.make_cls_labels."""
        path = self.cls_labels_path
        if path is None:
            raise UserError("config key dataset.cls_labels is missing; set it to the image-level labels file "
                            "(datasets/voc/cls_labels.npy for VOC)")
        if not os.path.isfile(path):
            raise UserError(f"dataset.cls_labels {path} does not exist; build it with python -m tools.make_cls_labels")
        try:
            labels = np.load(path, allow_pickle=True).item()
        except Exception as error:
            raise UserError(f"dataset.cls_labels {path} is not a cls_labels.npy file ({type(error).__name__})") \
                from None
        if not isinstance(labels, dict):
            raise UserError(f"dataset.cls_labels {path} does not hold a dict of image labels")
        return {int(key): np.asarray(value, dtype=np.float32) for key, value in labels.items()}

    def labels_for(self, names, cls_labels=None):
        """(N, 20) float32 image-level labels of `names` (from cls_labels, or the file); absent names are an error."""
        cls_labels = self.load_cls_labels() if cls_labels is None else cls_labels
        absent = [name for name in names if name_to_int(name) not in cls_labels]
        if absent:
            raise UserError(f"{len(absent)} image(s) have no label in {self.cls_labels_path}, e.g. "
                            f"{', '.join(absent[:3])}; rebuild it with python -m tools.make_cls_labels")
        return np.stack([cls_labels[name_to_int(name)] for name in names])


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
