"""wsss/metrics.py: confusion matrices, scores, and every background threshold of a CAM in one pass."""
import numpy as np
import pytest

from datasets.voc import TABLE_COLUMNS
from wsss.labels import cam_to_label
from wsss.metrics import (confusion_matrix, count_below, format_table, label_confusion, scores, sweep_confusions,
                          sweep_grid, top_cam)

VOC_IDS = 21  # background and the 20 VOC classes


def test_confusion_ignores_255_and_counts_rows_as_ground_truth():
    gt = np.array([[0, 1, 255], [1, 2, 2]])
    pred = np.array([[0, 2, 1], [1, 2, 0]])
    confusion = confusion_matrix(gt, pred, n_classes=3)
    assert confusion.tolist() == [[1, 0, 0], [0, 1, 1], [1, 0, 1]]


def test_scores_by_hand():
    confusion = np.array([[1, 0, 0], [0, 1, 1], [1, 0, 1]])
    result = scores(confusion)
    # IoU: bkg 1/(1+1+0)=.5, c1 1/(2+1-1)=.5, c2 1/(2+2-1)=1/3
    assert result["iou"] == pytest.approx([50.0, 50.0, 100 / 3])
    assert result["miou"] == pytest.approx((50 + 50 + 100 / 3) / 3)
    assert result["pixel_acc"] == pytest.approx(100 * 3 / 5)
    assert result["mean_acc"] == pytest.approx(100 * (1 + 0.5 + 0.5) / 3)


def test_classes_absent_from_ground_truth():
    # class 2 never in the ground truth: predicted once -> IoU 0 but not in mIoU; class 3 nowhere -> None
    gt = np.array([0, 0, 1, 1])
    pred = np.array([0, 2, 1, 1])
    result = scores(confusion_matrix(gt, pred, n_classes=4))
    assert result["iou"][:3] == pytest.approx([50.0, 100.0, 0.0])
    assert result["iou"][3] is None
    assert result["miou"] == pytest.approx(75.0)


def test_table_has_the_paper_columns():
    result = scores(np.eye(21, dtype=np.int64))
    table = format_table(result, TABLE_COLUMNS).splitlines()
    assert table[0].split()[:3] == ["bkg", "aero", "bike"] and table[0].split()[-2:] == ["tv", "mIoU"]
    assert table[1].split()[-1] == "100.0"


# ---------------------------------------------------------------------------------------------
# Threshold sweeps and label PNGs


def test_sweep_grid_is_the_36_thresholds_as_typed():
    grid = sweep_grid()
    assert len(grid) == 36 and grid[0] == 0.05 and grid[-1] == 0.4
    assert grid[2] == 0.07 and grid[9] == 0.14 and repr(grid[24]) == "0.29"


def test_sweep_confusions_by_hand():
    # one class (key 2 -> id 3); the pixel at 0.1 ties with the first threshold and stays background
    gt = np.array([[3, 3, 0, 255, 0]], dtype=np.uint8)
    high_res = np.array([[[0.1, 0.3, 0.2, 0.9, 0.05]]], dtype=np.float32)
    confusions = sweep_confusions(gt, high_res, np.array([2]), [0.1, 0.2], n_classes=4)
    # t=0.1: prediction [0, 3, 3, (ignored), 0]; t=0.2: [0, 3, 0, (ignored), 0]
    expected_low = np.zeros((4, 4), dtype=np.int64)
    expected_low[3, 0], expected_low[3, 3], expected_low[0, 3], expected_low[0, 0] = 1, 1, 1, 1
    expected_high = np.zeros((4, 4), dtype=np.int64)
    expected_high[3, 0], expected_high[3, 3], expected_high[0, 0] = 1, 1, 2
    assert confusions.tolist() == [expected_low.tolist(), expected_high.tolist()]


def test_sweep_equals_confusion_of_cam_to_label_with_ties_and_empty_images():
    rng = np.random.default_rng(0)
    levels = np.array([0.0, 0.1, 0.15, 0.2, 0.35, 0.5, 1.0], dtype=np.float32)  # CAM values on the thresholds
    for trial in range(300):
        n_keys = int(rng.integers(0, 4))  # 0: an image with no present class
        height, width = rng.integers(1, 7, size=2)
        keys = np.sort(rng.choice(20, n_keys, replace=False))
        high_res = rng.choice(levels, size=(n_keys, height, width))
        gt = rng.choice(np.concatenate([[0, 7, 255], keys + 1]), size=(height, width)).astype(np.uint8)
        thresholds = sorted(rng.choice([0.05, 0.1, 0.15, 0.2, 0.35, 0.5], size=int(rng.integers(1, 7)), replace=False))
        confusions = sweep_confusions(gt, high_res, keys, thresholds, VOC_IDS)
        for threshold, confusion in zip(thresholds, confusions):
            expected = confusion_matrix(gt, cam_to_label(high_res, keys, threshold), VOC_IDS)
            assert np.array_equal(confusion, expected), trial


def test_sweep_matches_at_float32_rounding():
    # 0.14 is not a float32: a CAM value of float32(0.14) is background (tie), the next float32 up is not
    tie = np.float32(0.14)
    high_res = np.array([[[tie, np.nextafter(tie, np.float32(1))]]], dtype=np.float32)
    gt = np.array([[1, 1]], dtype=np.uint8)
    confusion = sweep_confusions(gt, high_res, np.array([0]), [0.14], VOC_IDS)[0]
    assert np.array_equal(confusion, confusion_matrix(gt, cam_to_label(high_res, np.array([0]), 0.14), VOC_IDS))
    assert confusion[1, 0] == 1 and confusion[1, 1] == 1


