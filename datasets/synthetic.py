"""A small synthetic dataset in the PASCAL VOC 2012 layout, for running the pipeline on a CPU.

Each image is a scene of one to `max_objects` objects of the 20 VOC classes on a cluttered
background. A class is not a picture of its namesake: it is a fixed *look*, a combination of a
shape, a colour and a texture, so that a classifier trained from scratch on image-level labels
can learn it in minutes and its class activation maps can be scored against pixel labels.

The looks (class id k = 1..20 in CLASS_NAMES order, i = k - 1):

  shape   = SHAPES[i % 5]       disk, square, triangle, cross, star
  texture = TEXTURES[i // 5]    solid (shaded), stripes, checker, dots (the second tone is a
                                dark version of the colour; textures turn with the object)
  colour  = COLOURS[2 * ((i % 5 + 2 * (i // 5)) % 5) + (i // 5 >= 2)]

so class 1 (aeroplane) is a solid red disk, 6 (bus) a striped green disk, 11 (diningtable) a
checkered brown disk, 20 (tvmonitor) an orange dotted star; LOOKS lists all twenty and
`describe_looks()` prints them. Every class
has a different (shape, texture) pair, every colour is shared by exactly two classes and those
two differ in both shape and texture: any two looks differ in at least two of the three.

Each object gets a random size (its bounding circle is 20-50% of the shorter image side), a
random position inside the image, an aspect jitter of +-15%, a rotation of +-25 degrees, a
jitter of its colour (brightness and per channel) and a random texture phase. Objects are
drawn in order, later ones over earlier ones; an object that is left with less than 20% of its
pixels visible, or almost no pixels outside the ignore band, is removed from the scene (not
drawn, not annotated). Objects that are heavily occluded (under 50% visible) or small are
marked difficult in the XML; like VOC's cls_labels they still count as present.

The background is a low-saturation colour gradient with low-frequency blotches and pixel noise,
with a few greyish strokes and blobs (distractors that belong to no class) under the objects;
noise is added over the whole image at the end.

Layout under out_dir (as VOC2012 with SegmentationClassAug):

  JPEGImages/<name>.jpg           RGB, JPEG quality 95, sizes drawn per image from
                                  [min_size, max_size] for width and height independently
  SegmentationClass/<name>.png    palette PNG, indices = class ids (0 background, 1..20),
  SegmentationClassAug/<name>.png   255 in a 2 px band straddling every boundary between
                                  different labels; the two folders hold identical files
  Annotations/<name>.xml          VOC XML: size, objects with name, difficult, 1-based bndbox
                                  of the visible pixels
  cls_labels.npy                  {numpy.int32(name_to_int(name)): float32[20] multi-hot}
  train_aug.txt, train.txt, val.txt   sorted names, train a subset of train_aug, val disjoint
  synthetic.json                  manifest with the parameters, written last

Names are YYYY_NNNNNN (years 2007..2012 cycle, numbers 1..N). Everything is determined by the
seed (numpy Generators seeded per image) and every file is written atomically.

    python -m datasets.synthetic --out data/synthetic_voc [--train-aug N --train N --val N ...]
"""
import argparse
import json
import os
import re
import sys
import time
import xml.etree.ElementTree as ET

import numpy as np
from PIL import Image

from datasets.files import IGNORE_INDEX, save_label_png
from datasets.voc import CLASS_NAMES, N_CLASSES, name_to_int
from engine.errors import UserError
from engine.files import atomic_open, save_json, save_npy, save_text

MANIFEST = "synthetic.json"
FORMAT_VERSION = 1
NAME_PATTERN = re.compile(r"^\d{4}_\d{6}$")
SUBFOLDERS = ("JPEGImages", "SegmentationClass", "SegmentationClassAug", "Annotations")
SPLITS = ("train_aug", "train", "val")

