"""Known-answer tests for AP/mAP: every expected value is derived by hand in the comment above it."""
from __future__ import annotations

import numpy as np
import pytest

from ptq.sensitivity.detection import (Detections, GroundTruth, average_precision, coco_map,
                                       ground_truth_from_labels, iou_matrix,
                                       mean_average_precision, per_class_ap)


def dets(*rows):
    """rows of (class, score, x1, y1, x2, y2)."""
    a = np.asarray(rows, np.float64).reshape(-1, 6)
    return Detections(a[:, 2:], a[:, 1], a[:, 0].astype(int))


def gt(*rows):
    a = np.asarray(rows, np.float64).reshape(-1, 5)
    return GroundTruth(a[:, 1:], a[:, 0].astype(int))


def test_iou_known_values():
    # identical -> 1; half overlap along y: inter 10x5=50, union 100 -> 0.5; disjoint -> 0;
    # [0,0,10,10] vs [5,5,15,15]: inter 25, union 175 -> 1/7
    a = np.array([[0, 0, 10, 10]])
    b = np.array([[0, 0, 10, 10], [0, 0, 10, 5], [20, 20, 30, 30], [5, 5, 15, 15]])
    np.testing.assert_allclose(iou_matrix(a, b)[0], [1.0, 0.5, 0.0, 1 / 7])


def test_duplicate_and_miss_one_class():
    # GT: image A boxes g1 [0,0,10,10], g2 [20,20,30,30]; image B g3 [0,0,10,10]; 3 GT in all.
    # Detections by score: .9 on g1 (TP), .8 duplicate on g1 (FP), .7 in B far away (FP), .6 on g2 (TP).
    # precision 1, 1/2, 1/3, 1/2 at recall 1/3, 1/3, 1/3, 2/3.
    # all-points: envelope 1 up to recall 1/3, 1/2 up to 2/3 -> 1/3*1 + 1/3*1/2 = 0.5
    # voc11: t=0..0.3 -> 1 (4 points), t=0.4..0.6 -> 0.5 (3), t=0.7..1 -> 0 (4) -> 5.5/11 = 0.5
    # coco101: t<=0.33 -> 1 (34), 0.34..0.66 -> 0.5 (33), rest 0 (34) -> 50.5/101 = 0.5
    d = [dets((0, .9, 0, 0, 10, 10), (0, .8, 0, 0, 10, 10), (0, .6, 20, 20, 30, 30)),
         dets((0, .7, 50, 50, 60, 60))]
    g = [gt((0, 0, 0, 10, 10), (0, 20, 20, 30, 30)), gt((0, 0, 0, 10, 10))]
    for interp in ("all-points", "voc11", "coco101"):
        assert per_class_ap(d, g, interpolation=interp) == {0: pytest.approx(0.5)}


def test_interpolations_differ_on_half_recall():
    # 2 GT, one detection hitting one of them: recall 0.5 at precision 1.
    # all-points: 0.5 * 1 = 0.5; voc11: t = 0..0.5 -> 6 of 11 points = 6/11; coco101: 51/101.
    d, g = [dets((0, .9, 0, 0, 10, 10))], [gt((0, 0, 0, 10, 10), (0, 50, 50, 60, 60))]
    tp = np.array([True])
    assert average_precision(tp, 2, "all-points") == pytest.approx(0.5)
    assert average_precision(tp, 2, "voc11") == pytest.approx(6 / 11)
    assert average_precision(tp, 2, "coco101") == pytest.approx(51 / 101)
    assert mean_average_precision(d, g) == pytest.approx(0.5)


def test_precision_envelope_uses_later_higher_precision():
    # flags F, T, T with 2 GT: precision 0, 1/2, 2/3 at recall 0, 1/2, 1.
    # all-points: the envelope at recall 1/2 is max(1/2, 2/3) = 2/3 -> 1/2*2/3 + 1/2*2/3 = 2/3
    assert average_precision(np.array([False, True, True]), 2) == pytest.approx(2 / 3)


def test_mean_over_classes_with_ground_truth_only():
    # class 0: its one GT found at rank 1 -> AP 1. class 1: one GT, detection misplaced -> AP 0.
    # class 7 has detections but no GT: ignored (VOC/COCO). mAP = (1 + 0) / 2 = 0.5
    d = [dets((0, .9, 0, 0, 10, 10), (1, .8, 40, 40, 50, 50), (7, .99, 0, 0, 5, 5))]
    g = [gt((0, 0, 0, 10, 10), (1, 20, 20, 30, 30))]
    assert per_class_ap(d, g) == {0: 1.0, 1: 0.0}
    assert mean_average_precision(d, g) == pytest.approx(0.5)


def test_class_must_match_and_iou_threshold_is_inclusive():
    # a class-1 detection on a class-0 box is not a hit (AP 0). IoU exactly 0.5 ([0,0,10,5] vs
    # [0,0,10,10]) is a hit at 0.5 and a miss at 0.55.
    g = [gt((0, 0, 0, 10, 10))]
    assert mean_average_precision([dets((1, .9, 0, 0, 10, 10))], g) == 0.0
    half = [dets((0, .9, 0, 0, 10, 5))]
    assert mean_average_precision(half, g, iou=0.5) == 1.0
    assert mean_average_precision(half, g, iou=0.55) == 0.0


def test_coco_map_averages_iou_thresholds():
    # IoU of [0,0,10,7.2] with [0,0,10,10] = 72/100 = 0.72: a hit at IoU .50 .55 .60 .65 .70
    # (AP 1 each, 101-point) and a miss at .75 .. .95 (AP 0) -> mAP = 5/10 = 0.5
    assert coco_map([dets((0, .9, 0, 0, 10, 7.2))], [gt((0, 0, 0, 10, 10))]) == pytest.approx(0.5)


def test_second_best_ground_truth_is_used_when_best_is_taken():
    # two overlapping GT; det1 (.9) takes g1 (IoU 1); det2 (.8) has IoU 1 with g1 (taken) and
    # 0.6 with g2 = [0,0,10,6] -> COCO rule matches g2: both TP, recall 1, precision 1 -> AP 1
    d = [dets((0, .9, 0, 0, 10, 10), (0, .8, 0, 0, 10, 10))]
    g = [gt((0, 0, 0, 10, 10), (0, 0, 0, 10, 6))]
    assert mean_average_precision(d, g) == pytest.approx(1.0)


def test_ground_truth_from_padded_labels():
    labels = np.array([[[3, 0, 0, 5, 5], [-1, 0, 0, 0, 0]], [[1, 1, 1, 2, 2], [2, 0, 0, 9, 9]]])
    out = ground_truth_from_labels(labels)
    assert [g.classes.tolist() for g in out] == [[3], [1, 2]]
    np.testing.assert_array_equal(out[1].boxes, [[1, 1, 2, 2], [0, 0, 9, 9]])