def test_top_cam_is_max_and_first_argmax():
    rng = np.random.default_rng(1)
    cams = rng.choice(np.array([0.0, 0.5, 1.0], dtype=np.float32), size=(3, 200))
    top, top_key = top_cam(cams)
    assert np.array_equal(top, cams.max(axis=0)) and np.array_equal(top_key, cams.argmax(axis=0))


def test_sweep_refuses_unsorted_thresholds_and_nan():
    gt = np.zeros((1, 2), dtype=np.uint8)
    with pytest.raises(ValueError, match="ascending"):
        sweep_confusions(gt, np.zeros((1, 1, 2), np.float32), np.array([0]), [0.2, 0.1], VOC_IDS)
    with pytest.raises(ValueError, match="NaN"):
        sweep_confusions(gt, np.full((1, 1, 2), np.nan, np.float32), np.array([0]), [0.1], VOC_IDS)


def test_label_confusion_counts_unlabelled_predictions_as_misses():
    gt = np.array([0, 1, 1, 2, 255], dtype=np.uint8)
    pred = np.array([0, 1, 255, 2, 1], dtype=np.uint8)  # one gt-1 pixel left unlabelled (255)
    confusion = label_confusion(gt, pred, n_classes=3)
    assert confusion.tolist() == [[1, 0, 0, 0], [0, 1, 0, 1], [0, 0, 1, 0]]
    result = scores(confusion)
    assert result["iou"] == pytest.approx([100.0, 50.0, 100.0])  # class 1: TP 1, FN 1 (the 255), FP 0
    assert result["pixel_acc"] == pytest.approx(75.0)
    assert result["mean_acc"] == pytest.approx(100 * (1 + 0.5 + 1) / 3)
    # without unlabelled pixels it is the usual square confusion
    assert np.array_equal(label_confusion(gt, np.array([0, 1, 2, 2, 0]), 3)[:, :3],
                          confusion_matrix(gt, np.array([0, 1, 2, 2, 0]), 3))


def test_count_below_equals_searchsorted():
    rng = np.random.default_rng(2)
    grid = np.array(sweep_grid(), dtype=np.float32)
    special = np.concatenate([grid, np.nextafter(grid, np.float32(-1)), np.nextafter(grid, np.float32(2)),
                              np.array([0.0, -0.0, -0.3, 1.0, 7.5, np.inf, -np.inf], dtype=np.float32)])
    values = np.concatenate([special, rng.random(5000, dtype=np.float32), rng.normal(0, 1, 2000).astype(np.float32)])
    for thresholds in (grid, grid[::7], np.array([-0.5, 0.0, 0.2], np.float32),  # not all positive: binary search
                       np.array([1e-3, 0.5, 3.0, np.inf], np.float32), np.sort(rng.random(300)).astype(np.float32)):
        assert np.array_equal(count_below(values, thresholds), np.searchsorted(thresholds, values)), thresholds[:3]
    as_float64 = values.astype(np.float64)
    assert np.array_equal(count_below(as_float64, grid.astype(np.float64)), np.searchsorted(grid, as_float64))


def test_sweep_with_many_and_non_positive_thresholds_and_float64_cams():
    rng = np.random.default_rng(3)
    gt = rng.choice(np.array([0, 3, 9, 255], dtype=np.uint8), size=(7, 9))
    keys = np.array([2, 8])
    high_res = rng.choice(np.array([-0.1, 0.0, 0.1, 0.2, 0.5], dtype=np.float32), size=(2, 7, 9))
    for thresholds, cams in (([-0.1, 0.0, 0.05, 0.1, 0.2, 0.3], high_res), (sweep_grid(), high_res),
                             (sweep_grid(), high_res.astype(np.float64))):
        confusions = sweep_confusions(gt, cams, keys, thresholds, VOC_IDS)
        for threshold, confusion in zip(thresholds, confusions):
            assert np.array_equal(confusion, confusion_matrix(gt, cam_to_label(cams, keys, threshold), VOC_IDS))


def test_a_table_of_81_classes_wraps_into_blocks_that_fit_a_terminal():
    from datasets.coco import TABLE_COLUMNS as COCO_COLUMNS

    result = {"iou": [12.5] * 40 + [None] * 41, "miou": 12.5}
    lines = format_table(result, COCO_COLUMNS).splitlines()
    assert len(lines) % 2 == 0 and len(lines) <= 12 and max(len(line) for line in lines) <= 100
    headers = " ".join(lines[0::2]).split()
    cells = " ".join(lines[1::2]).split()
    assert headers == list(COCO_COLUMNS) + ["mIoU"] and cells == ["12.5"] * 40 + ["-"] * 41 + ["12.5"]
    for header_line, cell_line in zip(lines[0::2], lines[1::2]):
        assert len(header_line) == len(cell_line)  # each block's columns line up
    voc = format_table({"iou": [50.0] * 21, "miou": 50.0}, TABLE_COLUMNS).splitlines()
    assert len(voc) == 2  # VOC's 21 classes stay on one line