SHAPES = ("disk", "square", "triangle", "cross", "star")
TEXTURES = ("solid", "stripes", "checker", "dots")
COLOURS = (  # (name, RGB); even indices and odd indices each form a set of five
    ("red", (215, 35, 35)),
    ("orange", (245, 135, 25)),
    ("yellow", (240, 215, 35)),
    ("lime", (150, 225, 45)),
    ("green", (30, 145, 55)),
    ("cyan", (35, 200, 215)),
    ("blue", (40, 70, 215)),
    ("purple", (135, 55, 200)),
    ("magenta", (225, 50, 175)),
    ("brown", (145, 80, 30)),
)


def _look(index):
    shape, texture = index % len(SHAPES), index // len(SHAPES)
    colour = 2 * ((shape + 2 * texture) % 5) + (1 if texture >= 2 else 0)
    return SHAPES[shape], COLOURS[colour][0], TEXTURES[texture]


LOOKS = tuple(_look(index) for index in range(N_CLASSES))  # LOOKS[k - 1] = (shape, colour, texture)
_COLOUR_RGB = dict(COLOURS)

BORDER_RADIUS = 1          # ignore band: pixels with a different label within this Chebyshev distance
MIN_VISIBLE_FRACTION = 0.2  # less visible than this -> the object is removed from the scene
MIN_INTERIOR_PIXELS = 8     # visible pixels outside the ignore band needed to keep an object
DIFFICULT_FRACTION = 0.5    # visible fraction under this -> difficult
DIFFICULT_AREA = 0.02       # visible pixels under this fraction of the image -> difficult

DEFAULTS = dict(n_train_aug=480, n_train=96, n_val=64, min_size=80, max_size=128, max_objects=3, seed=0)


def describe_looks():
    """One line per class: id, name and its look."""
    return "\n".join(f"{k + 1:2d} {CLASS_NAMES[k]:<12s} {c} {t} {s}" for k, (s, c, t) in enumerate(LOOKS))


# ----------------------------------------------------------------------------- drawing

def _shape_mask(shape, u, v):
    """Inside test in the object's normalised frame (bounding circle about radius 1, v points down)."""
    if shape == "disk":
        return u * u + v * v <= 1.0
    if shape == "square":
        return np.maximum(np.abs(u), np.abs(v)) <= 0.75
    if shape == "triangle":  # equilateral, apex up, circumradius 1.1 (inradius 0.55)
        inside = np.ones(u.shape, dtype=bool)
        for angle in (np.pi / 2, np.pi / 2 + 2 * np.pi / 3, np.pi / 2 + 4 * np.pi / 3):
            inside &= u * np.cos(angle) + v * np.sin(angle) <= 0.55
        return inside
    if shape == "cross":
        au, av = np.abs(u), np.abs(v)
        return ((au <= 0.3) & (av <= 0.95)) | ((av <= 0.3) & (au <= 0.95))
    if shape == "star":  # five points, apex up
        outer, inner, half = 1.05, 0.45, np.pi / 5
        rho = np.hypot(u, v)
        theta = np.arctan2(v, u) + np.pi / 2
        phi = np.abs(np.mod(theta + half, 2 * half) - half)  # angle from the nearest tip
        px, py = rho * np.cos(phi), rho * np.sin(phi)
        dx, dy = inner * np.cos(half) - outer, inner * np.sin(half)
        return dx * py - dy * (px - outer) >= 0
    raise ValueError(shape)


def _texture_dark(texture, pu, pv, params):
    """Boolean map of the dark tone, in pixel units of the object's (rotated) frame."""
    period, phase_u, phase_v = params
    if texture == "stripes":
        return np.mod((pu + phase_u) / period, 1.0) < 0.5
    if texture == "checker":
        cell = period / 2
        return (np.floor((pu + phase_u) / cell) + np.floor((pv + phase_v) / cell)) % 2 == 1
    if texture == "dots":
        du = np.mod(pu + phase_u, period) - period / 2
        dv = np.mod(pv + phase_v, period) - period / 2
        return du * du + dv * dv <= (0.3 * period) ** 2
    return np.zeros(pu.shape, dtype=bool)


