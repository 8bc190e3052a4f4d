"""Activations whose statistics follow exactly from their input's: y = Relu(x), Clip(x, 0, top).

For y = min(max(x, 0), top) every value of y is a value of x (or 0, or top), so one pass over
x can count both histograms (ptq/kernels.py `observe_relu`) and ONNX Runtime need not copy y
out at all. In CNNs these pairs are about half of all activation values (EfficientNet-Lite0:
6.2 M of 13.3 M per image), so the statistics pass reads about half as much.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import onnx

from ptq.graph.model import Activation
from ptq.graph.rules import GraphIndex


@dataclass(frozen=True)
class ReluOf:
    """y = min(max(x, 0), top): `top` is +inf for Relu or a Clip without a max."""

    source: str
    top: float


def relu_like(model: onnx.ModelProto, acts: list[Activation]) -> dict[str, ReluOf]:
    """y name -> its source, for float32 Relu/Clip(0, top > 0) nodes over an observed x.

    Only the first such consumer of an x is derived (one kernel pass serves one pair), and
    never from a derived x (its values are not in the pass)."""
    float32 = {a.name for a in acts if a.info.elem_type == onnx.TensorProto.FLOAT}
    index = GraphIndex.of(model)
    out: dict[str, ReluOf] = {}
    used: set[str] = set()
    for node in model.graph.node:
        if node.op_type not in ("Relu", "Clip") or node.domain not in ("", "ai.onnx") \
                or not node.input or not node.output:  # a custom op of that name is not a Relu
            continue
        x, y = node.input[0], node.output[0]
        if x not in float32 or y not in float32 or x in used or x in out:
            continue
        top = math.inf if node.op_type == "Relu" else _clip_top(node, index)
        if top is None:
            continue
        out[y] = ReluOf(x, top)
        used.add(x)
    return out


def _clip_top(node: onnx.NodeProto, index: GraphIndex) -> float | None:
    """The Clip's max when its min is exactly 0 and its max a positive float32 (inf if absent)."""
    lo, hi = _bound(node, 1, "min", index), _bound(node, 2, "max", index)
    if lo is None or hi is None or lo != 0.0 or not hi > 0.0:
        return None
    return hi


def _bound(node: onnx.NodeProto, slot: int, attr: str, index: GraphIndex) -> float | None:
    """A Clip bound as a float32 value; +-inf when absent; None when not a constant scalar."""
    default = -math.inf if attr == "min" else math.inf
    if len(node.input) > 1:  # opset >= 11: optional inputs
        name = node.input[slot] if slot < len(node.input) else ""
        if not name:
            return default
        if not index.is_constant(name):
            return None
        value = np.asarray(index.constant_array(name))
        if value.size != 1 or value.dtype != np.float32:
            return None
        return float(value.reshape(()))
    for a in node.attribute:  # opset 6-10: attributes (float32 defaults to +-FLT_MAX)
        if a.name == attr:
            return float(np.float32(a.f))
    return None if attr == "min" else float(np.finfo(np.float32).max)
