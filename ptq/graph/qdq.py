"""The Q/DQ insertion pass: rules + ranges -> an explicitly quantized (QDQ) ONNX graph.

    plan_qdq(model, op_types, skip)  which tensor feeds which node slot through Q/DQ
    insert_qdq(model, plan, amaxes)  a new model with the pairs, scales and zero points

What TensorRT needs (TENSORRT.md §3): symmetric INT8 with an explicit INT8 zero point
of 0 on every Q and DQ, positive finite scales typed like the tensor they quantize
(float32; float16/bfloat16 in a float16 model, opset >= 19), per-channel weights with an
explicit `axis`, per-tensor activations, opset >= 13. One Q/DQ pair per tensor is
shared by every consumer that needs it; consumers that do not (pinned or unquantized
nodes) keep reading the float tensor. Weight scales are per-channel max|w| / 127,
as in ModelOpt and pytorch-quantization, floored so that no scale is ever zero.
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import Collection

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from ptq.calibrators import AMAX_FLOOR
from ptq.errors import CalibrationError, ModelLoadError
from ptq.graph.edit import copy_model, finalize
from ptq.graph.model import FLOAT_TYPES, data_dir, infer_types, set_data_dir
from ptq.graph.rules import RULES, GraphIndex, rule_key

log = logging.getLogger(__name__)

MIN_OPSET = 13  # the first opset with a per-channel `axis` on Q/DQ
FP16_OPSET = 19  # the first opset with float16/bfloat16 scales on Q/DQ (TENSORRT.md §3.3)
FLOAT_ELEM_TYPES = tuple(FLOAT_TYPES)
QDQ_OPS = ("QuantizeLinear", "DequantizeLinear")
_MIN_SCALE = np.finfo(np.float32).tiny  # subnormal scales lose precision or flush to zero


@dataclass(frozen=True)
class WeightQ:
    tensor: str
    axis: int | None      # None = per-tensor


@dataclass
class QdqPlan:
    """Which node input slots read a DQ output, decided before any scale is known."""

    activations: dict[str, list[tuple[int, int]]] = field(default_factory=dict)
    weights: dict[tuple[int, int], WeightQ] = field(default_factory=dict)
    groups: list[set[str]] = field(default_factory=list)   # tensors that share one scale
    int8_nodes: list[int] = field(default_factory=list)     # node indices, graph order
    notes: list[str] = field(default_factory=list)
    dtypes: dict[str, int] = field(default_factory=dict)    # planned tensor -> elem type when not FLOAT

    def activation_tensors(self) -> list[str]:
        return list(self.activations)

    @property
    def typed_scales(self) -> bool:
        """Whether some Q/DQ needs a float16/bfloat16 scale (so opset >= 19)."""
        return any(t in (TensorProto.FLOAT16, TensorProto.BFLOAT16) for t in self.dtypes.values())

    @property
    def pairs(self) -> int:
        return len(self.activations) + len(set(self.weights.values()))


def opset_of(model: onnx.ModelProto) -> int:
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 1)


def ensure_opset(model: onnx.ModelProto, minimum: int = MIN_OPSET) -> onnx.ModelProto:
    """The model itself when its opset is high enough, else an upgraded copy."""
    if opset_of(model) >= minimum:
        return model
    from onnx import version_converter

    try:
        out = version_converter.convert_version(model, minimum)
        set_data_dir(out, data_dir(model))          # lazily loaded weights stay where they are
        return out
    except Exception as exc:  # the converter raises bare RuntimeErrors
        raise ModelLoadError(f"cannot upgrade the model from opset {opset_of(model)} to "
                             f"{minimum} ({str(exc).splitlines()[0][:120]})",
                             hint=f"re-export the model with opset >= {minimum}") from None


def plan_qdq(model: onnx.ModelProto, op_types: Collection[str], skip: Collection[str] = (),
             *, per_channel: bool = True, index: GraphIndex | None = None) -> QdqPlan:
    """Apply the rules of `op_types` to every node not in `skip` (pinned or excluded)."""
    g = index or GraphIndex.of(model)
    plan = QdqPlan()
    for i, node in enumerate(g.nodes):
        key = rule_key(node, g)
        rule = RULES.get(key)
        if rule is None or key not in op_types or node.name in skip:
            continue
        slots = rule.activation_slots(node, g)
        w = rule.weight_slot(node, g)
        if w is not None and g.constant_dtype(node.input[w]) not in FLOAT_ELEM_TYPES:
            plan.notes.append(f"{node.name}: weight '{node.input[w]}' is not a float tensor; left unquantized")
            continue
        if not slots:
            continue
        for s in slots:
            plan.activations.setdefault(node.input[s], []).append((i, s))
        if w is not None:
            shape = g.constant_shape(node.input[w])
            axis = rule.axis(node, shape) if per_channel and rule.axis and len(shape) > 1 else None
            if axis is None and per_channel and rule.axis and len(shape) > 1:
                plan.notes.append(f"{node.name}: {rule.per_tensor_reason}; per-tensor weight scale used")
            plan.weights[(i, w)] = WeightQ(node.input[w], axis)
            if g.constant_dtype(node.input[w]) != TensorProto.FLOAT:
                plan.dtypes[node.input[w]] = g.constant_dtype(node.input[w])
        if rule.shared_scale:
            plan.groups.append({node.input[s] for s in slots})
        plan.int8_nodes.append(i)
    plan.groups.extend(concat_groups(g, plan, skip))
    plan.groups = _merge_groups(plan.groups)
    if low_precision(model):
        types = infer_types(model)
        plan.dtypes.update({t: types[t].elem_type for t in plan.activations
                            if t in types and types[t].elem_type != TensorProto.FLOAT})
    return plan


def concat_groups(g: GraphIndex, plan: QdqPlan, skip: Collection[str]) -> list[set[str]]:
    """ModelOpt's concat elimination: when a Concat's output is quantized, its quantized
    inputs take the same scale, so TensorRT, which moves the output's Q above the Concat,
    needs no DQ -> Q requantization on those inputs."""
    groups = []
    for node in g.nodes:
        if node.op_type != "Concat" or node.name in skip or not node.output \
                or node.output[0] not in plan.activations:
            continue
        inputs = {x for x in node.input if x in plan.activations}
        if inputs:
            groups.append({node.output[0], *inputs})
    return groups


def low_precision(model: onnx.ModelProto) -> bool:
    """Whether the model computes in float16/bfloat16 anywhere (weights, I/O or Casts):
    then Q/DQ scales must take the activation's type (opset 19)."""
    low = (TensorProto.FLOAT16, TensorProto.BFLOAT16)
    g = model.graph
    return any(t.data_type in low for t in g.initializer) \
        or any(v.type.tensor_type.elem_type in low for v in (*g.input, *g.output)) \
        or any(n.op_type == "Cast" and any(a.name == "to" and a.i in low for a in n.attribute)
               for n in g.node)