def sample_object(rng, class_index, height, width):
    side = min(height, width)
    radius = rng.uniform(0.2, 0.5) * side / 2
    shape, colour, texture = LOOKS[class_index]
    base = np.asarray(_COLOUR_RGB[colour], dtype=np.float32)
    base = base * rng.uniform(0.85, 1.1) + rng.uniform(-12, 12, size=3)
    return dict(
        cls=class_index,
        cx=rng.uniform(radius, width - radius),
        cy=rng.uniform(radius, height - radius),
        radius=radius,
        aspect=(rng.uniform(0.85, 1.15), rng.uniform(0.85, 1.15)),
        angle=np.deg2rad(rng.uniform(-25, 25)),
        colour=np.clip(base, 0, 255),
        texture_params=(rng.uniform(5.0, 7.5), rng.uniform(0, 8), rng.uniform(0, 8)),
        shading=(rng.uniform(-0.15, 0.15), rng.uniform(-0.15, 0.15)),
    )


def render_object(obj, height, width):
    """-> (mask (H, W) bool, colour image (H, W, 3) float32 valid inside the mask)."""
    shape, _, texture = LOOKS[obj["cls"]]
    reach = obj["radius"] * 1.35
    x0, x1 = max(0, int(np.floor(obj["cx"] - reach))), min(width, int(np.ceil(obj["cx"] + reach)) + 1)
    y0, y1 = max(0, int(np.floor(obj["cy"] - reach))), min(height, int(np.ceil(obj["cy"] + reach)) + 1)
    ys, xs = np.mgrid[y0:y1, x0:x1].astype(np.float32)
    dx, dy = xs + 0.5 - obj["cx"], ys + 0.5 - obj["cy"]
    cos, sin = np.cos(obj["angle"]), np.sin(obj["angle"])
    pu, pv = cos * dx + sin * dy, -sin * dx + cos * dy  # pixel units, object frame
    u = pu / (obj["radius"] * obj["aspect"][0])
    v = pv / (obj["radius"] * obj["aspect"][1])
    local_mask = _shape_mask(shape, u, v)

    colour = obj["colour"]
    shade = 1.0 + obj["shading"][0] * u + obj["shading"][1] * v
    local = colour[None, None, :] * shade[..., None]
    dark = _texture_dark(texture, pu, pv, obj["texture_params"])
    local = np.clip(np.where(dark[..., None], local * 0.35, local), 0, 255)

    mask = np.zeros((height, width), dtype=bool)
    mask[y0:y1, x0:x1] = local_mask
    pixels = np.zeros((height, width, 3), dtype=np.float32)
    pixels[y0:y1, x0:x1] = local
    return mask, pixels


def _smooth_noise(rng, height, width, cells):
    """Low-frequency noise: a coarse random grid, bilinearly upsampled (separable matrices)."""
    grid = rng.normal(size=(cells + 1, cells + 1)).astype(np.float32)

    def weights(n):
        pos = (np.arange(n, dtype=np.float32) + 0.5) / n * cells
        left = np.clip(np.floor(pos).astype(int), 0, cells - 1)
        frac = pos - left
        matrix = np.zeros((n, cells + 1), dtype=np.float32)
        matrix[np.arange(n), left] = 1 - frac
        matrix[np.arange(n), left + 1] += frac
        return matrix

    return weights(height) @ grid @ weights(width).T


def _grey(rng, low, high, spread):
    return rng.uniform(low, high) + rng.normal(0, spread, size=3)


