"""wsss/evaluation.py: streaming and parallel scoring, one-pass threshold sweeps, label PNGs, missing files."""
import json
import shutil

import numpy as np
import pytest
from PIL import Image

from datasets.files import read_label, save_label_png
from datasets.voc import VOC
from engine.errors import UserError
from engine.files import save_npy
from wsss.evaluation import evaluate, score_images
from wsss.labels import cam_to_label
from wsss.metrics import confusion_matrix, scores

THRESHOLDS = [0.1, 0.15, 0.25]
VOC_IDS = 21


def paths(eval_set):
    root, names = eval_set
    return names, str(root / "cams"), str(root / "voc" / "SegmentationClassAug")


def evaluate_set(eval_set, tmp_path, kind="cam", thresholds=(0.14,), pred_dir=None, json_name="scores.json",
                 **options):
    names, cam_dir, gt_dir = paths(eval_set)
    source = VOC(str(eval_set[0] / "voc"))
    return evaluate(names, pred_dir or cam_dir, gt_dir, source, str(tmp_path / json_name), kind, list(thresholds),
                    num_workers=0, what="CAM files" if kind == "cam" else "label PNGs", **options)


def test_streaming_equals_one_confusion_over_all_images(eval_set):
    names, cam_dir, gt_dir = paths(eval_set)
    streamed = score_images(names, cam_dir, gt_dir, VOC_IDS, "cam", THRESHOLDS, num_workers=0, progress=False)
    gts, records = [], []
    for name in names:
        gts.append(read_label(f"{gt_dir}/{name}.png").ravel())
        records.append(np.load(f"{cam_dir}/{name}.npy", allow_pickle=True).item())
    for threshold, confusion in zip(THRESHOLDS, streamed):
        predictions = [cam_to_label(r["high_res"], r["keys"], threshold).ravel() for r in records]
        assert np.array_equal(confusion, confusion_matrix(np.concatenate(gts), np.concatenate(predictions), VOC_IDS))


def test_two_workers_equal_serial(eval_set):
    names, cam_dir, gt_dir = paths(eval_set)
    serial = score_images(names, cam_dir, gt_dir, VOC_IDS, "cam", THRESHOLDS, num_workers=0, progress=False)
    parallel = score_images(names, cam_dir, gt_dir, VOC_IDS, "cam", THRESHOLDS, num_workers=2, progress=False)
    assert serial.shape == (3, 21, 21) and serial.sum() > 0 and np.array_equal(serial, parallel)


@pytest.mark.parametrize("broken", ["corrupt", "rgb_label", "size", "keys"])
def test_errors_in_workers_reach_the_caller_as_user_errors(eval_set, tmp_path, broken):
    names, cam_dir, gt_dir = paths(eval_set)
    cam_dir = shutil.copytree(cam_dir, tmp_path / "cams")
    victim = names[2]
    if broken == "corrupt":
        (cam_dir / f"{victim}.npy").write_bytes(b"not a numpy file")
        expected = f"CAM file {cam_dir / victim}.npy is corrupt"
    elif broken == "rgb_label":
        gt_dir = shutil.copytree(gt_dir, tmp_path / "gt")
        Image.open(gt_dir / f"{victim}.png").convert("RGB").save(gt_dir / f"{victim}.png")
        expected = "is a RGB image"
    elif broken == "size":
        record = np.load(cam_dir / f"{victim}.npy", allow_pickle=True).item()
        record["high_res"] = record["high_res"][:, 1:]
        save_npy(cam_dir / f"{victim}.npy", record, allow_pickle=True)
        expected = "come from different images"
    else:
        record = np.load(cam_dir / f"{victim}.npy", allow_pickle=True).item()
        record["keys"] = record["keys"] + 20
        save_npy(cam_dir / f"{victim}.npy", record, allow_pickle=True)
        expected = "outside 0..19"
    with pytest.raises(UserError, match=expected.replace(".", r"\.")):
        score_images(names, str(cam_dir), str(gt_dir), VOC_IDS, "cam", THRESHOLDS, num_workers=2, progress=False)