def _merge_groups(groups: list[set[str]]) -> list[set[str]]:
    """Union of overlapping shared-scale groups (a tensor feeding two Concats)."""
    merged: list[set[str]] = []
    for group in groups:
        group = set(group)
        for other in [m for m in merged if m & group]:
            group |= other
            merged.remove(other)
        merged.append(group)
    return merged


def int8_scale(amax: float) -> np.float32:
    """float32(amax) / 127, as TensorRT's cache writes it (TENSORRT.md §1.1)."""
    with np.errstate(over="ignore", under="ignore"):
        return np.float32(amax) / np.float32(127.0)


def activation_scales(plan: QdqPlan, amaxes: dict[str, float]) -> dict[str, np.float32]:
    """The scale of every planned tensor (a shared-scale group takes its largest amax).
    A NaN, zero, negative or float32-overflowing range is refused, never written."""
    amax = {}
    for name in plan.activations:
        value = amaxes[name]
        ok = isinstance(value, (int, float, np.floating)) and math.isfinite(value) and value > 0
        if not ok or not np.isfinite(int8_scale(value)) or int8_scale(value) < _MIN_SCALE:
            raise CalibrationError(f"tensor '{name}' has range {value!r}; an INT8 scale must be "
                                   "positive and finite",
                                   hint="recalibrate (ptq floors all-zero tensors), or exclude "
                                        "its consumers with --fp32")
        amax[name] = float(value)
    for group in plan.groups:
        shared = max(amax[n] for n in group if n in amax)
        amax.update({n: shared for n in group if n in amax})
    return {name: int8_scale(value) for name, value in amax.items()}


def weight_scale(w: np.ndarray, axis: int | None) -> np.ndarray:
    """max|w| / 127 per channel along `axis` (per-tensor when None), never zero."""
    if not np.all(np.isfinite(w)):
        raise ValueError("non-finite weight values")
    a = np.abs(w.astype(np.float32))
    amax = a.max() if axis is None else a.max(axis=tuple(d for d in range(w.ndim) if d != axis))
    amax = np.maximum(np.asarray(amax, np.float32), np.float32(AMAX_FLOOR))
    return (amax / np.float32(127.0)).astype(np.float32)


class UniqueNames:
    """Fresh node/tensor names that collide with nothing in the model (`base`, `base_1`, ...)."""

    def __init__(self, model: onnx.ModelProto) -> None:
        g = model.graph
        self.taken = {n.name for n in g.node} | {t.name for t in g.initializer} \
            | {x for n in g.node for x in (*n.input, *n.output)} | {i.name for i in g.input}

    def __call__(self, base: str) -> str:
        name, k = base, 0
        while name in self.taken:
            k += 1
            name = f"{base}_{k}"
        self.taken.add(name)
        return name


