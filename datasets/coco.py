"""MS COCO 2014 as a semantic-segmentation source: 80 classes + background, the category-id mapping, where
an image is, and the image-level labels file (../shared/SPEC_COCO.md).

COCO's category_id runs 1..90 with ten ids unused; label ids are 1..80 in increasing category-id order
(0 background, 255 not scored), the mapping of the WSSS literature. Writing raw category ids would make
a 91-class label space: every mask and label file of this project uses the 1..80 ids.

Layout of a COCO root (python -m tools.prepare_coco --root ROOT writes the last four):

  train2014/COCO_train2014_<12-digit id>.jpg, val2014/COCO_val2014_<12-digit id>.jpg
  annotations/instances_train2014.json, annotations/instances_val2014.json
  SegmentationClass/<image stem>.png   pixel masks, palette PNGs, ids 0..80 (255 where the recipe ignores)
  cls_labels.npy                       {COCO image id: float32[80] multi-hot}
  train_all.txt, val_all.txt           every image (82,783 / 40,504): the IRNet-family protocol
  train_annotated.txt, val_annotated.txt   images with an annotation (82,081 / 40,137)
  val_5000.txt                         a fixed subset of val_annotated, for validation during training
"""
import os
import re

from datasets.source import ImageSource
from engine.errors import UserError

CATEGORIES = (  # (COCO category_id, name); label id = position + 1
    (1, "person"), (2, "bicycle"), (3, "car"), (4, "motorcycle"), (5, "airplane"), (6, "bus"), (7, "train"),
    (8, "truck"), (9, "boat"), (10, "traffic light"), (11, "fire hydrant"), (13, "stop sign"),
    (14, "parking meter"), (15, "bench"), (16, "bird"), (17, "cat"), (18, "dog"), (19, "horse"), (20, "sheep"),
    (21, "cow"), (22, "elephant"), (23, "bear"), (24, "zebra"), (25, "giraffe"), (27, "backpack"),
    (28, "umbrella"), (31, "handbag"), (32, "tie"), (33, "suitcase"), (34, "frisbee"), (35, "skis"),
    (36, "snowboard"), (37, "sports ball"), (38, "kite"), (39, "baseball bat"), (40, "baseball glove"),
    (41, "skateboard"), (42, "surfboard"), (43, "tennis racket"), (44, "bottle"), (46, "wine glass"), (47, "cup"),
    (48, "fork"), (49, "knife"), (50, "spoon"), (51, "bowl"), (52, "banana"), (53, "apple"), (54, "sandwich"),
    (55, "orange"), (56, "broccoli"), (57, "carrot"), (58, "hot dog"), (59, "pizza"), (60, "donut"), (61, "cake"),
    (62, "chair"), (63, "couch"), (64, "potted plant"), (65, "bed"), (67, "dining table"), (70, "toilet"),
    (72, "tv"), (73, "laptop"), (74, "mouse"), (75, "remote"), (76, "keyboard"), (77, "cell phone"),
    (78, "microwave"), (79, "oven"), (80, "toaster"), (81, "sink"), (82, "refrigerator"), (84, "book"),
    (85, "clock"), (86, "vase"), (87, "scissors"), (88, "teddy bear"), (89, "hair drier"), (90, "toothbrush"),
)
CLASS_NAMES = tuple(name for _, name in CATEGORIES)
N_CLASSES = len(CLASS_NAMES)  # 80
CATEGORY_TO_LABEL = {category_id: index + 1 for index, (category_id, _) in enumerate(CATEGORIES)}
# Score-table columns: background, then the classes, at most 6 characters so that 81 columns wrap tidily.
TABLE_COLUMNS = (
    "bkg", "person", "bike", "car", "motor", "plane", "bus", "train", "truck", "boat", "light", "hydrnt", "stop",
    "meter", "bench", "bird", "cat", "dog", "horse", "sheep", "cow", "eleph", "bear", "zebra", "giraf", "backpk",
    "umbrla", "handbg", "tie", "suitcs", "frisbe", "skis", "snowbd", "ball", "kite", "bat", "glove", "skateb",
    "surfbd", "racket", "bottle", "wine", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple", "sandw",
    "orange", "brocli", "carrot", "hotdog", "pizza", "donut", "cake", "chair", "couch", "plant", "bed", "table",
    "toilet", "tv", "laptop", "mouse", "remote", "keybd", "phone", "microw", "oven", "toastr", "sink", "fridge",
    "book", "clock", "vase", "scissr", "teddy", "drier", "tbrush",
)

SPLITS = ("train", "val")
IMAGE_FOLDERS = {split: f"{split}2014" for split in SPLITS}
NAME_PATTERN = re.compile(r"^COCO_(train|val)2014_(\d{12})$")
COCO_HELP = ("COCO 2014 comes from https://cocodataset.org/#download (train2014.zip, val2014.zip and "
             "annotations_trainval2014.zip, unzipped into one folder); then python -m tools.prepare_coco --root "
             "ROOT writes its masks, labels file and split lists (pip install pycocotools first)")
PREPARE_HINT = "make it with python -m tools.prepare_coco --root <dataset.root_dir> (docs/coco.md)"


def image_name(split, image_id):
    """('train', 9) -> 'COCO_train2014_000000000009', the stem of COCO 2014's file names."""
    return f"COCO_{split}2014_{int(image_id):012d}"


def parse_name(name):
    """'COCO_val2014_000000000042' -> ('val', 42); anything else is a UserError."""
    match = NAME_PATTERN.match(name)
    if match is None:
        raise UserError(f"{name!r} is not a COCO 2014 image name (COCO_train2014_<12 digits> or "
                        f"COCO_val2014_<12 digits>); the split lists of python -m tools.prepare_coco hold such names")
    return match.group(1), int(match.group(2))


class COCO(ImageSource):
    """The COCO 2014 source: train2014/ and val2014/ images (names tell which), 80 classes, labels keyed by
    COCO image id (unique over both 2014 splits)."""

    name = "coco"
    class_names = CLASS_NAMES
    table_columns = TABLE_COLUMNS
    help = COCO_HELP
    lists_hint = "the COCO split lists are written by python -m tools.prepare_coco --root <dataset.root_dir>"
    labels_hint = PREPARE_HINT
    root_name = "the COCO 2014 root (train2014/, val2014/, annotations/)"
    missing_masks_hint = ("masks of the default recipe leave out the images without annotations: score a "
                          "*_annotated.txt list, or remake the masks with python -m tools.prepare_coco --unannotated "
                          "write --overwrite (docs/coco.md)")
    root_folders = ()  # the images' folders are checked by the splits that use them
    masks_hint = ("COCO masks hold label ids 0..80, not COCO's category ids 1..90 (a 91-class space): make them "
                  "with python -m tools.prepare_coco")

    def image_path(self, name):
        split, _ = parse_name(name)
        return os.path.join(self.root_dir, IMAGE_FOLDERS[split], name + ".jpg")

    def label_key(self, name):
        return parse_name(name)[1]