def test_a_sweep_equals_separate_evaluations_and_plots(eval_set, tmp_path, capsys):
    sweep = evaluate_set(eval_set, tmp_path, thresholds=THRESHOLDS, sweep=True, json_name="sweep.json",
                         configured=0.15, plot_path=str(tmp_path / "sweep.png"))
    assert [row["bkgscore"] for row in sweep["sweep"]] == THRESHOLDS
    assert json.load(open(tmp_path / "sweep.json")) == sweep
    singles = [evaluate_set(eval_set, tmp_path, thresholds=[threshold], json_name=f"single_{threshold}.json")
               for threshold in THRESHOLDS]
    for row, single, threshold in zip(sweep["sweep"], singles, THRESHOLDS):
        assert "sweep" not in single and single["bkgscore"] == threshold
        assert {key: row[key] for key in ("miou", "pixel_acc", "mean_acc")} == \
               {key: single[key] for key in ("miou", "pixel_acc", "mean_acc")}
    best = max(singles, key=lambda single: single["miou"])
    assert sweep["bkgscore"] == best["bkgscore"]
    for key in ("miou", "iou", "pixel_acc", "mean_acc", "n_images"):
        assert sweep[key] == best[key], key
    out = capsys.readouterr().out
    assert "<- best" in out and "<- configured" in out and sweep["configured_bkgscore"] == 0.15
    assert f"per-class IoU at the best of 3 thresholds, bkgscore {sweep['bkgscore']:g}" in out
    assert f"at the configured bkgscore 0.15: mIoU {singles[1]['miou']:.2f}" in out
    with Image.open(tmp_path / "sweep.png") as image:
        assert image.format == "PNG" and image.size[0] > 100 and image.size[1] > 100


def test_label_pngs_score_as_the_cams_they_come_from(eval_set, tmp_path):
    root, names = eval_set
    for name in names:
        record = np.load(root / "cams" / f"{name}.npy", allow_pickle=True).item()
        save_label_png(str(tmp_path / "labels" / f"{name}.png"), cam_to_label(record["high_res"], record["keys"], 0.15))
    from_cams = evaluate_set(eval_set, tmp_path, thresholds=[0.15], json_name="cam.json")
    from_pngs = evaluate_set(eval_set, tmp_path, "png", [None], pred_dir=str(tmp_path / "labels"), json_name="png.json")
    for key in ("miou", "iou", "pixel_acc", "mean_acc", "n_images"):
        assert from_pngs[key] == from_cams[key], key
    assert from_pngs["type"] == "png" and from_pngs["bkgscore"] is None and from_pngs["unlabelled_pct"] == 0


def test_unlabelled_png_pixels_are_misses(eval_set, tmp_path):
    names, _, gt_dir = paths(eval_set)
    valid = unlabelled = 0
    for name in names:
        gt = read_label(f"{gt_dir}/{name}.png")
        prediction = gt.copy()
        prediction[0, :] = 255  # the top row left unlabelled, the rest right
        save_label_png(str(tmp_path / f"{name}.png"), prediction)
        valid += int((gt != 255).sum())
        unlabelled += int((gt[0] != 255).sum())
    confusion = score_images(names, str(tmp_path), gt_dir, VOC_IDS, "png", [None], num_workers=2, progress=False)[0]
    assert confusion.shape == (21, 22) and confusion[:, -1].sum() == unlabelled > 0
    assert scores(confusion)["pixel_acc"] == pytest.approx(100 * (valid - unlabelled) / valid)


def test_missing_files_are_an_error_or_skipped_when_allowed(eval_set, tmp_path, capsys):
    root, names = eval_set
    cam_dir = shutil.copytree(root / "cams", tmp_path / "cams")
    for name in names[1:3]:
        (cam_dir / f"{name}.npy").unlink()
    with pytest.raises(UserError, match=f"2 of {len(names)} CAM files are missing from {cam_dir}.*--allow-missing"):
        evaluate_set(eval_set, tmp_path, pred_dir=str(cam_dir))
    assert not (tmp_path / "scores.json").exists()

    result = evaluate_set(eval_set, tmp_path, pred_dir=str(cam_dir), allow_missing=True)
    out = capsys.readouterr().out
    assert f"2 of {len(names)} CAM files are missing" in out and names[1] in out and names[2] in out
    assert result["n_missing"] == 2 and result["missing"] == names[1:3]
    assert result["n_images"] == len(names) - 2
    kept = [names[0], *names[3:]]
    expected = scores(score_images(kept, str(cam_dir), str(root / "voc" / "SegmentationClassAug"), VOC_IDS, "cam",
                                   [0.14], num_workers=0, progress=False)[0])
    assert result["miou"] == expected["miou"] and result["iou"] == expected["iou"]

    for name in names:
        (cam_dir / f"{name}.npy").unlink(missing_ok=True)
    with pytest.raises(UserError, match=f"{len(names)} of {len(names)} CAM files are missing"):
        evaluate_set(eval_set, tmp_path, pred_dir=str(cam_dir), allow_missing=True)