def background(rng, height, width):
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    angle = rng.uniform(0, 2 * np.pi)
    t = np.cos(angle) * xs / width + np.sin(angle) * ys / height
    t = (t - t.min()) / max(float(t.max() - t.min()), 1e-6)
    c0, c1 = _grey(rng, 60, 200, 12), _grey(rng, 60, 200, 12)
    image = c0 * (1 - t[..., None]) + c1 * t[..., None]
    image += _smooth_noise(rng, height, width, int(rng.integers(2, 6)))[..., None] * rng.uniform(6, 16)
    image += rng.normal(0, 7, size=image.shape)

    for _ in range(int(rng.integers(2, 7))):  # distractors: greyish strokes and blobs
        colour = np.clip(_grey(rng, 25, 235, 8), 0, 255)
        if rng.random() < 0.5:  # stroke: thick segment
            x0, y0 = rng.uniform(0, width), rng.uniform(0, height)
            length, direction = rng.uniform(8, 0.4 * min(height, width)), rng.uniform(0, 2 * np.pi)
            x1, y1 = x0 + length * np.cos(direction), y0 + length * np.sin(direction)
            sx, sy = x1 - x0, y1 - y0
            s = np.clip(((xs - x0) * sx + (ys - y0) * sy) / (sx * sx + sy * sy), 0, 1)
            dist = np.hypot(xs - (x0 + s * sx), ys - (y0 + s * sy))
            mask = dist <= rng.uniform(0.8, 2.0)
        else:  # blob: small ellipse
            cx, cy = rng.uniform(0, width), rng.uniform(0, height)
            rx, ry = rng.uniform(2, 7), rng.uniform(2, 7)
            mask = ((xs - cx) / rx) ** 2 + ((ys - cy) / ry) ** 2 <= 1
        image[mask] = colour
    return image


def _ignore_band(label):
    """True where a pixel within BORDER_RADIUS (8-neighbourhood) has a different label."""
    r = BORDER_RADIUS
    padded = np.pad(label, r, mode="edge")
    height, width = label.shape
    band = np.zeros(label.shape, dtype=bool)
    for dy in range(-r, r + 1):
        for dx in range(-r, r + 1):
            if dy or dx:
                band |= padded[r + dy:r + dy + height, r + dx:r + dx + width] != label
    return band


def _compose(masks, classes, height, width):
    """-> owner (index of the topmost object, -1 background), label (class ids), band."""
    owner = np.full((height, width), -1, dtype=np.int16)
    for index, mask in enumerate(masks):
        owner[mask] = index
    lut = np.asarray([0] + [c + 1 for c in classes], dtype=np.uint8)
    label = lut[owner + 1]
    return owner, label, _ignore_band(label)


def make_scene(rng, height, width, max_objects):
    """Draw one scene. -> (image uint8 (H, W, 3), label uint8 (H, W), objects: list of dicts)."""
    n_objects = int(rng.integers(1, max_objects + 1))
    objects = [sample_object(rng, int(rng.integers(N_CLASSES)), height, width) for _ in range(n_objects)]
    image = background(rng, height, width)
    rendered = [render_object(obj, height, width) for obj in objects]

    # Remove objects hidden too much by later ones, the least visible first, until all are fine.
    # The last object is never hidden, so at least one object remains.
    while True:
        masks = [mask for mask, _ in rendered]
        owner, label, band = _compose(masks, [obj["cls"] for obj in objects], height, width)
        areas = np.asarray([mask.sum() for mask in masks], dtype=np.float64)
        visible = np.asarray([(owner == k).sum() for k in range(len(objects))], dtype=np.float64)
        interior = np.asarray([((owner == k) & ~band).sum() for k in range(len(objects))])
        fraction = visible / np.maximum(areas, 1)
        bad = (fraction < MIN_VISIBLE_FRACTION) | (interior < MIN_INTERIOR_PIXELS)
        if not bad.any():
            break
        drop = int(np.argmin(np.where(bad, fraction, np.inf)))
        del objects[drop], rendered[drop]

    for mask, pixels in rendered:
        image[mask] = pixels[mask]
    image += rng.normal(0, 4, size=image.shape)
    image = np.clip(np.rint(image), 0, 255).astype(np.uint8)

    annotations = []
    for k, obj in enumerate(objects):
        ys, xs = np.nonzero(owner == k)
        difficult = fraction[k] < DIFFICULT_FRACTION or visible[k] < DIFFICULT_AREA * height * width
        annotations.append(dict(
            cls=obj["cls"], difficult=int(difficult),
            bbox=(int(xs.min()) + 1, int(ys.min()) + 1, int(xs.max()) + 1, int(ys.max()) + 1),
        ))
    label = label.copy()
    label[band] = IGNORE_INDEX
    return image, label, annotations


