"""A small synthetic dataset in the MS COCO 2014 layout, for testing the COCO tool and pipeline on a CPU.

The scenes are those of datasets/synthetic.py (the twenty looks, the cluttered background), with what
COCO's annotations have and VOC's do not:

  - instances are polygons (the outline of each shape, in pixel coordinates, as COCO's), drawn larger
    first so that the default mask recipe (smaller instances on top) gives back the picture;
  - about one image in six has a crowd region: a cluster of small objects of one class annotated as one
    uncompressed-RLE annotation with iscrowd 1, under the other objects;
  - about one image in eight shows no object and has no annotation (unannotated images);
  - about one image in twelve is saved as a grayscale JPEG (COCO has some).

The twenty looks stand for twenty COCO categories spread over the id range (LOOK_CATEGORIES: person,
id 1 -> label 1, up to toothbrush, id 90 -> label 80), so ids after the gaps are exercised; the other
sixty classes never occur. The instances files list all eighty categories, as COCO's do.

Layout under out_dir (a COCO root): train2014/COCO_train2014_<id>.jpg, val2014/COCO_val2014_<id>.jpg,
annotations/instances_{train,val}2014.json; then datasets.coco_masks.prepare writes the masks, labels
file and split lists (it needs pycocotools). synthetic.json (the parameters) is written last.

    python -m datasets.synthetic_coco --out data/synthetic_coco [--train N --val N ...]
"""
import argparse
import json
import os
import sys
import time

import numpy as np
from PIL import Image

from datasets.coco import CATEGORIES, IMAGE_FOLDERS, image_name
from datasets.coco_masks import annotation_path, prepare
from datasets.synthetic import (LOOKS, MANIFEST, background, changed_params, check_integers, read_manifest,
                                render_object, sample_object)
from engine.errors import UserError
from engine.files import atomic_open, save_json

FORMAT_VERSION = 1
# The COCO category each look stands for (look k -> LOOK_CATEGORIES[k]).
LOOK_CATEGORIES = (1, 3, 5, 9, 11, 13, 18, 25, 28, 37, 44, 47, 53, 62, 64, 72, 77, 82, 88, 90)
UNANNOTATED_FRACTION = 1 / 8
CROWD_FRACTION = 1 / 6
GRAYSCALE_FRACTION = 1 / 12
MIN_VISIBLE_FRACTION = 0.3   # an object less visible than this is left out of the scene
DEFAULTS = dict(n_train=480, n_val=64, min_size=80, max_size=128, max_objects=3, seed=0)


# ----------------------------------------------------------------------------- outlines

def _outline(shape):
    """The shape's outline in its normalised frame (datasets.synthetic's inside tests), (n, 2) points (u, v)."""
    if shape == "disk":
        angles = np.linspace(0, 2 * np.pi, 32, endpoint=False)
        return np.stack([np.cos(angles), np.sin(angles)], 1)
    if shape == "square":
        return np.asarray([(-0.75, -0.75), (0.75, -0.75), (0.75, 0.75), (-0.75, 0.75)])
    if shape == "triangle":  # vertices opposite the three half-planes, circumradius 1.1
        angles = np.asarray([np.pi / 2, np.pi / 2 + 2 * np.pi / 3, np.pi / 2 + 4 * np.pi / 3]) + np.pi
        return 1.1 * np.stack([np.cos(angles), np.sin(angles)], 1)
    if shape == "cross":
        a, b = 0.3, 0.95
        return np.asarray([(-a, -b), (a, -b), (a, -a), (b, -a), (b, a), (a, a), (a, b), (-a, b), (-a, a), (-b, a),
                           (-b, -a), (-a, -a)])
    if shape == "star":  # tips at radius 1.05, apex up; inner corners at 0.45
        angles = -np.pi / 2 + np.arange(10) * np.pi / 5
        radii = np.where(np.arange(10) % 2 == 0, 1.05, 0.45)
        return np.stack([radii * np.cos(angles), radii * np.sin(angles)], 1)
    raise ValueError(shape)


def polygon(obj, height, width):
    """An object's outline as COCO's [x1, y1, x2, y2, ...] in pixel coordinates (pixel i spans [i, i + 1])."""
    shape = LOOKS[obj["cls"]][0]
    points = _outline(shape) * obj["radius"] * np.asarray(obj["aspect"])
    cos, sin = np.cos(obj["angle"]), np.sin(obj["angle"])
    x = obj["cx"] + cos * points[:, 0] - sin * points[:, 1]
    y = obj["cy"] + sin * points[:, 0] + cos * points[:, 1]
    xy = np.stack([np.clip(x, 0, width), np.clip(y, 0, height)], 1)
    return [round(float(value), 2) for value in xy.reshape(-1)]


def polygon_area(coordinates):
    x, y = np.asarray(coordinates[0::2]), np.asarray(coordinates[1::2])
    return float(abs(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))) / 2)


