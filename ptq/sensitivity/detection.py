"""Detection metrics in pure numpy: AP@0.5 (VOC-style) and mAP@[.5:.95] (COCO-style).

Matching (per image and class, detections in descending score order, ties kept in
input order): a detection is a true positive when its best still-unmatched ground
truth box of the same class has IoU >= the threshold (COCO's rule; VOC uses
IoU > 0.5 and does not fall back to a second-best box). Boxes are continuous
(x1, y1, x2, y2); there is no VOC-2007 "+1 pixel".

Interpolation of the precision/recall curve (recall r_i, precision p_i after the
i-th detection; the envelope P(r) = max precision at any recall >= r):

    all-points (VOC 2010+):  AP = sum_i (r_i - r_{i-1}) * P(r_i)
    voc11      (VOC 2007):   AP = mean over t in {0, 0.1, ..., 1} of P(t)
    coco101    (COCO):       AP = mean over t in {0, 0.01, ..., 1} of P(t)

mAP averages over the classes that have ground truth. `map50` = all-points AP at
IoU 0.5; `map` = COCO 101-point AP averaged over IoU 0.50:0.05:0.95.

The built-in scorers take a user *decoder* hook that turns the raw outputs into
per-image detections, and the ground truth from the evaluation labels (an npz
`labels` array [N, K, 5] of rows (class, x1, y1, x2, y2), rows with class < 0
padding; or, from Python, a list of [k, 5] arrays).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np

from ptq.errors import ConfigError, DataError, PtqError
from ptq.maps import box_iou as iou_matrix  # one IoU for text boxes and detections
from ptq.sensitivity.hooks import EvalMeta, checked_score, load_hook

COCO_IOUS = tuple(np.round(np.linspace(0.5, 0.95, 10), 2))
DECODER_CONTRACT = ("decoder(outputs, meta) -> one item per image: {'boxes': [k,4] x1y1x2y2, "
                    "'scores': [k], 'classes': [k]} or a (boxes, scores, classes) tuple")


@dataclass(frozen=True)
class Detections:
    boxes: np.ndarray    # [k, 4] x1, y1, x2, y2
    scores: np.ndarray   # [k]
    classes: np.ndarray  # [k] int


@dataclass(frozen=True)
class GroundTruth:
    boxes: np.ndarray    # [k, 4]
    classes: np.ndarray  # [k] int


def match_class(dets: Sequence[Detections], gts: Sequence[GroundTruth], cls: int,
                iou: float) -> tuple[np.ndarray, int]:
    """True-positive flags of class `cls` detections in descending score order, and #GT."""
    items = [(s, i, j) for i, d in enumerate(dets) for j, s in enumerate(d.scores)
             if d.classes[j] == cls]
    order = sorted(range(len(items)), key=lambda k: -items[k][0])  # stable: ties keep input order
    gt_boxes = [g.boxes[g.classes == cls] for g in gts]
    matched = [np.zeros(len(b), bool) for b in gt_boxes]
    tp = np.zeros(len(items), bool)
    for rank, k in enumerate(order):
        _, img, j = items[k]
        if not len(gt_boxes[img]):
            continue
        ious = iou_matrix(dets[img].boxes[j], gt_boxes[img])[0]
        ious[matched[img]] = -1.0
        best = int(np.argmax(ious))
        if ious[best] >= iou:
            matched[img][best] = True
            tp[rank] = True
    return tp, sum(len(b) for b in gt_boxes)


def average_precision(tp: np.ndarray, num_gt: int, interpolation: str = "all-points") -> float:
    """AP from true-positive flags in score order (see the module docstring)."""
    if num_gt <= 0:
        raise ValueError("AP is undefined without ground truth")
    tp = np.asarray(tp, bool)
    hits = np.cumsum(tp)
    recall = hits / num_gt
    precision = hits / np.arange(1, len(tp) + 1)
    if interpolation == "all-points":
        mrec = np.concatenate([[0.0], recall, [1.0]])
        mpre = np.maximum.accumulate(np.concatenate([[0.0], precision, [0.0]])[::-1])[::-1]
        steps = np.nonzero(mrec[1:] != mrec[:-1])[0]
        return float(np.sum((mrec[steps + 1] - mrec[steps]) * mpre[steps + 1]))
    points = {"voc11": np.linspace(0, 1, 11), "coco101": np.linspace(0, 1, 101)}.get(interpolation)
    if points is None:
        raise ValueError(f"unknown interpolation {interpolation!r}")
    envelope = np.maximum.accumulate(precision[::-1])[::-1] if len(tp) else precision
    idx = np.searchsorted(recall, points - 1e-12, side="left")
    return float(np.mean([envelope[i] if i < len(envelope) else 0.0 for i in idx]))