# ----------------------------------------------------------------------------- files

def image_name(index):
    """Index 0.. -> 'YYYY_NNNNNN' (years cycle through 2007..2012 so several prefixes occur)."""
    return f"{2007 + index % 6}_{index + 1:06d}"


def annotation_xml(name, width, height, annotations):
    root = ET.Element("annotation")
    ET.SubElement(root, "folder").text = "VOC2012"
    ET.SubElement(root, "filename").text = name + ".jpg"
    ET.SubElement(ET.SubElement(root, "source"), "database").text = "synthetic (datasets/synthetic.py)"
    size = ET.SubElement(root, "size")
    ET.SubElement(size, "width").text = str(width)
    ET.SubElement(size, "height").text = str(height)
    ET.SubElement(size, "depth").text = "3"
    ET.SubElement(root, "segmented").text = "1"
    for ann in annotations:
        obj = ET.SubElement(root, "object")
        ET.SubElement(obj, "name").text = CLASS_NAMES[ann["cls"]]
        ET.SubElement(obj, "pose").text = "Unspecified"
        ET.SubElement(obj, "truncated").text = "0"
        ET.SubElement(obj, "difficult").text = str(ann["difficult"])
        box = ET.SubElement(obj, "bndbox")
        for key, value in zip(("xmin", "ymin", "xmax", "ymax"), ann["bbox"]):
            ET.SubElement(box, key).text = str(value)
    ET.indent(root, space="\t")
    return ET.tostring(root, encoding="unicode") + "\n"


class _ParameterError(UserError):
    def __init__(self, message):
        super().__init__(f"synthetic dataset parameters (dataset.synthetic): {message}")


def check_integers(params):
    """Every generation parameter is an integer (a _ParameterError naming the first that is not)."""
    for key, value in params.items():
        if not isinstance(value, (int, np.integer)) or isinstance(value, bool):
            raise _ParameterError(f"{key} must be an integer, got {value!r}")


def changed_params(previous, params):
    """["key: old -> new"] for the parameters of an earlier generation (its manifest's) that differ."""
    previous = previous or {}
    return [f"{key}: {previous[key]} -> {value}" for key, value in params.items()
            if key in previous and previous[key] != value]


def _check_params(n_train_aug, n_train, n_val, min_size, max_size, max_objects, seed):
    check_integers(dict(n_train_aug=n_train_aug, n_train=n_train, n_val=n_val, min_size=min_size,
                        max_size=max_size, max_objects=max_objects, seed=seed))
    if n_train_aug < 1 or n_train < 0 or n_val < 0:
        raise _ParameterError("need n_train_aug >= 1, n_train >= 0 and n_val >= 0")
    if n_train > n_train_aug:
        raise _ParameterError(f"n_train ({n_train}) must not exceed n_train_aug ({n_train_aug}): train is a subset")
    if n_train_aug + n_val > 999999:
        raise _ParameterError("at most 999999 images")
    if not 32 <= min_size <= max_size:
        raise _ParameterError(f"need 32 <= min_size <= max_size, got {min_size}, {max_size}")
    if max_objects < 1:
        raise _ParameterError("max_objects must be >= 1")
    if seed < 0:
        raise _ParameterError("seed must be >= 0")


def read_manifest(out_dir):
    try:
        with open(os.path.join(out_dir, MANIFEST)) as handle:
            return json.load(handle)
    except (OSError, ValueError):
        return None


