"""Probability-map metrics (text detectors such as DBNet): pure numpy, no OpenCV.

A map output [N,1,H,W] has no class axis, so it is scored as users read it: the IoU of the
maps binarized at DBNet's threshold, and the agreement of the text boxes their connected
components yield (`box_f1`). ptq.metrics registers both as `map-iou` and `box-f1`.
"""
from __future__ import annotations

import numpy as np

from ptq.errors import ConfigError

MAP_THRESHOLD = 0.3     # DBNet's binarization threshold (PaddleOCR det_db_thresh)
BOX_IOU = 0.5           # a candidate text box matches a reference box at IoU >= 0.5
MIN_BOX_SIDE = 3        # PaddleOCR drops boxes whose shorter side is under 3 pixels


def _planes(x: np.ndarray) -> np.ndarray:
    """[N,1,H,W] / [N,H,W,1] / [N,H,W] -> [N,H,W]."""
    x = np.asarray(x)
    if x.ndim == 4:
        x = x[:, 0] if x.shape[1] == 1 else x[..., 0]
    if x.ndim != 3:
        raise ConfigError(f"map metrics need [N,1,H,W] maps; output has shape {x.shape}")
    return x


def map_iou(ref: np.ndarray, cand: np.ndarray, threshold: float = MAP_THRESHOLD) -> float:
    """IoU of the binarized maps, pooled over samples; two empty maps agree (1.0)."""
    r, c = _planes(ref) > threshold, _planes(cand) > threshold
    union = int(np.count_nonzero(r | c))
    return 1.0 if union == 0 else float(np.count_nonzero(r & c) / union)


def label_components(mask: np.ndarray) -> tuple[np.ndarray, int]:
    """4-connected components of a 2-D boolean mask -> (labels 0 = background, 1..k; k).

    Pure numpy: every foreground pixel points at the smallest index in its neighbourhood,
    then pointer jumping (p = p[p]) spreads the minimum; repeat until nothing changes.
    Converges in O(log diameter) rounds for compact shapes like text lines."""
    mask = np.asarray(mask, bool)
    h, w = mask.shape
    idx = np.arange(h * w).reshape(h, w)
    big = h * w
    p = np.where(mask, idx, big).ravel()
    p = np.append(p, big)  # p[big] = big: background points at the sentinel
    fg = mask.ravel()
    while True:
        q = p[:-1].reshape(h, w)
        m = q.copy()
        m[1:] = np.minimum(m[1:], np.where(mask[:-1] & mask[1:], q[:-1], big))
        m[:-1] = np.minimum(m[:-1], np.where(mask[1:] & mask[:-1], q[1:], big))
        m[:, 1:] = np.minimum(m[:, 1:], np.where(mask[:, :-1] & mask[:, 1:], q[:, :-1], big))
        m[:, :-1] = np.minimum(m[:, :-1], np.where(mask[:, 1:] & mask[:, :-1], q[:, 1:], big))
        new = np.append(np.where(fg, m.ravel(), big), big)
        new = np.minimum(new, new[new])  # pointer jumping
        new = new[new]
        if np.array_equal(new, p):
            break
        p = new
    roots = p[:-1]
    uniq, inv = np.unique(roots[fg], return_inverse=True)
    labels = np.zeros(h * w, np.int64)
    labels[fg] = inv + 1
    return labels.reshape(h, w), len(uniq)


def map_boxes(plane: np.ndarray, threshold: float = MAP_THRESHOLD,
              min_side: int = MIN_BOX_SIDE) -> np.ndarray:
    """Axis-aligned boxes [k, 4] (x1, y1, x2, y2; x2/y2 exclusive) of the connected
    components of `plane > threshold`, dropping those with a side under `min_side`."""
    labels, k = label_components(np.asarray(plane) > threshold)
    if k == 0:
        return np.zeros((0, 4), np.float64)
    ys, xs = np.nonzero(labels)
    lab = labels[ys, xs] - 1
    x1 = np.full(k, np.iinfo(np.int64).max); y1 = x1.copy()  # noqa: E702
    x2 = np.full(k, -1); y2 = x2.copy()  # noqa: E702
    np.minimum.at(x1, lab, xs); np.minimum.at(y1, lab, ys)  # noqa: E702
    np.maximum.at(x2, lab, xs); np.maximum.at(y2, lab, ys)  # noqa: E702
    boxes = np.stack([x1, y1, x2 + 1, y2 + 1], axis=1).astype(np.float64)
    keep = np.minimum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]) >= min_side
    return boxes[keep]


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of every box of `a` [n,4] with every box of `b` [m,4] -> [n, m]."""
    a, b = np.asarray(a, np.float64).reshape(-1, 4), np.asarray(b, np.float64).reshape(-1, 4)
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.prod(np.clip(rb - lt, 0, None), axis=2)
    area = lambda x: np.prod(np.clip(x[:, 2:] - x[:, :2], 0, None), axis=1)  # noqa: E731
    union = area(a)[:, None] + area(b)[None, :] - inter
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(union > 0, inter / union, 0.0)


def match_boxes(ref: np.ndarray, cand: np.ndarray, iou: float = BOX_IOU) -> int:
    """One-to-one matches at IoU >= `iou`, highest IoU first (greedy)."""
    m = box_iou(ref, cand)
    matched = 0
    while m.size and m.max() >= iou:
        i, j = np.unravel_index(int(np.argmax(m)), m.shape)
        matched += 1
        m[i, :] = -1.0
        m[:, j] = -1.0
    return matched


def box_f1(ref: np.ndarray, cand: np.ndarray, threshold: float = MAP_THRESHOLD,
           iou: float = BOX_IOU) -> float:
    """Text-box agreement of two map batches: 2 * matched / (#ref + #cand), pooled."""
    matched = total = 0
    for r, c in zip(_planes(ref), _planes(cand)):
        rb, cb = map_boxes(r, threshold), map_boxes(c, threshold)
        matched += match_boxes(rb, cb, iou)
        total += len(rb) + len(cb)
    return 1.0 if total == 0 else 2.0 * matched / total