def typed_scale(scale: np.ndarray, elem_type: int) -> np.ndarray:
    """A float32 scale in the tensor's own type (TensorRT: an FP16/BF16 scale must match
    its input). Rounded up, never down, so no value calibration saw gets clipped, and
    floored at the type's smallest positive value so no scale is ever zero."""
    if elem_type in (TensorProto.FLOAT, TensorProto.DOUBLE):
        return scale.astype(np.float32)
    dtype = onnx.helper.tensor_dtype_to_np_dtype(elem_type)
    tiny = np.asarray(np.finfo(np.float16).smallest_subnormal if elem_type == TensorProto.FLOAT16
                      else 2.0 ** -133, dtype)
    out = np.asarray(scale, np.float32).astype(dtype)
    low = out.astype(np.float32) < scale
    out[low] = np.nextafter(out[low], np.asarray(np.inf, dtype)) if elem_type == TensorProto.FLOAT16 \
        else (out[low].astype(np.float32) * np.float32(1.0078125)).astype(dtype)
    return np.maximum(out, tiny).astype(dtype)


def _pair(names: UniqueNames, tensor: str, scale: np.ndarray, axis: int | None
          ) -> tuple[list[onnx.NodeProto], list[onnx.TensorProto], str]:
    """Q -> DQ on `tensor` with its own scale and INT8 zero-point initializers."""
    scale_name, zp_name = names(f"{tensor}_scale"), names(f"{tensor}_zero_point")
    q_out, dq_out = names(f"{tensor}_QuantizeLinear_Output"), names(f"{tensor}_DequantizeLinear_Output")
    kw = {} if axis is None else {"axis": axis}
    nodes = [helper.make_node("QuantizeLinear", [tensor, scale_name, zp_name], [q_out],
                              name=names(f"{tensor}_QuantizeLinear"), **kw),
             helper.make_node("DequantizeLinear", [q_out, scale_name, zp_name], [dq_out],
                              name=names(f"{tensor}_DequantizeLinear"), **kw)]
    inits = [numpy_helper.from_array(scale, scale_name),
             numpy_helper.from_array(np.zeros(scale.shape, np.int8), zp_name)]
    return nodes, inits, dq_out


def insert_qdq(model: onnx.ModelProto, plan: QdqPlan, amaxes: dict[str, float], *,
               check: bool = True) -> onnx.ModelProto:
    """A copy of `model` with the plan's Q/DQ pairs; `check=False` when another pass follows
    (the caller then ends with `ptq.graph.edit.finalize`).

    A weight computed from initializers (Identity/Transpose/Cast/Reshape chains) is
    folded into a new initializer that the Q/DQ pair reads, as ModelOpt's constant
    folding does: TensorRT wants a per-channel DQ rooted at a constant. The chain itself
    stays for any other reader (e.g. the Gather of a tied embedding)."""
    out = copy_model(model)
    g = GraphIndex.of(out)
    names = UniqueNames(out)
    scales = activation_scales(plan, amaxes)
    after: dict[int, list[onnx.NodeProto]] = {}          # producer index (-1 = front) -> Q/DQ
    inits: list[onnx.TensorProto] = []
    rewire: dict[tuple[int, int], str] = {}
    for tensor, slots in plan.activations.items():
        scale = typed_scale(np.asarray(scales[tensor]), plan.dtypes.get(tensor, TensorProto.FLOAT))
        nodes, new_inits, dq_out = _pair(names, tensor, scale, None)
        after.setdefault(g.producer.get(tensor, -1), []).extend(nodes)
        inits += new_inits
        rewire.update({slot: dq_out for slot in slots})
    done: dict[WeightQ, str] = {}
    for slot, wq in plan.weights.items():
        if wq not in done:
            w = g.constant_array(wq.tensor)
            try:
                scale = weight_scale(w, wq.axis)
            except ValueError as exc:
                raise ModelLoadError(f"weight '{wq.tensor}' has {exc}",
                                     hint="fix or re-export the model weights") from None
            scale = typed_scale(scale, onnx.helper.np_dtype_to_tensor_dtype(w.dtype))
            source, where = wq.tensor, g.producer.get(wq.tensor, -1)
            if not g.is_stored(wq.tensor):
                source, where = names(f"{wq.tensor}_folded"), -1
                inits.append(numpy_helper.from_array(w, source))
            nodes, new_inits, done[wq] = _pair(names, source, scale, wq.axis)
            after.setdefault(where, []).extend(nodes)
            inits += new_inits
            del w
        rewire[slot] = done[wq]
    for (i, s), name in rewire.items():
        out.graph.node[i].input[s] = name
    ordered = list(after.get(-1, []))
    for i, node in enumerate(out.graph.node):
        ordered.append(node)
        ordered.extend(after.get(i, []))
    del out.graph.node[:]
    out.graph.node.extend(ordered)
    out.graph.initializer.extend(inits)
    return finalize(out) if check else out