def _remove_stale(out_dir, keep):
    """Delete image files of an earlier generation in this folder that are not in `keep`."""
    for folder in SUBFOLDERS:
        path = os.path.join(out_dir, folder)
        if not os.path.isdir(path):
            continue
        for entry in os.listdir(path):
            stem, ext = os.path.splitext(entry)
            if NAME_PATTERN.match(stem) and ext in (".jpg", ".png", ".xml") and stem not in keep:
                os.remove(os.path.join(path, entry))


def generate(out_dir, n_train_aug=480, n_train=96, n_val=64, min_size=80, max_size=128, max_objects=3,
             seed=0):
    """Write the dataset under out_dir (see the module docstring); returns a summary dict of counts.

    Refuses a folder that holds JPEGImages but no synthetic.json (e.g. a real VOC root): a UserError.
    """
    params = dict(n_train_aug=n_train_aug, n_train=n_train, n_val=n_val, min_size=min_size,
                  max_size=max_size, max_objects=max_objects, seed=seed)
    _check_params(**params)
    params = {key: int(value) for key, value in params.items()}
    out_dir = os.fspath(out_dir)
    images_dir = os.path.join(out_dir, "JPEGImages")
    old_manifest = read_manifest(out_dir)
    if old_manifest is None and os.path.isdir(images_dir) and os.listdir(images_dir):
        raise UserError(f"{out_dir} holds JPEGImages but no {MANIFEST}: it is not a dataset this project "
                        f"generated, and it is left as it is; to use it, set dataset.synthetic=null (or choose "
                        f"another folder to generate into)")
    # Mark the folder as ours and incomplete before touching anything else.
    save_json(os.path.join(out_dir, MANIFEST), dict(generator="datasets.synthetic", version=FORMAT_VERSION,
                                                    params=params, complete=False))

    n_images = n_train_aug + n_val
    names = [image_name(index) for index in range(n_images)]
    _remove_stale(out_dir, set(names))

    cls_labels = {}
    n_objects = n_difficult = 0
    images_per_class = np.zeros(N_CLASSES, dtype=np.int64)
    for index, name in enumerate(names):
        rng = np.random.default_rng(np.random.SeedSequence(params["seed"], spawn_key=(1, index)))
        height = int(rng.integers(min_size, max_size + 1))
        width = int(rng.integers(min_size, max_size + 1))
        image, label, annotations = make_scene(rng, height, width, max_objects)

        with atomic_open(os.path.join(images_dir, name + ".jpg"), "wb") as handle:
            Image.fromarray(image).save(handle, format="JPEG", quality=95)
        save_label_png(os.path.join(out_dir, "SegmentationClass", name + ".png"), label)
        save_label_png(os.path.join(out_dir, "SegmentationClassAug", name + ".png"), label)
        save_text(os.path.join(out_dir, "Annotations", name + ".xml"),
                  annotation_xml(name, width, height, annotations))

        multi_hot = np.zeros(N_CLASSES, dtype=np.float32)
        for ann in annotations:
            multi_hot[ann["cls"]] = 1.0
        cls_labels[np.int32(name_to_int(name))] = multi_hot
        images_per_class += multi_hot.astype(np.int64)
        n_objects += len(annotations)
        n_difficult += sum(ann["difficult"] for ann in annotations)

    save_npy(os.path.join(out_dir, "cls_labels.npy"), cls_labels, allow_pickle=True)

    split_rng = np.random.default_rng(np.random.SeedSequence(params["seed"], spawn_key=(0,)))
    train_aug = names[:n_train_aug]
    train = [train_aug[i] for i in split_rng.choice(n_train_aug, size=n_train, replace=False)]
    val = names[n_train_aug:]
    for split, split_names in zip(SPLITS, (train_aug, train, val)):
        save_text(os.path.join(out_dir, split + ".txt"), "".join(n + "\n" for n in sorted(split_names)))

    summary = dict(n_images=n_images, n_train_aug=n_train_aug, n_train=n_train, n_val=n_val,
                   n_objects=n_objects, n_difficult=n_difficult,
                   images_per_class=[int(count) for count in images_per_class])
    save_json(os.path.join(out_dir, MANIFEST), dict(generator="datasets.synthetic", version=FORMAT_VERSION,
                                                    params=params, complete=True, summary=summary))
    return summary


