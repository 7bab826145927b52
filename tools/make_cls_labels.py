"""Rebuild cls_labels.npy (image-level multi-hot labels) from PASCAL VOC Annotations XML.

    python tools/make_cls_labels.py --voc-root ROOT --out FILE [--names LIST.txt ...]

Every object in ROOT/Annotations/<name>.xml counts, difficult ones included. The output is a
pickled dict {numpy.int32(name_to_int(name)): float32[20] multi-hot in CLASS_NAMES order}, the
format of datasets/voc/cls_labels.npy. With --names only the names in the given split lists
(first token of each non-empty line); without, every XML in the folder. Errors (a missing XML,
an unknown class, an unreadable file) print one line `error: ...` and exit with code 2,
writing nothing.
"""
import argparse
import os
import sys

if not __package__:
    # Run as `python tools/make_cls_labels.py`: Python puts tools/ (not the repository root) on
    # sys.path, so the `datasets` and `tools` packages would not be importable without this.
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import xml.etree.ElementTree as ET  # noqa: E402

import numpy as np  # noqa: E402

from datasets.voc import CLASS_NAMES, N_CLASSES, name_to_int, read_name_list  # noqa: E402
from tools.errors import UserError  # noqa: E402
from tools.io import save_npy  # noqa: E402

_CLASS_INDEX = {name: index for index, name in enumerate(CLASS_NAMES)}


class AnnotationError(UserError):
    """A problem with the input files; the message names the file."""


def labels_from_xml(path):
    """float32[20] multi-hot of the object classes in one VOC annotation file (difficult included)."""
    try:
        root = ET.parse(path).getroot()
    except FileNotFoundError:
        raise AnnotationError(f"missing annotation file {path}") from None
    except (OSError, ET.ParseError) as error:
        raise AnnotationError(f"cannot read annotation file {path}: {error}") from None
    labels = np.zeros(N_CLASSES, dtype=np.float32)
    for obj in root.iter("object"):
        name = (obj.findtext("name") or "").strip()
        if name not in _CLASS_INDEX:
            raise AnnotationError(f"{path}: unknown class {name!r}")
        labels[_CLASS_INDEX[name]] = 1.0
    return labels


def read_name_lists(paths):
    """Names from split list files, in order, without repeats."""
    return list(dict.fromkeys(name for path in paths for name in read_name_list(path)))


def _key(name, path):
    try:
        key = name_to_int(name)
    except ValueError:
        key = None
    if key is None or not 0 <= key <= np.iinfo(np.int32).max:
        raise AnnotationError(f"{path}: image name {name!r} is not of the form YYYY_NNNNNN")
    return np.int32(key)


def build_cls_labels(voc_root, names=None):
    """{numpy.int32 key: float32[20]} for `names` (default: every XML in voc_root/Annotations)."""
    folder = os.path.join(os.fspath(voc_root), "Annotations")
    if names is None:
        if not os.path.isdir(folder):
            raise AnnotationError(f"missing annotation folder {folder}")
        names = sorted(entry[:-4] for entry in os.listdir(folder) if entry.endswith(".xml"))
    cls_labels = {}
    for name in names:
        path = os.path.join(folder, name + ".xml")
        labels = labels_from_xml(path)  # a missing file is reported before a malformed name
        cls_labels[_key(name, path)] = labels
    return cls_labels


def main(argv=None):
    parser = argparse.ArgumentParser(description="Rebuild cls_labels.npy from VOC Annotations XML.")
    parser.add_argument("--voc-root", required=True, help="folder holding Annotations/")
    parser.add_argument("--out", required=True, help="output .npy file")
    parser.add_argument("--names", nargs="+", metavar="LIST.txt",
                        help="split list files; only these names (default: every XML)")
    args = parser.parse_args(argv)
    try:
        names = read_name_lists(args.names) if args.names else None
        cls_labels = build_cls_labels(args.voc_root, names)
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    save_npy(args.out, cls_labels, allow_pickle=True)
    print(f"wrote {len(cls_labels)} image labels to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
