"""What every image source shares (datasets/voc.py VOC, datasets/coco.py COCO): split lists, image checks,
the image-level labels file and the signatures outputs record. A source subclass names its classes and
says where an image is (image_path), how its labels file keys an image (label_key) and where its data
comes from (help, lists_hint, labels_hint)."""
import hashlib
import os

import numpy as np

from datasets.files import bit_palette, read_name_list
from engine.errors import UserError
from engine.files import missing_files


class ImageSource:
    """Cheap to build and to pickle (loader workers get a copy)."""

    name = None
    class_names = ()
    table_columns = ()          # background first, for score tables
    help = ""                   # where the dataset comes from: ends the errors about missing data
    lists_hint = "it should list one image name per line"   # where the split lists are
    labels_hint = ""            # how the labels file is made
    masks_hint = "check eval.gt_dir"   # how the ground-truth masks are made (ends errors about them)
    missing_masks_hint = "check eval.gt_dir and the split"   # ends the error about images without a mask
    root_folders = ()           # what check_root looks for under dataset.root_dir
    root_name = "the dataset root"   # what dataset.root_dir should point at

    def __init__(self, root_dir, cls_labels=None):
        self.root_dir, self.cls_labels_path = root_dir, cls_labels
        self.palette = bit_palette()

    @property
    def n_classes(self):
        """Foreground classes (label ids 1..n_classes; 0 is background)."""
        return len(self.class_names)

    def image_path(self, name):
        raise NotImplementedError

    def label_key(self, name):
        """The key of `name` in the labels file (an int)."""
        raise NotImplementedError

    def check_root(self, folders=None):
        """dataset.root_dir exists and holds `folders` (default: root_folders), else one error saying where the
        dataset comes from."""
        root = self.root_dir
        if not os.path.isdir(root):
            raise UserError(f"dataset.root_dir {root} does not exist; point it at {self.root_name}. {self.help}")
        for folder in self.root_folders if folders is None else folders:
            if not os.path.isdir(os.path.join(root, folder)):
                raise UserError(f"dataset.root_dir {root} has no {folder}/ folder. {self.help}")

    def read_names(self, split_path):
        """The names of a split file, without looking for their images."""
        return read_name_list(split_path, self.lists_hint)

    def read_split(self, split_path, split_key):
        """The names of a split file whose images all exist (else one error that counts the missing ones and
        names the first few)."""
        names = self.read_names(split_path)
        by_folder = {}
        for name in names:
            by_folder.setdefault(os.path.dirname(self.image_path(name)), []).append(name)
        for folder, folder_names in by_folder.items():
            missing = missing_files(folder_names, folder, ".jpg")
            if missing:
                raise UserError(f"{split_key} {split_path} names {len(missing)} of {len(names)} images that are not "
                                f"in {folder}, e.g. {', '.join(missing[:3])}; check dataset.root_dir and the split "
                                f"file")
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
        """The labels file (dataset.cls_labels): a pickled dict {int key: float32[n_classes] multi-hot}, its
        vectors checked to have this dataset's class count."""
        path = self.cls_labels_path
        if path is None:
            raise UserError(f"config key dataset.cls_labels is missing; set it to the image-level labels file "
                            f"({self.labels_hint})")
        if not os.path.isfile(path):
            raise UserError(f"dataset.cls_labels {path} does not exist; {self.labels_hint}")
        try:
            labels = np.load(path, allow_pickle=True).item()
        except Exception as error:
            raise UserError(f"dataset.cls_labels {path} is not a labels file ({type(error).__name__}); "
                            f"{self.labels_hint}") from None
        if not isinstance(labels, dict):
            raise UserError(f"dataset.cls_labels {path} does not hold a dict of image labels; {self.labels_hint}")
        labels = {int(key): np.asarray(value, dtype=np.float32).reshape(-1) for key, value in labels.items()}
        sizes = {value.size for value in labels.values()}
        if sizes - {self.n_classes}:
            raise UserError(f"dataset.cls_labels {path} holds labels of {' and '.join(map(str, sorted(sizes)))} "
                            f"classes but dataset.name {self.name} has {self.n_classes}: it belongs to another "
                            f"dataset; {self.labels_hint}")
        return labels

    def labels_for(self, names, cls_labels=None):
        """(N, n_classes) float32 image-level labels of `names` (from cls_labels, or the file); absent names are
        an error."""
        cls_labels = self.load_cls_labels() if cls_labels is None else cls_labels
        absent = [name for name in names if self.label_key(name) not in cls_labels]
        if absent:
            raise UserError(f"{len(absent)} image(s) have no label in {self.cls_labels_path}, e.g. "
                            f"{', '.join(absent[:3])}; {self.labels_hint}")
        if not names:
            return np.zeros((0, self.n_classes), dtype=np.float32)
        return np.stack([cls_labels[self.label_key(name)] for name in names])