def _is_complete(out_dir, params):
    manifest = read_manifest(out_dir)
    if not (isinstance(manifest, dict) and manifest.get("complete") is True
            and manifest.get("version") == FORMAT_VERSION and manifest.get("params") == params):
        return None
    if not os.path.isfile(os.path.join(out_dir, "cls_labels.npy")):
        return None
    for split in SPLITS:
        split_path = os.path.join(out_dir, split + ".txt")
        if not os.path.isfile(split_path):
            return None
        if split == "train":
            continue  # a subset of train_aug, whose files are checked
        with open(split_path) as handle:
            for name in handle.read().split():
                for folder, ext in zip(SUBFOLDERS, (".jpg", ".png", ".png", ".xml")):
                    if not os.path.isfile(os.path.join(out_dir, folder, name + ext)):
                        return None
    return manifest


def ensure_dataset(out_dir, n_train_aug=480, n_train=96, n_val=64, min_size=80, max_size=128,
                   max_objects=3, seed=0):
    """Generate the dataset unless out_dir already holds a complete one made with these parameters.

    Returns the summary dict, with generated=True/False and, when a dataset of other parameters was
    replaced, changed=["seed: 0 -> 1", ...].
    """
    params = dict(n_train_aug=n_train_aug, n_train=n_train, n_val=n_val, min_size=min_size,
                  max_size=max_size, max_objects=max_objects, seed=seed)
    _check_params(**params)
    params = {key: int(value) for key, value in params.items()}
    manifest = _is_complete(os.fspath(out_dir), params)
    if manifest is not None:
        return dict(manifest.get("summary", {}), generated=False)
    changed = changed_params((read_manifest(os.fspath(out_dir)) or {}).get("params"), params)
    return dict(generate(out_dir, **params), generated=True, changed=changed)


def main(argv=None):
    parser = argparse.ArgumentParser(description="Generate a synthetic dataset in the PASCAL VOC 2012 layout.")
    parser.add_argument("--out", required=True, help="output folder (the VOC root)")
    parser.add_argument("--train-aug", type=int, default=DEFAULTS["n_train_aug"], help="images in train_aug")
    parser.add_argument("--train", type=int, default=DEFAULTS["n_train"], help="images in train (subset of train_aug)")
    parser.add_argument("--val", type=int, default=DEFAULTS["n_val"], help="images in val")
    parser.add_argument("--min-size", type=int, default=DEFAULTS["min_size"], help="smallest width/height")
    parser.add_argument("--max-size", type=int, default=DEFAULTS["max_size"], help="largest width/height")
    parser.add_argument("--max-objects", type=int, default=DEFAULTS["max_objects"], help="objects per image, at most")
    parser.add_argument("--seed", type=int, default=DEFAULTS["seed"])
    parser.add_argument("--force", action="store_true", help="regenerate even if an identical dataset exists")
    args = parser.parse_args(argv)
    params = dict(n_train_aug=args.train_aug, n_train=args.train, n_val=args.val, min_size=args.min_size,
                  max_size=args.max_size, max_objects=args.max_objects, seed=args.seed)
    start = time.perf_counter()
    try:
        if args.force:
            summary = dict(generate(args.out, **params), generated=True)
        else:
            summary = ensure_dataset(args.out, **params)
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    action = "generated" if summary["generated"] else "already present"
    print(f"{args.out}: {action}: {summary.get('n_images')} images (train_aug {summary.get('n_train_aug')}, "
          f"train {summary.get('n_train')}, val {summary.get('n_val')}), {summary.get('n_objects')} objects "
          f"({summary.get('n_difficult')} difficult) in {time.perf_counter() - start:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