def uncompressed_rle(mask):
    """A bool mask -> COCO's uncompressed RLE {"counts": [...], "size": [H, W]} (column-major runs, zeros first)."""
    flat = np.asarray(mask, dtype=np.uint8).reshape(-1, order="F")
    changes = np.flatnonzero(np.diff(flat)) + 1
    runs = np.diff(np.concatenate([[0], changes, [flat.size]]))
    counts = ([0] if flat.size and flat[0] else []) + runs.tolist()
    return {"counts": [int(count) for count in counts], "size": [int(mask.shape[0]), int(mask.shape[1])]}


def _bbox(mask):
    ys, xs = np.nonzero(mask)
    return [int(xs.min()), int(ys.min()), int(xs.max() - xs.min() + 1), int(ys.max() - ys.min() + 1)]


# ----------------------------------------------------------------------------- scenes

def _crowd(rng, height, width):
    """A cluster of 4-7 small objects of one look inside a box: (look index, objects)."""
    look = int(rng.integers(len(LOOKS)))
    side = min(height, width)
    box = rng.uniform(0.35, 0.5) * side
    x0, y0 = rng.uniform(0, width - box), rng.uniform(0, height - box)
    objects = []
    for _ in range(int(rng.integers(4, 8))):
        obj = sample_object(rng, look, height, width)
        obj["radius"] = rng.uniform(0.05, 0.08) * side
        obj["cx"] = x0 + rng.uniform(obj["radius"], box - obj["radius"])
        obj["cy"] = y0 + rng.uniform(obj["radius"], box - obj["radius"])
        objects.append(obj)
    return look, objects


def make_scene(rng, height, width, max_objects, annotated, crowd):
    """-> (image uint8 (H, W, 3), annotations: [{"look", "iscrowd", "segmentation", "area", "bbox"}])."""
    image = background(rng, height, width)
    annotations = []
    if annotated:
        draw_objects(rng, image, annotations, max_objects, crowd)
    image += rng.normal(0, 4, size=image.shape)
    return np.clip(np.rint(image), 0, 255).astype(np.uint8), annotations


def draw_objects(rng, image, annotations, max_objects, crowd):
    """Draw a scene's objects on `image` (in place) and append their annotations: a crowd cluster first when
    `crowd`, then 1..max_objects objects, larger first; an object left less than MIN_VISIBLE_FRACTION visible
    by the later ones is left out."""
    height, width = image.shape[:2]
    if crowd:
        look, members = _crowd(rng, height, width)
        union = np.zeros((height, width), dtype=bool)
        for obj in members:
            mask, pixels = render_object(obj, height, width)
            image[mask] = pixels[mask]
            union |= mask
        annotations.append({"look": look, "iscrowd": 1, "segmentation": uncompressed_rle(union),
                            "area": float(union.sum()), "bbox": _bbox(union)})
    objects = [sample_object(rng, int(rng.integers(len(LOOKS))), height, width)
               for _ in range(int(rng.integers(1, max_objects + 1)))]
    objects.sort(key=lambda obj: -obj["radius"])  # larger first: smaller ones on top, as the default recipe draws
    rendered = [render_object(obj, height, width) for obj in objects]
    covered = np.zeros((height, width), dtype=bool)
    keep = [True] * len(objects)
    for index in range(len(objects) - 1, -1, -1):  # from the top: what the later ones leave visible
        mask = rendered[index][0]
        visible = (mask & ~covered).sum() / max(1, mask.sum())
        keep[index] = visible >= MIN_VISIBLE_FRACTION
        if keep[index]:
            covered |= mask
    for obj, (mask, pixels), kept in zip(objects, rendered, keep):
        if not kept:
            continue
        image[mask] = pixels[mask]
        outline = polygon(obj, height, width)
        annotations.append({"look": obj["cls"], "iscrowd": 0, "segmentation": [outline],
                            "area": polygon_area(outline), "bbox": _bbox(mask)})


# ----------------------------------------------------------------------------- files

def _check_params(n_train, n_val, min_size, max_size, max_objects, seed):
    check_integers(dict(n_train=n_train, n_val=n_val, min_size=min_size, max_size=max_size,
                        max_objects=max_objects, seed=seed))
    if n_train < 1 or n_val < 1 or not 32 <= min_size <= max_size or max_objects < 1 or seed < 0:
        raise UserError("synthetic COCO parameters (dataset.synthetic): need n_train >= 1, n_val >= 1, "
                        "32 <= min_size <= max_size, max_objects >= 1 and seed >= 0")


def categories():
    return [{"id": category_id, "name": name, "supercategory": "synthetic"} for category_id, name in CATEGORIES]


