"""eval_cam.py: streaming and parallel scoring, one-pass threshold sweeps, label PNGs, missing files."""
import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from datasets import synthetic, voc
from eval_cam import main as eval_main
from eval_cam import score_images
from tools.errors import UserError
from tools.io import save_npy
from tools.metrics import cam_to_label, confusion_matrix, scores
from conftest import assert_ok, assert_clean_error

TINY = {"n_train_aug": 8, "n_train": 6, "n_val": 2, "min_size": 32, "max_size": 40, "seed": 5}
THRESHOLDS = [0.1, 0.15, 0.25]
CAM_LEVELS = np.array([0.0, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.6, 1.0], dtype=np.float32)  # ties on thresholds


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """A tiny synthetic VOC and, for its train split, CAM files in infer_cam.py's format (random values on
    a coarse grid, so that many pixels tie exactly with a threshold; the first image has no class)."""
    root = tmp_path_factory.mktemp("eval")
    synthetic.generate(str(root / "voc"), **TINY)
    names = voc.read_name_list(str(root / "voc" / "train.txt"))
    rng = np.random.default_rng(0)
    for index, name in enumerate(names):
        gt = voc.read_label(str(root / "voc" / "SegmentationClassAug" / f"{name}.png"))
        present = sorted(set(np.unique(gt).tolist()) - {0, 255})
        keys = np.array([] if index == 0 else [k - 1 for k in present], dtype=np.int64)
        high_res = rng.choice(CAM_LEVELS, size=(len(keys), *gt.shape))
        save_npy(root / "cams" / f"{name}.npy", {"keys": keys, "cam": high_res[:, ::4, ::4].copy(),
                                                 "high_res": high_res}, allow_pickle=True)
    return root, names


def cam_copy(dataset, tmp_path):
    """A CAM folder of the test's own, to break or thin out."""
    root, _ = dataset
    return shutil.copytree(root / "cams", tmp_path / "cams")


def eval_args(dataset, tmp_path, json_name):
    root, _ = dataset
    return ["--config", "configs/synthetic.yaml", f"dataset.root_dir={root / 'voc'}", "dataset.synthetic=null",
            f"exp.cam_dir={root / 'cams'}", f"eval.json={tmp_path / json_name}"]


def run_eval(repo_root, dataset, tmp_path, *args, json_name="scores.json"):
    """eval_cam.py in a process of its own, as a user runs it."""
    return subprocess.run([sys.executable, "eval_cam.py", *eval_args(dataset, tmp_path, json_name), *args],
                          cwd=repo_root, capture_output=True, text=True, timeout=300)


def eval_in_process(dataset, tmp_path, *args, json_name="scores.json"):
    """eval_cam.main in this process (no second torch import) -> the JSON it wrote."""
    eval_main([*eval_args(dataset, tmp_path, json_name), *args])
    with open(tmp_path / json_name) as handle:
        return json.load(handle)


def paths(dataset):
    root, names = dataset
    return names, str(root / "cams"), str(root / "voc" / "SegmentationClassAug")


def test_streaming_equals_one_confusion_over_all_images(dataset):
    names, cam_dir, gt_dir = paths(dataset)
    streamed = score_images(names, cam_dir, gt_dir, "cam", THRESHOLDS, num_workers=0, progress=False)
    gts, records = [], []
    for name in names:
        gts.append(voc.read_label(f"{gt_dir}/{name}.png").ravel())
        records.append(np.load(f"{cam_dir}/{name}.npy", allow_pickle=True).item())
    for threshold, confusion in zip(THRESHOLDS, streamed):
        predictions = [cam_to_label(r["high_res"], r["keys"], threshold).ravel() for r in records]
        assert np.array_equal(confusion, confusion_matrix(np.concatenate(gts), np.concatenate(predictions)))


