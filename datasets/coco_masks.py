"""COCO 2014's pixel masks, image-level labels and split lists, made once from the instance annotations
(python -m tools.prepare_coco). The field's two mask recipes (../shared/SPEC_COCO.md) are options:

  crowd        object: a crowd region is drawn as its class, like any instance (default);
               background: crowd annotations are dropped, their pixels stay background unless another
               instance covers them (ReCAM / LPCAM); ignore: their pixels that no other instance covers are 255.
  order        area: larger instances first, smaller ones drawn over them (default);
               annotation: in the file's order, a later annotation over an earlier one (ReCAM / LPCAM).
  unannotated  skip: images without annotations get no mask (default; the 82,081 / 40,137 images);
               write: an all-background mask for them too (every image, 82,783 / 40,504).

The default is the mask set most single-stage papers since 2023 score on; crowd=background
order=annotation unannotated=write is ReCAM's. compose_mask is the recipe on decoded masks (pure numpy);
instance_mask decodes a polygon or RLE annotation with pycocotools, imported only here (COCO users
install it: pip install pycocotools).
"""
import hashlib
import json
import os
import warnings

import numpy as np

from datasets.coco import CATEGORIES, CATEGORY_TO_LABEL, IMAGE_FOLDERS, N_CLASSES, SPLITS, image_name
from datasets.files import IGNORE_INDEX, save_label_png
from engine.errors import UserError
from engine.files import missing_files, save_json, save_npy, save_text
from engine.parallel import imap_unordered

CROWD = ("object", "background", "ignore")
ORDER = ("area", "annotation")
UNANNOTATED = ("skip", "write")
DEFAULT_RECIPE = {"crowd": "object", "order": "area", "unannotated": "skip"}
RECIPE_FILE = "coco_masks.json"   # in the mask folder: the recipe its masks were made with
VAL_SUBSET = 5000                 # val_5000.txt: evenly spaced images of val_annotated
INSTALL_HINT = ("pycocotools is not installed; COCO users install it with pip install pycocotools "
                "(2.0.11 has wheels for Python 3.11 and needs only numpy)")


def check_recipe(recipe):
    """A full recipe dict (missing keys take the defaults), its values checked."""
    recipe = {**DEFAULT_RECIPE, **(recipe or {})}
    for key, choices in (("crowd", CROWD), ("order", ORDER), ("unannotated", UNANNOTATED)):
        if recipe[key] not in choices:
            raise UserError(f"mask recipe {key}: {recipe[key]!r} is not one of {', '.join(choices)}")
    unknown = set(recipe) - set(DEFAULT_RECIPE)
    if unknown:
        raise UserError(f"mask recipe: unknown option(s) {', '.join(sorted(unknown))}")
    return recipe


# ---------------------------------------------------------------------------------------------
# One image (pure)

def compose_mask(instances, height, width, crowd="object", order="area"):
    """(H, W) uint8 label ids from decoded instances [(label id 1..80, iscrowd, area, (H, W) bool mask)] by
    the recipe (module docstring). Ties of area keep the file's order."""
    mask = np.zeros((height, width), dtype=np.uint8)
    drawn = [instance for instance in instances if not (instance[1] and crowd != "object")]
    if order == "area":  # a stable sort: larger first, so that smaller instances end on top
        drawn = sorted(drawn, key=lambda instance: -instance[2])
    for label, _, _, pixels in drawn:
        mask[pixels] = label
    if crowd == "ignore":
        covered = np.zeros((height, width), dtype=bool)
        for *_, pixels in drawn:
            covered |= pixels
        for _, iscrowd, _, pixels in instances:
            if iscrowd:
                mask[pixels & ~covered] = IGNORE_INDEX
    return mask


def _mask_api():
    try:
        from pycocotools import mask as mask_api
    except ImportError:
        raise UserError(INSTALL_HINT) from None
    return mask_api


def instance_mask(segmentation, height, width):
    """(H, W) bool mask of one annotation's `segmentation`: polygons, uncompressed RLE (crowd regions) or
    compressed RLE, decoded as pycocotools' COCO.annToMask does."""
    mask_api = _mask_api()
    with warnings.catch_warnings():  # pycocotools 2.0.x under numpy 2 warns about __array__'s copy keyword
        warnings.simplefilter("ignore", DeprecationWarning)
        return _decode(mask_api, segmentation, height, width)


def _decode(mask_api, segmentation, height, width):
    if isinstance(segmentation, list):  # polygons: one object may have several parts
        rle = mask_api.merge(mask_api.frPyObjects(segmentation, height, width))
    elif isinstance(segmentation.get("counts"), list):  # uncompressed RLE
        rle = mask_api.frPyObjects(segmentation, height, width)
    else:
        rle = segmentation
    return mask_api.decode(rle).astype(bool)


