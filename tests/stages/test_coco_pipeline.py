"""The whole pipeline on COCO's layout: a tiny synthetic COCO 2014 set generated and prepared (masks, labels,
lists), then every stage of run.sh on configs/synthetic_coco.yaml, each output checked for the 81-class label
space (CAM keys 0..79, class ids up to 80, 81 IoU values), the unannotated images carried through, the CAMs
stored as float16 (cam.dtype) read by every later stage, and the table of scores."""
import importlib.util
import json
import os
import subprocess

import numpy as np
import pytest

from datasets.coco import CATEGORY_TO_LABEL
from datasets.files import read_label, read_name_list
from datasets.synthetic_coco import LOOK_CATEGORIES
from tests.support import ROOT

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(importlib.util.find_spec("pycocotools") is None,
                                 reason="pip install pycocotools (COCO only)")]

CONFIG = "configs/synthetic_coco.yaml"
LOOK_LABELS = {CATEGORY_TO_LABEL[category] for category in LOOK_CATEGORIES}  # the 20 label ids that occur, 1..80


def overrides(root):
    """12 train images (one without annotations), 4 val, 48-64 px; a step or two of each network."""
    return [f"dataset.root_dir={root / 'coco'}", f"exp.work_dir={root / 'work'}",
            "dataset.synthetic.n_train=12", "dataset.synthetic.n_val=4", "dataset.synthetic.min_size=48",
            "dataset.synthetic.max_size=64", "train.max_epochs=1", "train.crop_size=64", "train.resize_long=[48,64]",
            "train.tensorboard=false", "val.crop_size=64", "cam.scales=[1.0]", "cam.dtype=float16",
            "irn.train.max_epochs=1",
            "irn.train.crop_size=76", "irn.train.tensorboard=false", "pseudo_masks.pad_size=76",
            "seg.train.batch_size=2", "seg.train.max_iters=2", "seg.train.crop_size=32", "seg.train.tensorboard=false",
            "seg.infer.crf_workers=1"]


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory):
    root = tmp_path_factory.mktemp("coco_pipeline")
    result = subprocess.run(["bash", os.path.join(ROOT, "run.sh"), CONFIG, *overrides(root)], cwd=ROOT,
                            capture_output=True, text=True, timeout=900, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return root, result.stdout


def names(root, list_name):
    return read_name_list(str(root / "coco" / f"{list_name}.txt"))


def test_every_stage_writes_the_81_class_outputs(pipeline):
    root, _ = pipeline
    work = root / "work"
    train_all, annotated = names(root, "train_all"), names(root, "train_annotated")
    unannotated = sorted(set(train_all) - set(annotated))
    assert len(train_all) == 12 and unannotated  # the generator's images without annotations are in the all list
    keys = set()
    for name in train_all:  # CAMs of every image of the IRN's split (ir_labels.split), stored as float16
        record = np.load(work / "cams" / f"{name}.npy", allow_pickle=True).item()
        assert record["high_res"].dtype == record["cam"].dtype == np.float16
        keys |= set(record["keys"].tolist())
        if name in unannotated:
            assert record["keys"].size == 0 and record["high_res"].shape[0] == 0
    assert keys <= {label - 1 for label in LOOK_LABELS} and max(keys) >= 20  # 0-based keys past VOC's 20
    for folder, split in (("ir_labels", train_all), ("pseudo_masks", train_all)):
        for name in split:
            values = set(np.unique(read_label(str(work / folder / f"{name}.png"))).tolist())
            assert values <= LOOK_LABELS | {0, 255}, (folder, name, values)
            if name in unannotated and folder == "pseudo_masks":
                assert values == {0}  # no class: the walk leaves the image to the background
    val = names(root, "val_annotated")
    for folder in ("seg_labels", "seg_labels_crf"):
        for name in val:
            assert read_label(str(work / folder / f"{name}.png")).max() <= 80


def test_the_scores_cover_81_classes_and_print_one_table(pipeline):
    root, out = pipeline
    work = root / "work"
    for score_file, images in (("eval_cam.json", "train_annotated"), ("eval_pseudo_masks.json", "train_annotated"),
                               ("eval_seg.json", "val_annotated"), ("eval_seg_crf.json", "val_annotated")):
        score = json.loads((work / score_file).read_text())
        assert len(score["iou"]) == 81 and score["n_images"] == len(names(root, images)), score_file
        assert 0 <= score["miou"] <= 100 and score["iou"][0] is not None
    table = out[out.index("| stage | mIoU |"):]
    for row in ("| CAMs |", "| pseudo masks (IRN random walk) |", "| segmentation (DeepLab-v2) |", "+ CRF |"):
        assert row in table
    assert "train_annotated.txt" in table and "val_annotated.txt" in table
    assert "tbrush" in out and max(len(line) for line in out.splitlines() if "bkg" in line) <= 100
