"""Evaluation metrics: the ones MONAI lacks checked against values worked out by hand."""

import json
import math

import numpy as np
import pytest
import torch

from monai_ext.metrics import boundary_f1, pixel_accuracies, segmentation_metrics, summarise


def _square(rows, cols, shape=(8, 8)):
    m = np.zeros(shape, dtype=bool)
    m[rows[0] : rows[1], cols[0] : cols[1]] = True
    return m


def _one_hot(labels, classes):
    return np.stack([labels == c for c in range(classes)]).astype(np.float32)


def test_boundary_f1_by_hand():
    gt = _square((2, 6), (2, 6))  # 4x4 square: 12 boundary pixels
    pred = _square((2, 6), (4, 8))  # the same square two pixels to the right
    # exact matches: the 4 pixels of the top and bottom rows in columns 4 and 5 -> P = R = 4/12
    assert boundary_f1(pred, gt, tolerance=0) == pytest.approx(1 / 3)
    # every boundary pixel lies within 2 pixels of the other boundary
    assert boundary_f1(pred, gt, tolerance=2) == 1.0
    # within 1 pixel: predicted right column (4 px) and the true left column (4 px) are 2 away -> P = R = 8/12
    assert boundary_f1(pred, gt, tolerance=1) == pytest.approx(2 / 3)
    # tolerance in mm: 0.5 mm pixels, 1 mm = 2 pixels
    assert boundary_f1(pred, gt, tolerance=1.0, spacing=(0.5, 0.5)) == 1.0
    assert boundary_f1(np.zeros((8, 8)), np.zeros((8, 8))) == 1.0
    assert boundary_f1(pred, np.zeros((8, 8))) == 0.0


def test_pixel_accuracy_mean_pixel_accuracy_and_miou_by_hand():
    gt = np.array([[0, 0, 1, 1], [0, 0, 1, 1], [2, 2, 2, 2], [0, 0, 0, 0]])
    pred = np.array([[0, 1, 1, 1], [0, 0, 1, 0], [2, 2, 0, 2], [0, 0, 0, 0]])
    m = pixel_accuracies(_one_hot(pred, 3), _one_hot(gt, 3))
    # correct: 13 of 16
    assert m["pixel_accuracy"] == pytest.approx(13 / 16)
    # recalls: background 7/8 (one 0 became 1), class 1 3/4, class 2 3/4
    assert m["mean_pixel_accuracy"] == pytest.approx((7 / 8 + 3 / 4 + 3 / 4) / 3)
    # IoU: background 7/(8+2)=7/10 ... union = gt 8 + pred 9 - 7 = 10; class 1: 3/(4+4-3)=3/5; class 2: 3/(4+3-3)=3/4
    assert m["miou"] == pytest.approx((7 / 10 + 3 / 5 + 3 / 4) / 3)


def test_segmentation_metrics_per_class_with_spacing():
    gt = np.zeros((10, 10), dtype=int)
    gt[2:6, 2:6] = 1
    gt[7:9, 1:9] = 2
    pred = gt.copy()
    pred[2:6, 6] = 1  # class 1 one column too wide: 20 px against 16
    m = segmentation_metrics(_one_hot(pred, 3), _one_hot(gt, 3), {1: "organ", 2: "vessel"}, spacing=(2.0, 1.0))
    assert m["dice_organ"] == pytest.approx(2 * 16 / (20 + 16))
    assert m["iou_organ"] == pytest.approx(16 / 20)
    assert m["precision_organ"] == pytest.approx(16 / 20)
    assert m["recall_organ"] == 1.0
    assert m["dice_vessel"] == 1.0 and m["hd95_vessel"] == 0.0 and m["surface_dice_vessel"] == 1.0
    # the extra column is 1 pixel = 1 mm along the second axis from the true edge
    assert m["hd95_organ"] == pytest.approx(1.0)
    assert set(m) >= {"pixel_accuracy", "mean_pixel_accuracy", "miou", "boundary_f1_organ", "asd_organ"}


def test_empty_class_conventions():
    gt = np.zeros((6, 6), dtype=int)
    gt[1:3, 1:3] = 1
    pred = gt.copy()
    # class 2 absent from both: a correct empty prediction
    m = segmentation_metrics(_one_hot(pred, 3), _one_hot(gt, 3))
    assert m["dice_class_2"] == 1.0 and m["precision_class_2"] == 1.0 and m["hd95_class_2"] == 0.0
    # class 2 predicted but absent from the ground truth: overlap 0, distances undefined
    pred[4, 4] = 2
    m = segmentation_metrics(_one_hot(pred, 3), _one_hot(gt, 3))
    assert m["dice_class_2"] == 0.0 and m["precision_class_2"] == 0.0 and math.isnan(m["hd95_class_2"])


def test_summary_leaves_out_undefined_values():
    rows = [
        {"case": "a", "dice": 0.5, "hd95": 2.0},
        {"case": "b", "dice": 1.0, "hd95": float("nan")},
        {"case": "c", "dice": 0.9, "hd95": 4.0},
    ]
    s = summarise(rows)
    assert s["dice"] == {
        "mean": pytest.approx(0.8),
        "std": pytest.approx(np.std([0.5, 1.0, 0.9])),
        "median": 0.9,
        "n": 3,
    }
    assert s["hd95"]["mean"] == 3.0 and s["hd95"]["n"] == 2
    json.dumps(s)


def test_mismatched_shapes_raise():
    with pytest.raises(ValueError, match="same one-hot shape"):
        segmentation_metrics(torch.zeros(2, 4, 4), torch.zeros(3, 4, 4))
