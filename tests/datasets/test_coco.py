"""datasets/coco.py and datasets/coco_masks.py: the category mapping, names and folders, the labels file, the
mask recipes on hand-made polygons and RLE, and a whole hand-made COCO root prepared (lists of both protocols,
labels, resume, errors)."""
import importlib.util
import json
import os
import sys

import numpy as np
import pytest
from PIL import Image

from datasets import build_source
from datasets.coco import CATEGORIES, CATEGORY_TO_LABEL, CLASS_NAMES, COCO, TABLE_COLUMNS, image_name, parse_name
from datasets.coco_masks import compose_mask, instance_mask, list_digest, prepare
from datasets.files import read_label
from datasets.synthetic_coco import uncompressed_rle
from engine.config import Config
from engine.errors import UserError
from engine.files import save_json, save_npy

# COCO's masks need pycocotools, an optional dependency (.ci/run installs it, so CI runs these)
needs_pycocotools = pytest.mark.skipif(importlib.util.find_spec("pycocotools") is None,
                                       reason="pip install pycocotools (COCO only)")


# ---------------------------------------------------------------------------------------------
# Classes and names

def test_category_ids_map_to_1_80_in_id_order_skipping_the_gaps():
    assert len(CLASS_NAMES) == 80 and len(set(CLASS_NAMES)) == 80
    ids = [category_id for category_id, _ in CATEGORIES]
    assert ids == sorted(ids) and set(range(1, 91)) - set(ids) == {12, 26, 29, 30, 45, 66, 68, 69, 71, 83}
    assert CATEGORY_TO_LABEL[1] == 1 and CLASS_NAMES[0] == "person"     # person is 1, never background's 0
    assert CATEGORY_TO_LABEL[13] == 12 and CLASS_NAMES[11] == "stop sign"   # after the gap at 12
    assert CATEGORY_TO_LABEL[90] == 80 and CLASS_NAMES[79] == "toothbrush"
    assert len(TABLE_COLUMNS) == 81 and len(set(TABLE_COLUMNS)) == 81 and TABLE_COLUMNS[0] == "bkg"
    assert max(len(column) for column in TABLE_COLUMNS) <= 6


def test_names_say_the_folder_and_the_label_key(tmp_path):
    source = COCO(str(tmp_path))
    assert image_name("val", 42) == "COCO_val2014_000000000042"
    assert parse_name("COCO_val2014_000000000042") == ("val", 42)
    train_image = "COCO_train2014_000000000009"
    assert source.image_path(train_image) == str(tmp_path / "train2014" / f"{train_image}.jpg")
    assert source.label_key("COCO_train2014_000000000009") == 9 and source.n_classes == 80
    with pytest.raises(UserError, match="'2007_000032' is not a COCO 2014 image name"):
        source.image_path("2007_000032")


def test_build_source_picks_coco_and_checks_the_class_count():
    assert isinstance(build_source(Config({"dataset": {"name": "coco", "root_dir": "x"}})), COCO)
    with pytest.raises(UserError, match="dataset.n_classes is 20 but coco has 80 classes"):
        build_source(Config({"dataset": {"name": "coco", "root_dir": "x", "n_classes": 20}}))


def test_a_labels_file_of_another_class_count_is_refused(tmp_path):
    path = str(tmp_path / "cls_labels.npy")
    save_npy(path, {2007000032: np.zeros(20, np.float32)}, allow_pickle=True)  # a VOC file
    with pytest.raises(UserError, match=r"holds labels of 20 classes but dataset.name coco has 80: "
                                        r".*tools.prepare_coco"):
        COCO(str(tmp_path), path).load_cls_labels()


# ---------------------------------------------------------------------------------------------
# One mask

def square(x0, y0, x1, y1):
    return [[x0, y0, x1, y0, x1, y1, x0, y1]]


@needs_pycocotools
def test_a_polygon_covers_the_pixels_inside_it():
    """COCO's coordinates: pixel (x, y) spans [x, x + 1) x [y, y + 1), so (1, 1)-(4, 3) is 3 x 2 pixels."""
    mask = instance_mask(square(1, 1, 4, 3), 5, 6)
    assert mask.dtype == bool and mask.shape == (5, 6) and mask.sum() == 6
    assert np.argwhere(mask).min(0).tolist() == [1, 1] and np.argwhere(mask).max(0).tolist() == [2, 3]


