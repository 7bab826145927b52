"""Rebuild cls_labels.npy (image-level multi-hot labels) from PASCAL VOC Annotations XML.

    python -m tools.make_cls_labels --voc-root ROOT --out FILE [--names LIST.txt ...]

Every object in ROOT/Annotations/<name>.xml counts, difficult ones included. The output is a
pickled dict {numpy.int32(name_to_int(name)): float32[20] multi-hot in CLASS_NAMES order}, the
format of datasets/voc/cls_labels.npy. With --names only the names in the given split lists
(first token of each non-empty line); without, every XML in the folder. Errors (a missing XML,
an unknown class, an unreadable file) print one line `error: ...` and exit with code 2,
writing nothing.
"""
import argparse
import sys

if __name__ == "__main__" and not __package__:
    print("error: run this tool from the repository root as a module: "
          "python -m tools.make_cls_labels ...", file=sys.stderr)
    sys.exit(2)

from datasets.files import read_name_list
from datasets.voc import build_cls_labels
from engine.errors import run_main
from engine.files import save_npy


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--voc-root", required=True, help="folder holding Annotations/")
    parser.add_argument("--out", required=True, help="output .npy file")
    parser.add_argument("--names", nargs="+", metavar="LIST.txt",
                        help="split list files; only these names (default: every XML)")
    args = parser.parse_args(argv)
    names = list(dict.fromkeys(name for path in args.names for name in read_name_list(path))) if args.names else None
    cls_labels = build_cls_labels(args.voc_root, names)
    save_npy(args.out, cls_labels, allow_pickle=True)
    print(f"wrote {len(cls_labels)} image labels to {args.out}")


if __name__ == "__main__":
    run_main(main)
