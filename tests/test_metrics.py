"""Per-output metrics: class axes by output kind, maps and boxes, pooled cosine, worst output.

Every expected value is worked out by hand in the test (or by scipy's independent
connected-component labelling), never produced by the code under test.
"""
from __future__ import annotations

import numpy as np
import pytest

from ptq.errors import ConfigError
from ptq.maps import box_f1, label_components, map_boxes, map_iou
from ptq.metrics import METRICS, compare_outputs, cosine, top1_agreement
from ptq.output_kinds import OutputSpec, infer_spec, output_specs, parse_spec_override


def softmax(x: np.ndarray, axis: int = -1) -> np.ndarray:
    e = np.exp(x - x.max(axis, keepdims=True))
    return e / e.sum(axis, keepdims=True)


# ------------------------------------------------------------------ which axis

def test_shape_rules():
    rng = np.random.default_rng(0)
    assert infer_spec((8, 1000)) == OutputSpec("classes", 1)
    assert infer_spec((8, 1)).kind == "tensor" and infer_spec((8,)).kind == "tensor"
    ctc = softmax(rng.normal(size=(2, 40, 6625)))          # CTC recognizer: probabilities
    assert infer_spec(ctc.shape, sample=ctc) == OutputSpec("sequence", 2)
    yolo8 = rng.normal(size=(1, 84, 8400)) * 100            # boxes in pixels + class logits
    spec = infer_spec(yolo8.shape, sample=yolo8)
    assert spec.kind == "detection" and spec.group_axis == 1
    yolo5 = rng.normal(size=(1, 25200, 85))
    assert infer_spec(yolo5.shape, sample=yolo5).group_axis == 2
    assert infer_spec((4, 1, 64, 64)).kind == "map"                       # DBNet
    assert infer_spec((4, 21, 64, 64)) == OutputSpec("dense", 1)          # segmenter NCHW
    assert infer_spec((4, 12, 12, 2), "NHWC") == OutputSpec("dense", 3)   # PNet NHWC
    assert infer_spec((4, 12, 12, 1), "NHWC").kind == "map"


def test_ctc_top1_is_per_frame_on_the_last_axis():
    """4 samples x 10 frames x 30 classes; 3 frames of sample 0 changed -> 37/40 agree.
    Axis 1 (frames) as the class axis would compare argmax over TIME: meaningless."""
    rng = np.random.default_rng(1)
    ref = softmax(rng.normal(size=(4, 10, 30)) * 3)
    cand = ref.copy()
    for t in (0, 4, 9):
        top = ref[0, t].argmax()
        cand[0, t, top] = 0.0
        cand[0, t, (top + 1) % 30] = 2.0
    specs = output_specs({"probs": ref})
    assert specs["probs"].class_axis == 2
    assert METRICS["top1"].score({"probs": ref}, {"probs": cand}, specs=specs) == pytest.approx(37 / 40)
    assert top1_agreement(ref, cand, axis=2) == pytest.approx(37 / 40)


def test_nhwc_top1_uses_the_channel_axis():
    """[N,H,W,2] face/background scores: per-pixel agreement over the last axis.
    5 of 2*4*4 = 32 pixels flipped -> 27/32."""
    rng = np.random.default_rng(2)
    ref = rng.normal(size=(2, 4, 4, 2))
    cand = ref.copy()
    flips = [(0, 0, 0), (0, 1, 2), (1, 3, 3), (1, 2, 0), (1, 0, 1)]
    for n, h, w in flips:
        cand[n, h, w] = ref[n, h, w][::-1]
    specs = output_specs({"prob": ref}, "NHWC")
    assert METRICS["top1"].score({"prob": ref}, {"prob": cand}, specs=specs) == pytest.approx(27 / 32)


def test_top1_does_not_apply_to_a_map():
    ref = np.zeros((2, 1, 8, 8))
    with pytest.raises(ConfigError, match="does not apply to any output.*map"):
        METRICS["top1"].score({"maps": ref}, {"maps": ref})


def test_user_override():
    assert parse_spec_override("out=sequence:2") == ("out", OutputSpec("sequence", 2))
    assert parse_spec_override("a/b:0=map:0.5")[1].threshold == 0.5
    assert parse_spec_override("h=detection")[1].group_axis == 1
    with pytest.raises(ConfigError, match="NAME=KIND"):
        parse_spec_override("out=softmax")
    ref = np.zeros((2, 5, 3))
    with pytest.raises(ConfigError, match="not outputs of the model"):
        output_specs({"y": ref}, overrides={"z": OutputSpec("tensor")})
    # NCHW by layout, but the user says the class axis is the last one
    specs = output_specs({"y": ref}, overrides=dict([parse_spec_override("y=classes:-1")]))
    assert specs["y"].class_axis == 2


# ------------------------------------------------------------------ pooled cosine

def test_cosine_is_pooled_over_the_whole_output():
    """Sample 0 = (3, 4) identical, sample 1 = (0, 1) vs (1, 0). Pooled: dot 25 over
    |(3,4,0,1)| |(3,4,1,0)| = 25/26. The per-sample mean would be (1 + 0)/2."""
    ref = np.array([[3.0, 4.0], [0.0, 1.0]])
    cand = np.array([[3.0, 4.0], [1.0, 0.0]])
    assert cosine(ref, cand) == pytest.approx(25 / 26)
    assert cosine(np.zeros(3), np.zeros(3)) == 1.0 and cosine(np.zeros(3), np.ones(3)) == 0.0