@needs_pycocotools
def test_uncompressed_and_compressed_rle_decode_to_the_same_mask():
    from pycocotools import mask as mask_api

    rng = np.random.default_rng(0)
    truth = rng.random((7, 9)) < 0.4
    assert np.array_equal(instance_mask(uncompressed_rle(truth), 7, 9), truth)
    compressed = mask_api.encode(np.asfortranarray(truth.astype(np.uint8)))
    assert np.array_equal(instance_mask(compressed, 7, 9), truth)
    starts_with_one = np.ones((2, 2), dtype=bool)
    assert uncompressed_rle(starts_with_one)["counts"][0] == 0  # COCO's runs start with the zeros


def instances():
    """A large person (label 1), a small car over it (label 3), a crowd of toothbrushes (label 80) touching both."""
    big, small, crowd = (np.zeros((6, 8), bool) for _ in range(3))
    big[0:5, 0:5] = True
    small[2:4, 2:4] = True
    crowd[3:6, 4:8] = True
    return [(3, False, 4.0, small), (1, False, 25.0, big), (80, True, 12.0, crowd)]


def test_area_order_draws_smaller_instances_on_top_and_annotation_order_the_later():
    by_area = compose_mask(instances(), 6, 8, crowd="background", order="area")
    by_file = compose_mask(instances(), 6, 8, crowd="background", order="annotation")
    assert by_area[2, 2] == 3 and by_file[2, 2] == 1  # the car over the person / the person, annotated later
    assert by_area[0, 0] == by_file[0, 0] == 1 and by_area[5, 7] == by_file[5, 7] == 0  # crowd dropped


def test_crowd_as_object_background_or_ignore():
    as_object = compose_mask(instances(), 6, 8, crowd="object", order="area")
    ignored = compose_mask(instances(), 6, 8, crowd="ignore", order="area")
    dropped = compose_mask(instances(), 6, 8, crowd="background", order="area")
    assert as_object[5, 7] == 80 and ignored[5, 7] == 255 and dropped[5, 7] == 0
    # where a crowd overlaps an instance: drawn by area as an object (12 < 25: over the person), the instance otherwise
    assert as_object[4, 4] == 80 and ignored[4, 4] == 1 and dropped[4, 4] == 1


# ---------------------------------------------------------------------------------------------
# A whole root

def write_root(root, unannotated_val=True):
    """train: image 1 (person + crowd of cars), image 2 (no annotation); val: image 3 (toothbrush), image 4
    (none, when unannotated_val). 8x6 images."""
    layout = {"train": [(1, [dict(category_id=1, segmentation=square(0, 0, 5, 5), iscrowd=0, area=25.0),
                             dict(category_id=3, segmentation=uncompressed_rle(np.pad(np.ones((2, 3), bool),
                                                                                      ((4, 0), (5, 0)))),
                                  iscrowd=1, area=6.0)]),
                        (2, [])],
              "val": [(3, [dict(category_id=90, segmentation=square(2, 1, 6, 4), iscrowd=0, area=12.0)])]
              + ([(4, [])] if unannotated_val else [])}
    next_id = 1
    for split, images in layout.items():
        (root / f"{split}2014").mkdir(parents=True, exist_ok=True)
        entries, annotations = [], []
        for image_id, anns in images:
            name = image_name(split, image_id)
            Image.new("L" if image_id == 2 else "RGB", (8, 6), 128).save(root / f"{split}2014" / f"{name}.jpg")
            entries.append({"id": image_id, "file_name": name + ".jpg", "height": 6, "width": 8})
            for ann in anns:
                annotations.append({"id": next_id, "image_id": image_id, "bbox": [0, 0, 1, 1], **ann})
                next_id += 1
        save_json(str(root / "annotations" / f"instances_{split}2014.json"),
                  {"images": entries, "annotations": annotations,
                   "categories": [{"id": i, "name": n} for i, n in CATEGORIES]})
    return root