def per_class_ap(dets: Sequence[Detections], gts: Sequence[GroundTruth], *, iou: float = 0.5,
                 interpolation: str = "all-points") -> dict[int, float]:
    if len(dets) != len(gts):
        raise ValueError(f"{len(dets)} detection sets for {len(gts)} images")
    classes = sorted({int(c) for g in gts for c in g.classes})
    out = {}
    for cls in classes:
        tp, num_gt = match_class(dets, gts, cls, iou)
        out[cls] = average_precision(tp, num_gt, interpolation)
    return out


def mean_average_precision(dets: Sequence[Detections], gts: Sequence[GroundTruth], *,
                           iou: float = 0.5, interpolation: str = "all-points") -> float:
    """Mean AP over the classes that have ground truth."""
    aps = per_class_ap(dets, gts, iou=iou, interpolation=interpolation)
    if not aps:
        raise DataError("no ground-truth boxes in the evaluation labels",
                        hint="give an npz 'labels' array [N, K, 5] of (class, x1, y1, x2, y2)")
    return float(np.mean(list(aps.values())))


def coco_map(dets: Sequence[Detections], gts: Sequence[GroundTruth]) -> float:
    """COCO mAP@[.5:.95]: 101-point AP averaged over classes and 10 IoU thresholds."""
    return float(np.mean([mean_average_precision(dets, gts, iou=t, interpolation="coco101")
                          for t in COCO_IOUS]))


def ground_truth_from_labels(labels: Any) -> list[GroundTruth]:
    """[N, K, 5] array (class < 0 = padding) or a list of [k, 5] arrays -> per-image GT."""
    if labels is None:
        raise DataError("detection metrics need ground-truth boxes, but the data has no labels",
                        hint="use an npz with a 'labels' array [N, K, 5] of (class, x1, y1, x2, y2)")
    rows = list(labels) if not isinstance(labels, np.ndarray) or labels.ndim == 3 else None
    if rows is None:
        raise DataError(f"detection labels must be [N, K, 5]; got shape {np.shape(labels)}",
                        hint="store (class, x1, y1, x2, y2) rows per image, class -1 for padding")
    out = []
    for r in rows:
        r = np.asarray(r, np.float64).reshape(-1, 5)
        r = r[r[:, 0] >= 0]
        out.append(GroundTruth(boxes=r[:, 1:5], classes=r[:, 0].astype(np.int64)))
    return out


def as_detections(items: Any, num_images: int, name: str) -> list[Detections]:
    """Validate a decoder's return value (see DECODER_CONTRACT)."""
    try:
        items = list(items)
        out = []
        for it in items:
            boxes, scores, classes = ((it["boxes"], it["scores"], it["classes"])
                                      if isinstance(it, dict) else it)
            boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
            scores = np.asarray(scores, np.float64).reshape(-1)
            classes = np.asarray(classes).reshape(-1).astype(np.int64)
            if not len(boxes) == len(scores) == len(classes):
                raise ValueError("boxes, scores and classes differ in length")
            out.append(Detections(boxes, scores, classes))
    except (TypeError, ValueError, KeyError) as exc:
        raise PtqError(f"decoder '{name}' returned an unusable value ({exc})",
                       hint=DECODER_CONTRACT) from None
    if len(out) != num_images:
        raise PtqError(f"decoder '{name}' returned {len(out)} items for {num_images} images",
                       hint=DECODER_CONTRACT)
    return out


@dataclass(frozen=True)
class DetectionScorer:
    """`map50` / `map` over the decoder's detections and the labels' ground truth."""

    name: str
    decoder: Callable[..., Any]
    decoder_name: str
    higher_is_better: bool = True
    needs_labels: bool = True

    @classmethod
    def from_spec(cls, name: str, decoder: str | None) -> DetectionScorer:
        if name not in DETECTION_METRICS:
            raise ConfigError(f"unknown detection metric {name!r} ({', '.join(DETECTION_METRICS)})")
        if not decoder:
            raise ConfigError(f"metric '{name}' needs a decoder hook",
                              hint="add --decoder PKG.MODULE:FUNCTION; " + DECODER_CONTRACT)
        return cls(name, load_hook(decoder), decoder)

    def score(self, ref: dict[str, np.ndarray], cand: dict[str, np.ndarray],
              meta: EvalMeta) -> float:
        del ref
        gts = ground_truth_from_labels(meta.labels)
        try:
            raw = self.decoder(cand, meta.as_hook_arg())
        except PtqError:
            raise
        except Exception as exc:
            raise PtqError(f"decoder hook '{self.decoder_name}' raised {type(exc).__name__}: {exc}",
                           hint=DECODER_CONTRACT) from exc
        dets = as_detections(raw, len(gts), self.decoder_name)
        return checked_score(self.name, DETECTION_METRICS[self.name](dets, gts))


DETECTION_METRICS: dict[str, Callable[[Sequence[Detections], Sequence[GroundTruth]], float]] = {
    "map50": lambda d, g: mean_average_precision(d, g, iou=0.5, interpolation="all-points"),
    "map": coco_map,
}
