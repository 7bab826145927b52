import numpy as np
import pytest

from tools.metrics import cam_to_label, confusion_matrix, format_table, scores


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


def test_cam_to_label_maps_channels_to_class_ids_with_a_background_threshold():
    high_res = np.array([[[0.1, 0.9, 0.3]], [[0.2, 0.1, 0.6]]], dtype=np.float32)  # classes 4 and 14
    label = cam_to_label(high_res, np.array([4, 14]), bkgscore=0.25)
    assert label.tolist() == [[0, 5, 15]]
    assert cam_to_label(high_res, np.array([4, 14]), bkgscore=0.95).tolist() == [[0, 0, 0]]


def test_table_has_the_paper_columns():
    result = scores(np.eye(21, dtype=np.int64))
    table = format_table(result).splitlines()
    assert table[0].split()[:3] == ["bkg", "aero", "bike"] and table[0].split()[-2:] == ["tv", "mIoU"]
    assert table[1].split()[-1] == "100.0"