def test_detection_head_scores_are_not_hidden_by_boxes():
    """YOLOv8-like [1, 4+80, 1000]: boxes in pixels (hundreds) identical, class scores
    (0..1) scrambled. The whole-tensor cosine stays > 0.99; the score group does not, and
    the cosine metric is the worst group, flagged LOW."""
    rng = np.random.default_rng(3)
    boxes = rng.uniform(100, 600, size=(1, 4, 1000))
    scores = rng.uniform(0, 1, size=(1, 80, 1000)) ** 4
    ref = np.concatenate([boxes, scores], axis=1)
    cand = np.concatenate([boxes, rng.permutation(scores.ravel()).reshape(scores.shape)], axis=1)
    assert cosine(ref, cand) > 0.99
    expected = cosine(scores, cand[:, 4:])  # the score block alone
    assert expected < 0.5
    result = compare_outputs({"head": ref}, {"head": cand})
    assert result.specs["head"].kind == "detection"
    assert result.outputs["head"]["cosine[box]"] == pytest.approx(1.0)
    assert result.outputs["head"]["cosine[scores]"] == pytest.approx(expected)
    assert result.outputs["head"]["cosine"] == pytest.approx(expected)
    assert any("head cosine" in f for f in result.flags)


def test_multi_output_names_the_worst_output():
    """ONet-like: a 2-class face score (perfect) and 10 landmark coordinates (one sample
    off). top1 applies only to the score; cosine's worst is the landmarks, by name."""
    rng = np.random.default_rng(4)
    prob = softmax(rng.normal(size=(6, 2)))
    marks = rng.normal(size=(6, 10))
    bad = marks.copy()
    bad[2] = -bad[2]
    r = compare_outputs({"prob": prob, "landmarks": marks}, {"prob": prob, "landmarks": bad})
    assert r.worst["cosine"][0] == "landmarks"
    # [6,10] landmarks look like logits to a shape rule: top1 reads them too, but NAMED
    # (ONet's unnamed worst top-1 came from its landmark head): 5 of 6 argmaxes kept
    assert r.worst["top1"] == ("landmarks", pytest.approx(5 / 6))
    assert "worst output per metric" in "\n".join(r.lines())
    assert r.outputs["landmarks"]["cosine"] == pytest.approx(cosine(marks, bad))
    # ... and the user says what they are: top1 is then the face score's alone
    specs = output_specs({"prob": prob, "landmarks": marks},
                         overrides=dict([parse_spec_override("landmarks=tensor")]))
    r = compare_outputs({"prob": prob, "landmarks": marks}, {"prob": prob, "landmarks": bad},
                        specs=specs)
    assert r.worst["top1"] == ("prob", 1.0) and "top1" not in r.outputs["landmarks"]


# ------------------------------------------------------------------ maps and boxes

def test_map_iou_known_answer():
    """Ref text region 10x10 = 100 px, candidate shifted by 5 columns: intersection 50,
    union 150 -> 1/3. Values 0.2 stay below the 0.3 threshold."""
    ref = np.full((1, 1, 32, 32), 0.2)
    cand = ref.copy()
    ref[0, 0, 5:15, 5:15] = 0.9
    cand[0, 0, 5:15, 10:20] = 0.9
    assert map_iou(ref, cand) == pytest.approx(1 / 3)
    assert map_iou(ref, ref) == 1.0 and map_iou(cand * 0, cand * 0) == 1.0


def test_components_match_scipy():
    from scipy import ndimage

    rng = np.random.default_rng(5)
    for density in (0.3, 0.55, 0.7):
        mask = rng.random((60, 80)) < density
        ours, k = label_components(mask)
        theirs, k2 = ndimage.label(mask)  # 4-connectivity by default
        assert k == k2
        # same partition: a bijection between label values
        pairs = set(zip(ours[mask].tolist(), theirs[mask].tolist()))
        assert len(pairs) == k


def test_boxes_and_box_agreement_known_answer():
    """Two text lines in the reference; the candidate finds the first (slightly thinner:
    IoU 0.8), merges nothing, misses the second and adds a spurious blob. A 2x2 speck is
    under the 3-pixel minimum side and ignored. F1 = 2*1 / (2 + 2) = 0.5."""
    ref = np.zeros((1, 1, 40, 60), np.float32)
    ref[0, 0, 2:12, 5:55] = 0.9          # box (5, 2, 55, 12)
    ref[0, 0, 20:30, 5:35] = 0.8         # box (5, 20, 35, 30)
    ref[0, 0, 36:38, 50:52] = 0.9        # speck
    cand = np.zeros_like(ref)
    cand[0, 0, 3:11, 5:55] = 0.9         # 8 rows of 10: IoU 0.8
    cand[0, 0, 30:36, 40:50] = 0.5       # spurious
    assert map_boxes(ref[0, 0]).tolist() == [[5, 2, 55, 12], [5, 20, 35, 30]]
    assert box_f1(ref, cand) == pytest.approx(0.5)
    assert box_f1(ref, ref) == 1.0


def test_map_output_gets_map_metrics_and_no_top1():
    ref = np.zeros((2, 1, 16, 16), np.float32)
    ref[:, 0, 2:8, 2:12] = 0.9
    r = compare_outputs({"maps": ref}, {"maps": ref * 0.2})   # 0.18 < 0.3: everything lost
    assert set(r.outputs["maps"]) == {"cosine", "map-iou", "box-f1", "max-abs"}
    assert r.outputs["maps"]["map-iou"] == 0.0 and r.outputs["maps"]["box-f1"] == 0.0
    assert r.outputs["maps"]["cosine"] == pytest.approx(1.0)  # scaled: cosine cannot see it
    assert any("map-iou" in f for f in r.flags)               # ... the summary still does