@needs_pycocotools
def test_prepare_writes_masks_labels_and_both_list_protocols(tmp_path):
    root = write_root(tmp_path / "coco")
    summary = prepare(root)
    names = {split: [image_name(split, i) for i in ids] for split, ids in (("train", (1, 2)), ("val", (3, 4)))}
    assert (root / "train_all.txt").read_text().split() == names["train"]
    assert (root / "train_annotated.txt").read_text().split() == names["train"][:1]
    assert (root / "val_all.txt").read_text().split() == names["val"]
    assert (root / "val_annotated.txt").read_text().split() == names["val"][:1]
    assert (root / "val_5000.txt").read_text().split() == names["val"][:1]
    assert summary["images"] == {"train": 2, "val": 2} and summary["annotated"] == {"train": 1, "val": 1}
    assert summary["crowd_annotations"] == {"train": 1, "val": 0} and summary["masks_written"] == 2
    assert summary["lists"]["train_all"] == {"images": 2, "sha1": list_digest(names["train"])}
    # default recipe: crowd drawn as its class (smaller than the person: on top), unannotated images skipped
    mask = read_label(str(root / "SegmentationClass" / f"{names['train'][0]}.png"))
    assert mask.shape == (6, 8) and mask[0, 0] == 1 and mask[5, 7] == 3 and mask[4, 5] == 3
    assert set(np.unique(read_label(str(root / "SegmentationClass" / f"{names['val'][0]}.png")))) == {0, 80}
    assert not (root / "SegmentationClass" / f"{names['train'][1]}.png").exists()
    labels = COCO(str(root), str(root / "cls_labels.npy")).labels_for(names["train"] + names["val"])
    assert labels.shape == (4, 80) and labels.sum(1).tolist() == [2, 0, 1, 0]
    assert labels[0, [0, 2]].tolist() == [1, 1] and labels[2, 79] == 1   # person, car (the crowd), toothbrush


@needs_pycocotools
def test_prepare_resumes_and_guards_the_recipe_of_a_mask_folder(tmp_path):
    root = write_root(tmp_path / "coco")
    prepare(root)
    assert prepare(root)["masks_written"] == 0  # every mask there: nothing to redo
    recam = {"crowd": "background", "order": "annotation", "unannotated": "write"}
    with pytest.raises(UserError, match=r"holds masks of another recipe \(crowd object -> background, order area -> "
                                        r"annotation, unannotated skip -> write\); pass --overwrite"):
        prepare(root, recam)
    summary = prepare(root, recam, overwrite=True)
    assert summary["masks_written"] == 4 and summary["masks"] == {"train": 2, "val": 2}
    mask = read_label(str(root / "SegmentationClass" / f"{image_name('train', 1)}.png"))
    assert mask[5, 7] == 0 and mask[0, 0] == 1  # ReCAM's: the crowd is background
    assert not read_label(str(root / "SegmentationClass" / f"{image_name('train', 2)}.png")).any()
    prepare(root, overwrite=True)  # back to the default: the unannotated images' masks go
    assert not (root / "SegmentationClass" / f"{image_name('train', 2)}.png").exists()


@needs_pycocotools
@pytest.mark.parametrize("broken", ["missing", "captions", "categories", "image"])
def test_prepare_refuses_bad_annotations_and_missing_images_before_writing(tmp_path, broken):
    root = write_root(tmp_path / "coco")
    annotations = root / "annotations" / "instances_val2014.json"
    if broken == "missing":
        annotations.unlink()
        expected = "instances_val2014.json does not exist; it comes from annotations_trainval2014.zip"
    elif broken == "captions":
        annotations.write_text(json.dumps({"images": [], "annotations": [{"caption": "a dog"}]}))
        expected = "is not a COCO instances file"
    elif broken == "categories":
        data = json.loads(annotations.read_text())
        data["categories"] = [{"id": i, "name": str(i)} for i in range(1, 92)]
        annotations.write_text(json.dumps(data))
        expected = "has 91 categories that are not COCO's 80 instance categories"
    else:
        (root / "val2014" / f"{image_name('val', 4)}.jpg").unlink()
        expected = r"lists 1 of 2 images that are not in .*val2014, e.g. COCO_val2014_000000000004; unzip val2014.zip"
    with pytest.raises(UserError, match=expected):
        prepare(root)
    assert not (root / "SegmentationClass").exists() and not (root / "cls_labels.npy").exists()


def test_without_pycocotools_the_error_says_how_to_install_it(tmp_path, monkeypatch):
    root = write_root(tmp_path / "coco")
    monkeypatch.setitem(sys.modules, "pycocotools", None)  # import pycocotools -> ImportError
    with pytest.raises(UserError, match="pycocotools is not installed; COCO users install it with "
                                        "pip install pycocotools"):
        prepare(root)
    assert not os.path.exists(root / "cls_labels.npy")