# ---------------------------------------------------------------------------------------------
# COCO: 81 classes

def coco_set(tmp_path, gt_maps, predicted_maps):
    """A COCO source whose masks and predicted label PNGs are the given maps (val images 1..n)."""
    from datasets.coco import COCO, image_name

    root = tmp_path / "coco"
    names = [image_name("val", index + 1) for index in range(len(gt_maps))]
    for name, gt, prediction in zip(names, gt_maps, predicted_maps):
        save_label_png(str(root / "SegmentationClass" / f"{name}.png"), np.asarray(gt, np.uint8))
        save_label_png(str(tmp_path / "pred" / f"{name}.png"), np.asarray(prediction, np.uint8))
    return names, COCO(str(root)), str(root / "SegmentationClass"), str(tmp_path / "pred")


def test_coco_scores_81_classes_on_hand_made_confusions(tmp_path, capsys):
    # image 1: background, person (1) and toothbrush (80); image 2: car (3) half missed, 255 unscored
    gt = [[[0, 0, 1, 1, 80, 80]], [[3, 3, 3, 3, 255, 0]]]
    predicted = [[[0, 1, 1, 1, 80, 3]], [[3, 3, 0, 0, 80, 0]]]
    names, source, gt_dir, pred_dir = coco_set(tmp_path, gt, predicted)
    result = evaluate(names, pred_dir, gt_dir, source, str(tmp_path / "scores.json"), "png", [None], num_workers=0)
    iou = result["iou"]
    assert len(iou) == 81 and result["n_images"] == 2
    # IoU = TP / (gt + predicted - TP), pixels under a 255 not counted: background 2 / (3 + 4 - 2), person
    # 2 / (2 + 3 - 2), car 2 / (4 + 3 - 2), toothbrush 1 / (2 + 1 - 1)
    assert iou[0] == pytest.approx(100 * 2 / 5) and iou[1] == pytest.approx(100 * 2 / 3)
    assert iou[3] == pytest.approx(100 * 2 / 5) and iou[80] == pytest.approx(100 * 1 / 2)
    assert all(value is None for index, value in enumerate(iou) if index not in (0, 1, 3, 80))
    assert result["miou"] == pytest.approx(100 * (2 / 5 + 2 / 3 + 2 / 5 + 1 / 2) / 4)
    assert len(json.loads((tmp_path / "scores.json").read_text())["iou"]) == 81
    table = capsys.readouterr().out.split("mIoU ")[0]
    assert max(len(line) for line in table.splitlines()) <= 100 and "tbrush" in table and "person" in table


def test_coco_masks_with_raw_category_ids_are_refused(tmp_path):
    names, source, gt_dir, pred_dir = coco_set(tmp_path, [[[0, 1, 85, 90]]], [[[0, 1, 1, 1]]])
    with pytest.raises(UserError, match=r"label .*COCO_val2014_000000000001.png holds ids 85, 90 above 80 .*not "
                                        r"COCO's category ids 1..90 .*tools.prepare_coco"):
        evaluate(names, pred_dir, gt_dir, source, str(tmp_path / "scores.json"), "png", [None], num_workers=0)
    assert not (tmp_path / "scores.json").exists()


def test_images_without_a_mask_are_counted_before_scoring(tmp_path):
    names, source, gt_dir, pred_dir = coco_set(tmp_path, [[[0, 1]], [[0, 0]]], [[[0, 1]], [[0, 0]]])
    (tmp_path / "coco" / "SegmentationClass" / f"{names[1]}.png").unlink()
    with pytest.raises(UserError, match=r"1 of the 2 images scored have no ground truth .*COCO_val2014_000000000002\); "
                                        r"masks of the default recipe leave out the images without annotations"):
        evaluate(names, pred_dir, gt_dir, source, str(tmp_path / "scores.json"), "png", [None], num_workers=0)