def generate(out_dir, n_train=480, n_val=64, min_size=80, max_size=128, max_objects=3, seed=0, num_workers=0):
    """Write the images and instances files under out_dir, then prepare the root (masks, labels, lists) with
    the default recipe -> prepare's summary. Refuses a folder with COCO images that this project did not make."""
    params = dict(n_train=n_train, n_val=n_val, min_size=min_size, max_size=max_size, max_objects=max_objects,
                  seed=seed)
    _check_params(**params)
    params = {key: int(value) for key, value in params.items()}
    out_dir = os.fspath(out_dir)
    if read_manifest(out_dir) is None and any(
            os.path.isdir(os.path.join(out_dir, folder)) and os.listdir(os.path.join(out_dir, folder))
            for folder in IMAGE_FOLDERS.values()):
        raise UserError(f"{out_dir} holds COCO images but no {MANIFEST}: it is not a dataset this project generated, "
                        f"and it is left as it is; choose another folder to generate into")
    save_json(os.path.join(out_dir, MANIFEST), dict(generator="datasets.synthetic_coco", version=FORMAT_VERSION,
                                                    params=params, complete=False))
    first_id = 1
    for split, count in (("train", n_train), ("val", n_val)):
        folder = os.path.join(out_dir, IMAGE_FOLDERS[split])
        os.makedirs(folder, exist_ok=True)
        for entry in os.listdir(folder):  # images of an earlier generation
            os.remove(os.path.join(folder, entry))
        images, annotations = [], []
        for index in range(count):
            image_id = first_id + index
            rng = np.random.default_rng(np.random.SeedSequence(params["seed"], spawn_key=(2, image_id)))
            height, width = (int(rng.integers(min_size, max_size + 1)) for _ in range(2))
            annotated, crowd = rng.random() >= UNANNOTATED_FRACTION, rng.random() < CROWD_FRACTION
            pixels, scene = make_scene(rng, height, width, max_objects, annotated, crowd)
            picture = Image.fromarray(pixels)
            if rng.random() < GRAYSCALE_FRACTION:
                picture = picture.convert("L")
            name = image_name(split, image_id)
            with atomic_open(os.path.join(folder, name + ".jpg"), "wb") as handle:
                picture.save(handle, format="JPEG", quality=95)
            images.append({"id": image_id, "file_name": name + ".jpg", "height": height, "width": width})
            for entry in scene:
                annotations.append({"id": len(annotations) + 1, "image_id": image_id,
                                    "category_id": LOOK_CATEGORIES[entry.pop("look")], **entry})
        first_id += count
        save_json(annotation_path(out_dir, split), {"info": {"description": "synthetic (datasets/synthetic_coco.py)"},
                                                     "images": images, "annotations": annotations,
                                                     "categories": categories()})
    summary = prepare(out_dir, num_workers=num_workers, overwrite=True)
    save_json(os.path.join(out_dir, MANIFEST), dict(generator="datasets.synthetic_coco", version=FORMAT_VERSION,
                                                    params=params, complete=True, summary=summary))
    return summary


def ensure_dataset(out_dir, n_train=480, n_val=64, min_size=80, max_size=128, max_objects=3, seed=0,
                   num_workers=0, **unknown):
    """Generate unless out_dir holds a complete set made with these parameters -> prepare's summary with
    generated=True/False, n_images and, when a set of other parameters was replaced, changed=["seed: 0 -> 1"]."""
    if unknown:
        raise UserError(f"dataset.synthetic.{sorted(unknown)[0]} is not a parameter of the COCO-layout generator "
                        f"(datasets/synthetic_coco.py takes {', '.join(DEFAULTS)})")
    params = dict(n_train=n_train, n_val=n_val, min_size=min_size, max_size=max_size, max_objects=max_objects,
                  seed=seed)
    _check_params(**params)
    params = {key: int(value) for key, value in params.items()}
    manifest = read_manifest(os.fspath(out_dir))
    manifest = manifest if isinstance(manifest, dict) else {}
    lists_there = all(os.path.isfile(os.path.join(out_dir, f"{name}.txt")) for name in ("train_all", "val_all"))
    if (manifest.get("complete") is True and manifest.get("version") == FORMAT_VERSION
            and manifest.get("params") == params and lists_there
            and os.path.isfile(os.path.join(out_dir, "cls_labels.npy"))):
        summary, generated, changed = manifest.get("summary", {}), False, []
    else:
        changed = changed_params(manifest.get("params"), params)
        summary, generated = generate(out_dir, **params, num_workers=num_workers), True
    return dict(summary, generated=generated, changed=changed, n_images=sum(summary.get("images", {}).values()))


def main(argv=None):
    parser = argparse.ArgumentParser(description="Generate a synthetic dataset in the MS COCO 2014 layout.")
    parser.add_argument("--out", required=True, help="output folder (the COCO root)")
    for key in DEFAULTS:
        parser.add_argument("--" + key.removeprefix("n_").replace("_", "-"), dest=key, type=int, default=DEFAULTS[key])
    args = parser.parse_args(argv)
    start = time.perf_counter()
    try:
        summary = generate(args.out, **{key: getattr(args, key) for key in DEFAULTS})
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"{args.out}: {json.dumps(summary['lists'])} in {time.perf_counter() - start:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
