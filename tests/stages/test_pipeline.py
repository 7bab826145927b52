"""End to end through the real scripts: generate a tiny synthetic VOC, train, infer, evaluate; the VWL variants."""
import json
import math
import os

import numpy as np
import pytest
import torch

from datasets import synthetic
from datasets.files import read_image, read_label, read_name_list
from datasets.voc import VOC, name_to_int
from tests.support import assert_ok, run_stage

pytestmark = pytest.mark.slow
TINY = {"n_train_aug": 16, "n_train": 6, "n_val": 4, "min_size": 40, "max_size": 60, "seed": 3}


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("pipeline")
    overrides = [f"dataset.root_dir={root / 'voc'}", f"exp.work_dir={root / 'work'}",
                 *(f"dataset.synthetic.{key}={value}" for key, value in TINY.items()),
                 "model.k_words=16", "train.batch_size=4", "train.max_epochs=1", "train.crop_size=48",
                 "train.resize_long=[40,56]", "val.crop_size=48", "train.log_interval=1",
                 "cam.scales=[1.0,0.5,1.5]"]
    return root, overrides


def test_train_infer_eval(tiny_run):
    root, overrides = tiny_run
    out = assert_ok(run_stage("train_cam.py", *overrides))  # generates the dataset on first use
    assert "training 4 steps (1 epoch of 4)" in out
    work = root / "work"
    checkpoint = torch.load(work / "checkpoints" / "final.pth", weights_only=True)
    assert checkpoint["config"]["model"]["k_words"] == 16 and "model" in checkpoint
    log = [json.loads(line) for line in open(work / "train_log.jsonl")]
    steps = [r for r in log if "loss_cls" in r]
    assert len(steps) == 4 and {"loss_hist", "loss_word", "lr"} <= set(steps[0])
    assert {r["epoch"] for r in log} == {1}  # counted from 1, as the console does
    assert steps[0]["lr"][1] == pytest.approx(10 * steps[0]["lr"][0])
    assert steps[-1]["lr"][0] < steps[0]["lr"][0]  # poly decay
    assert any("val_loss" in r for r in log)

    assert_ok(run_stage("infer_cam.py", *overrides))
    names = read_name_list(str(root / "voc" / "train.txt"))
    source = VOC(str(root / "voc"), str(root / "voc" / "cls_labels.npy"))
    labels = source.load_cls_labels()
    for name in names:
        record = np.load(work / "cams" / f"{name}.npy", allow_pickle=True).item()
        height, width = read_image(source.image_path(name)).shape[:2]
        present = np.nonzero(labels[name_to_int(name)])[0]
        assert set(record) == {"keys", "cam", "high_res"}
        assert record["keys"].dtype == np.int64 and record["keys"].tolist() == present.tolist()
        assert record["cam"].dtype == np.float32 and record["high_res"].dtype == np.float32
        assert record["cam"].shape == (len(present), math.ceil(height / 4), math.ceil(width / 4))
        assert record["high_res"].shape == (len(present), height, width)
        assert record["high_res"].max() <= 1.0 and record["high_res"].min() >= 0.0
    assert not [f for f in os.listdir(work / "cams") if f.endswith(".tmp")]

    out = assert_ok(run_stage("eval_cam.py", *overrides))
    assert out.splitlines()[0].split()[:2] == ["bkg", "aero"]
    scores = json.load(open(work / "eval_cam.json"))
    assert len(scores["iou"]) == 21 and scores["bkgscore"] == 0.5  # the synthetic config's
    assert 0 <= scores["miou"] <= 100 and {"pixel_acc", "mean_acc"} <= set(scores)


def test_eval_scores_perfect_cams_100(tmp_path):
    """CAMs made from the ground truth itself must score 100 mIoU through eval_cam.py."""
    data = tmp_path / "voc"
    synthetic.generate(str(data), **TINY)
    cam_dir = tmp_path / "cams"
    cam_dir.mkdir()
    for name in read_name_list(str(data / "train.txt")):
        gt = read_label(str(data / "SegmentationClassAug" / f"{name}.png"))
        keys = np.array(sorted(set(np.unique(gt).tolist()) - {0, 255}), dtype=np.int64) - 1
        high_res = np.stack([(gt == k + 1).astype(np.float32) for k in keys])
        np.save(cam_dir / f"{name}.npy", {"keys": keys, "cam": high_res[:, ::4, ::4], "high_res": high_res})
    assert_ok(run_stage("eval_cam.py", f"dataset.root_dir={data}", f"exp.cam_dir={cam_dir}",
                        f"eval.json={tmp_path / 's.json'}"))
    scores = json.load(open(tmp_path / "s.json"))
    assert scores["miou"] == pytest.approx(100.0)
    assert scores["pixel_acc"] == pytest.approx(100.0)


def test_vwl_variants_train_through_the_script(tmp_path):
    data = tmp_path / "voc"
    synthetic.generate(str(data), n_train_aug=8, n_train=2, n_val=2, min_size=40, max_size=48, seed=1)
    common = [f"dataset.root_dir={data}", "dataset.synthetic=null", "model.k_words=8", "train.batch_size=4",
              "train.max_epochs=1", "train.crop_size=32", "train.resize_long=[32,48]", "val.crop_size=32"]
    variants = (("vwl_m", ["model.codebook=memory_bank", "model.detach_stage2=false"], {"cls", "word"}),
                ("vwl_l", ["model.decov_weight=1.0"], {"cls", "hist", "word", "decov"}))
    for name, extra, expected in variants:
        work = tmp_path / name
        assert_ok(run_stage("train_cam.py", *common, f"exp.work_dir={work}", *extra, timeout=300))
        steps = [json.loads(line) for line in open(work / "train_log.jsonl") if "loss_cls" in line]
        assert {key[5:] for key in steps[0] if key.startswith("loss_")} == expected
        assert all(np.isfinite(value) for step in steps for key, value in step.items() if key.startswith("loss_"))
        state = torch.load(work / "checkpoints/final.pth", weights_only=True)["model"]
        if name == "vwl_m":
            assert bool(state["word_encoder.initialised"])