@needs_pycocotools
def test_a_coco_split_with_missing_images_is_named(tmp_path):
    root = write_root(tmp_path / "coco")
    prepare(root)
    (root / "train2014" / f"{image_name('train', 2)}.jpg").unlink()
    with pytest.raises(UserError, match=r"train.split .*train_all.txt names 1 of 2 images that are not in .*train2014"):
        COCO(str(root)).read_split(str(root / "train_all.txt"), "train.split")


# ---------------------------------------------------------------------------------------------
# The synthetic COCO-layout set and the tool on it

@needs_pycocotools
def test_the_synthetic_set_has_polygons_crowd_rle_unannotated_and_grayscale_images(tmp_path):
    from datasets.synthetic_coco import LOOK_CATEGORIES, ensure_dataset

    root = tmp_path / "coco"
    summary = ensure_dataset(root, n_train=40, n_val=8, min_size=40, max_size=48)
    assert summary["generated"] and summary["n_images"] == 48
    data = json.loads((root / "annotations" / "instances_train2014.json").read_text())
    annotations = data["annotations"]
    assert {a["category_id"] for a in annotations} <= set(LOOK_CATEGORIES) and len(data["categories"]) == 80
    crowds = [a for a in annotations if a["iscrowd"]]
    assert crowds and all(isinstance(a["segmentation"]["counts"], list) for a in crowds)
    assert all(isinstance(a["segmentation"], list) for a in annotations if not a["iscrowd"])
    annotated = {a["image_id"] for a in annotations}
    assert 0 < summary["annotated"]["train"] == len(annotated) < 40
    modes = {Image.open(root / "train2014" / f"{image_name('train', i + 1)}.jpg").mode for i in range(40)}
    assert modes == {"L", "RGB"}
    # the default recipe's masks give back the scene: every object of an image is in its mask
    for image_id in sorted(annotated)[:10]:
        mask = read_label(str(root / "SegmentationClass" / f"{image_name('train', image_id)}.png"))
        present = {CATEGORY_TO_LABEL[a["category_id"]] for a in annotations if a["image_id"] == image_id}
        assert present <= set(np.unique(mask).tolist()) <= present | {0}
    assert not ensure_dataset(root, n_train=40, n_val=8, min_size=40, max_size=48)["generated"]


def test_the_generator_leaves_a_folder_of_real_coco_images_alone(tmp_path):
    from datasets.synthetic_coco import generate

    (tmp_path / "train2014").mkdir()
    (tmp_path / "train2014" / "COCO_train2014_000000000009.jpg").write_bytes(b"a user's image")
    with pytest.raises(UserError, match="holds COCO images but no synthetic.json"):
        generate(tmp_path, n_train=2, n_val=1)
    assert (tmp_path / "train2014" / "COCO_train2014_000000000009.jpg").read_bytes() == b"a user's image"


@needs_pycocotools
def test_the_tool_prints_counts_and_checksums_and_fails_on_one_line(tmp_path):
    from tests.support import assert_clean_error, assert_ok, run

    root = write_root(tmp_path / "coco")
    out = assert_ok(run("-m", "tools.prepare_coco", "--root", str(root), "--num-workers", "2"))
    assert "crowd object, order area, unannotated skip; 2 written" in out
    assert "train2014: 2 images, 1 with an annotation, 1 crowd annotations, 1 masks" in out
    digest = list_digest([image_name("val", 3), image_name("val", 4)])
    assert f"| val_all.txt | 2 | {digest} |" in out
    out = assert_ok(run("-m", "tools.prepare_coco", "--root", str(root), "--unannotated", "write", "--overwrite"))
    assert "4 written" in out and "val2014: 2 images, 1 with an annotation, 0 crowd annotations, 2 masks" in out
    (root / "annotations" / "instances_train2014.json").unlink()
    assert_clean_error(run("-m", "tools.prepare_coco", "--root", str(root), "--unannotated", "write"),
                       "instances_train2014.json does not exist")


def test_the_generator_names_a_parameter_it_does_not_take(tmp_path):
    from datasets.synthetic_coco import ensure_dataset

    with pytest.raises(UserError, match="dataset.synthetic.n_train_aug is not a parameter of the COCO-layout "
                                        "generator"):
        ensure_dataset(tmp_path, n_train_aug=480)


def test_a_test_server_submission_is_for_voc_only(tmp_path):
    from wsss.submission import submission_names

    with pytest.raises(UserError, match="--submission makes an entry for the PASCAL VOC evaluation server; "
                                        "dataset.name is coco"):
        submission_names(COCO(str(tmp_path)), None)