def test_two_workers_equal_serial(dataset):
    names, cam_dir, gt_dir = paths(dataset)
    serial = score_images(names, cam_dir, gt_dir, "cam", THRESHOLDS, num_workers=0, progress=False)
    parallel = score_images(names, cam_dir, gt_dir, "cam", THRESHOLDS, num_workers=2, progress=False)
    assert serial.shape == (3, 21, 21) and serial.sum() > 0 and np.array_equal(serial, parallel)


@pytest.mark.parametrize("broken", ["corrupt", "rgb_label", "size"])
def test_errors_in_workers_reach_the_caller_as_user_errors(dataset, tmp_path, broken):
    names, _, gt_dir = paths(dataset)
    cam_dir = cam_copy(dataset, tmp_path)
    victim = names[2]
    if broken == "corrupt":
        (cam_dir / f"{victim}.npy").write_bytes(b"not a numpy file")
        expected = f"CAM file {cam_dir / victim}.npy is corrupt"
    elif broken == "rgb_label":
        gt_dir = shutil.copytree(gt_dir, tmp_path / "gt")
        Image.open(gt_dir / f"{victim}.png").convert("RGB").save(gt_dir / f"{victim}.png")
        expected = "is a RGB image"
    else:
        record = np.load(cam_dir / f"{victim}.npy", allow_pickle=True).item()
        record["high_res"] = record["high_res"][:, 1:]
        save_npy(cam_dir / f"{victim}.npy", record, allow_pickle=True)
        expected = "come from different images"
    with pytest.raises(UserError, match=expected.replace(".", r"\.")):
        score_images(names, str(cam_dir), str(gt_dir), "cam", THRESHOLDS, num_workers=2, progress=False)


def test_corrupt_file_from_a_worker_is_one_error_line(repo_root, dataset, tmp_path):
    root, names = dataset
    cam_dir = cam_copy(dataset, tmp_path)
    (cam_dir / f"{names[1]}.npy").write_bytes(b"\x93NUMPY garbage")
    result = run_eval(repo_root, dataset, tmp_path, f"exp.cam_dir={cam_dir}", "eval.num_workers=2")
    assert_clean_error(result, f"{names[1]}.npy", "corrupt")


def test_sweep_equals_separate_runs_and_plots(repo_root, dataset, tmp_path):
    out = assert_ok(run_eval(repo_root, dataset, tmp_path, f"cam.bkgscore={THRESHOLDS}", "eval.num_workers=2",
                             json_name="sweep.json"))
    sweep = json.load(open(tmp_path / "sweep.json"))
    assert [row["bkgscore"] for row in sweep["sweep"]] == THRESHOLDS
    singles = [eval_in_process(dataset, tmp_path, f"cam.bkgscore={threshold}", "eval.num_workers=0",
                               json_name=f"single_{threshold}.json") for threshold in THRESHOLDS]
    for row, single, threshold in zip(sweep["sweep"], singles, THRESHOLDS):
        assert "sweep" not in single and single["bkgscore"] == threshold
        assert {key: row[key] for key in ("miou", "pixel_acc", "mean_acc")} == \
               {key: single[key] for key in ("miou", "pixel_acc", "mean_acc")}
    best = max(singles, key=lambda single: single["miou"])
    assert sweep["bkgscore"] == best["bkgscore"]
    for key in ("miou", "iou", "pixel_acc", "mean_acc", "n_images", "split", "cam_dir"):
        assert sweep[key] == best[key], key
    assert "<- best" in out
    plot = tmp_path / "sweep_sweep.png"
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(plot) as image:
        assert image.size[0] > 100 and image.size[1] > 100
    assert not (tmp_path / f"single_{THRESHOLDS[0]}_sweep.png").exists()  # one threshold: no plot


def test_default_sweep_grid(dataset, tmp_path):
    result = eval_in_process(dataset, tmp_path, "--sweep", "eval.num_workers=2")
    assert len(result["sweep"]) == 36 and result["sweep"][2]["bkgscore"] == 0.07
    assert result["miou"] == max(row["miou"] for row in result["sweep"])
    assert (tmp_path / "scores_sweep.png").is_file()