def image_labels(annotations):
    """float32[80] multi-hot of the categories of an image's annotations (crowd regions included)."""
    labels = np.zeros(N_CLASSES, dtype=np.float32)
    for annotation in annotations:
        labels[CATEGORY_TO_LABEL[annotation["category_id"]] - 1] = 1.0
    return labels


def write_mask(task):
    """Worker: (path, height, width, annotations, recipe) -> decode, compose, save the palette PNG atomically;
    returns the path."""
    path, height, width, annotations, recipe = task
    instances = []
    for annotation in annotations:
        pixels = instance_mask(annotation["segmentation"], height, width)
        area = annotation.get("area")
        instances.append((CATEGORY_TO_LABEL[annotation["category_id"]], bool(annotation.get("iscrowd", 0)),
                          float(pixels.sum() if area is None else area), pixels))
    save_label_png(path, compose_mask(instances, height, width, recipe["crowd"], recipe["order"]))
    return path


# ---------------------------------------------------------------------------------------------
# A whole root

def annotation_path(root, split):
    return os.path.join(root, "annotations", f"instances_{split}2014.json")


def read_instances(path):
    """A COCO instances JSON -> (images {id: (file stem, height, width)}, annotations {image id: [ann, ...]}),
    its categories checked against COCO's 80."""
    if not os.path.isfile(path):
        raise UserError(f"annotations file {path} does not exist; it comes from annotations_trainval2014.zip "
                        f"(https://cocodataset.org/#download), unzipped inside the COCO root")
    try:
        with open(path) as handle:
            data = json.load(handle)
    except (OSError, ValueError) as error:
        raise UserError(f"annotations file {path} is not JSON ({type(error).__name__}); download it again") from None
    if not (isinstance(data, dict) and all(isinstance(data.get(key), list)
                                           for key in ("images", "annotations", "categories"))):
        raise UserError(f"{path} is not a COCO instances file (it needs images, annotations and categories lists; "
                        f"captions_* and person_keypoints_* files are not it)")
    categories = sorted((category.get("id"), category.get("name")) for category in data["categories"])
    if categories != sorted(CATEGORIES):
        raise UserError(f"{path} has {len(categories)} categories that are not COCO's 80 instance categories; "
                        f"use instances_train2014.json / instances_val2014.json")
    try:
        images = {image["id"]: (os.path.splitext(image["file_name"])[0], int(image["height"]), int(image["width"]))
                  for image in data["images"]}
        annotations = {}
        for annotation in data["annotations"]:
            annotations.setdefault(annotation["image_id"], []).append(
                {"category_id": annotation["category_id"], "segmentation": annotation["segmentation"],
                 **{key: annotation[key] for key in ("iscrowd", "area") if key in annotation}})
    except (KeyError, TypeError, ValueError) as error:
        raise UserError(f"{path}: an image or annotation lacks a field ({error}); download the file again") from None
    unknown = {annotation["category_id"] for image_annotations in annotations.values()
               for annotation in image_annotations} - set(CATEGORY_TO_LABEL)
    if unknown:
        raise UserError(f"{path}: annotations of category ids {sorted(unknown)[:5]} that are not among its categories; "
                        f"download the file again")
    stray = set(annotations) - set(images)
    if stray:
        raise UserError(f"{path}: {len(stray)} annotations point at images the file does not list "
                        f"(e.g. image id {min(stray)}); download the file again")
    return images, annotations


def list_digest(names):
    """The first 12 hex digits of the sha1 of a list file's text: tells which image set a number belongs to."""
    return hashlib.sha1("".join(name + "\n" for name in names).encode()).hexdigest()[:12]


def _read_recipe(mask_dir):
    try:
        with open(os.path.join(mask_dir, RECIPE_FILE)) as handle:
            return json.load(handle).get("recipe")
    except (OSError, ValueError, AttributeError):
        return None


def check_images(root, parsed):
    """Every image the annotation files list is in its folder, under its COCO 2014 name (else one error)."""
    for split, (images, _) in parsed.items():
        folder = os.path.join(root, IMAGE_FOLDERS[split])
        stems = [stem for stem, _, _ in images.values()]
        missing = missing_files(stems, folder, ".jpg")
        if missing:
            raise UserError(f"{annotation_path(root, split)} lists {len(missing)} of {len(stems)} images that are "
                            f"not in {folder}, e.g. {', '.join(sorted(missing)[:3])}; unzip {IMAGE_FOLDERS[split]}"
                            f".zip there")
        wrong = [stem for image_id, (stem, _, _) in images.items() if stem != image_name(split, image_id)]
        if wrong:
            raise UserError(f"{annotation_path(root, split)}: file names that are not COCO 2014's for their id "
                            f"(e.g. {wrong[0]}); use the 2014 annotations with the 2014 images")


def plan(parsed, recipe, mask_dir, overwrite):
    """What a root gets from its parsed annotations -> (lists {name: stems}, labels {image id: float32[80]},
    mask tasks for write_mask (the masks not there yet, or all with overwrite), summary counts)."""
    lists, cls_labels, tasks = {}, {}, []
    summary = {"images": {}, "annotated": {}, "crowd_annotations": {}, "masks": {}}
    for split, (images, annotations) in parsed.items():
        all_names, annotated, n_crowd = [], [], 0
        for image_id, (stem, height, width) in sorted(images.items(), key=lambda item: item[1][0]):
            image_annotations = annotations.get(image_id, [])
            cls_labels[np.int64(image_id)] = image_labels(image_annotations)
            all_names.append(stem)
            n_crowd += sum(bool(annotation.get("iscrowd", 0)) for annotation in image_annotations)
            if image_annotations:
                annotated.append(stem)
            elif recipe["unannotated"] == "skip":
                continue
            path = os.path.join(mask_dir, stem + ".png")
            if overwrite or not os.path.isfile(path):
                tasks.append((path, height, width, image_annotations, recipe))
        lists[f"{split}_all"], lists[f"{split}_annotated"] = all_names, annotated
        summary["images"][split], summary["annotated"][split] = len(all_names), len(annotated)
        summary["crowd_annotations"][split] = n_crowd
        summary["masks"][split] = len(annotated) if recipe["unannotated"] == "skip" else len(all_names)
    if "val_annotated" in lists:
        annotated = lists["val_annotated"]
        step = max(1, len(annotated) / VAL_SUBSET)
        lists["val_5000"] = [annotated[int(index * step)] for index in range(min(VAL_SUBSET, len(annotated)))]
    return lists, cls_labels, tasks, summary


def prepare(root, recipe=None, mask_dir=None, num_workers=0, overwrite=False, splits=SPLITS, progress=None):
    """Write the masks (mask_dir, default ROOT/SegmentationClass), ROOT/cls_labels.npy and the split lists
    (<split>_all, <split>_annotated, val_5000) of a COCO root -> a summary dict (counts, list digests, the recipe).

    Resumable: masks already in mask_dir are kept when the folder's recipe is this one; masks of another
    recipe are an error unless overwrite (then every mask there is removed and made again). Nothing is written
    before the annotations and images are checked; every file is written atomically."""
    recipe = check_recipe(recipe)
    root = os.fspath(root)
    mask_dir = os.fspath(mask_dir) if mask_dir else os.path.join(root, "SegmentationClass")
    if not os.path.isdir(root):
        raise UserError(f"--root {root} does not exist; point it at the COCO 2014 root")
    _mask_api()  # pycocotools, before any work
    previous = _read_recipe(mask_dir)
    if previous is not None and previous != recipe and not overwrite:
        changed = ", ".join(f"{key} {previous.get(key)} -> {recipe[key]}" for key in recipe
                            if previous.get(key) != recipe[key])
        raise UserError(f"{mask_dir} holds masks of another recipe ({changed}); pass --overwrite to remake them, "
                        f"or --mask-dir for a folder of their own")
    parsed = {split: read_instances(annotation_path(root, split)) for split in splits}
    check_images(root, parsed)
    lists, cls_labels, tasks, summary = plan(parsed, recipe, mask_dir, overwrite)
    summary = {"recipe": recipe, "mask_dir": mask_dir, **summary}
    os.makedirs(mask_dir, exist_ok=True)
    save_json(os.path.join(mask_dir, RECIPE_FILE), {"recipe": recipe, "complete": False})
    if overwrite:  # every earlier mask goes first: an interrupted overwrite then resumes without old ones
        for entry in os.listdir(mask_dir):
            if entry.startswith("COCO_") and entry.endswith(".png"):
                os.remove(os.path.join(mask_dir, entry))
    written = 0
    for _ in imap_unordered(write_mask, tasks, num_workers, chunksize=16, workers_key="--num-workers"):
        written += 1
        if progress is not None:
            progress(written, len(tasks))
    save_npy(os.path.join(root, "cls_labels.npy"), cls_labels, allow_pickle=True)
    summary["lists"] = {}
    for list_name, names in lists.items():
        save_text(os.path.join(root, list_name + ".txt"), "".join(name + "\n" for name in names))
        summary["lists"][list_name] = {"images": len(names), "sha1": list_digest(names)}
    summary["masks_written"] = written
    save_json(os.path.join(mask_dir, RECIPE_FILE), {"recipe": recipe, "complete": True,
                                                    "masks": summary["masks"], "lists": summary["lists"]})
    return summary