def test_label_pngs_score_as_the_cams_they_come_from(dataset, tmp_path):
    root, names = dataset
    for name in names:
        record = np.load(root / "cams" / f"{name}.npy", allow_pickle=True).item()
        label = cam_to_label(record["high_res"], record["keys"], 0.15)
        voc.save_label_png(str(tmp_path / "labels" / f"{name}.png"), label)
    from_cams = eval_in_process(dataset, tmp_path, "cam.bkgscore=0.15", json_name="cam.json")
    from_pngs = eval_in_process(dataset, tmp_path, "cam.bkgscore=0.15", "--type", "png",
                                f"eval.png_dir={tmp_path / 'labels'}", json_name="png.json")
    for key in ("miou", "iou", "pixel_acc", "mean_acc", "n_images"):
        assert from_pngs[key] == from_cams[key], key
    assert from_pngs["type"] == "png" and from_pngs["bkgscore"] is None and from_pngs["unlabelled_pct"] == 0


def test_unlabelled_png_pixels_are_misses(dataset, tmp_path):
    names, _, gt_dir = paths(dataset)
    valid = unlabelled = 0
    for name in names:
        gt = voc.read_label(f"{gt_dir}/{name}.png")
        prediction = gt.copy()
        prediction[0, :] = 255  # the top row left unlabelled, the rest right
        voc.save_label_png(str(tmp_path / f"{name}.png"), prediction)
        valid += int((gt != 255).sum())
        unlabelled += int((gt[0] != 255).sum())
    confusion = score_images(names, str(tmp_path), gt_dir, "png", [None], num_workers=2, progress=False)[0]
    assert confusion.shape == (21, 22) and confusion[:, -1].sum() == unlabelled > 0
    assert scores(confusion)["pixel_acc"] == pytest.approx(100 * (valid - unlabelled) / valid)


def test_missing_files_are_an_error_or_skipped_with_allow_missing(repo_root, dataset, tmp_path, capsys):
    root, names = dataset
    cam_dir = cam_copy(dataset, tmp_path)
    for name in names[1:3]:
        (cam_dir / f"{name}.npy").unlink()
    line = assert_clean_error(run_eval(repo_root, dataset, tmp_path, f"exp.cam_dir={cam_dir}"),
                              f"2 of {len(names)} CAM files are missing", names[1], names[2], "--allow-missing")
    assert str(cam_dir) in line

    result = eval_in_process(dataset, tmp_path, f"exp.cam_dir={cam_dir}", "--allow-missing")
    out = capsys.readouterr().out
    assert f"2 of {len(names)} CAM files are missing" in out and names[1] in out and names[2] in out
    assert result["n_missing"] == 2 and result["missing"] == names[1:3]
    assert result["n_images"] == len(names) - 2
    kept = [names[0], *names[3:]]
    expected = scores(score_images(kept, str(cam_dir), str(root / "voc" / "SegmentationClassAug"), "cam", [0.14],
                                   num_workers=0, progress=False)[0])
    assert result["miou"] == expected["miou"] and result["iou"] == expected["iou"]

    for name in names:
        (cam_dir / f"{name}.npy").unlink(missing_ok=True)
    with pytest.raises(UserError, match=f"{len(names)} of {len(names)} CAM files are missing"):
        eval_in_process(dataset, tmp_path, f"exp.cam_dir={cam_dir}", "--allow-missing")


@pytest.mark.parametrize("args, message", [
    (["--type", "png", "eval.png_dir=/nowhere"], "label PNGs are missing from /nowhere.*eval.png_dir"),
    (["cam.bkgscore=[0.1,high]"], "cam.bkgscore must be a number"),
    (["eval.num_workers=-1"], "eval.num_workers must be"),
    (["--sweep", "cam.bkgscore=[0.1,0.2]"], "--sweep and a cam.bkgscore list"),
    (["--sweep", "--type", "png"], "label PNGs .* have none"),
])
def test_bad_settings(dataset, tmp_path, args, message):
    with pytest.raises(UserError, match=message):
        eval_in_process(dataset, tmp_path, *args)
