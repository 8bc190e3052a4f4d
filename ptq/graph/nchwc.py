"""Run elementwise ops, and expose activations, in ONNX Runtime's NCHWc blocks.

At level `all` on the CPU, ONNX Runtime runs convolutions in NCHWc: channels in blocks of 8
(AVX2) or 16 (AVX-512), memory [N, C/B, H, W, B]. An activation exposed as a graph output
gets a ReorderOutput back to NCHW, and an elementwise op between two convolutions (a Clip
whose input is exposed, a residual Add) then runs in NCHW between a ReorderOutput and a
ReorderInput. Statistics need neither: min, max and the |x| histogram do not depend on the
layout, and the per-channel sums only need to know it. `expose_blocked` rewrites ORT's own
optimized graph so that those tensors come out in blocks and those ops run on the blocks.
Measured on a 2-core AVX-512 CPU, EfficientNet-Lite0, batch 8: plain inference 8.5 ms an
image, with the activations exposed 13.4-17.4 ms, exposed in blocks 9.6 ms.

The same rewrite serves QDQ models (ptq's ORT level `nchwc`, ptq.backends.ort): with ORT's
Q/DQ fusions off, every per-tensor QuantizeLinear/DequantizeLinear pair sat between a
ReorderOutput and a ReorderInput; on the blocks, EfficientNet-Lite0's QDQ model runs in
16.9 ms an image instead of 40.2 at level `disable` (2-core CPU).

Only tensors whose channel count is a multiple of the block are rewritten: their blocks hold
no padding, so every value in them is a value of the NCHW tensor. The values themselves are
bit-identical: the same kernels compute them, and elementwise ops do not depend on layout.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

import onnx
from onnx import TensorProto, helper, numpy_helper

from ptq.graph.model import node_attribute, skeleton

NCHWC_DOMAIN = "com.microsoft.nchwc"
# Standard ops that compute each output value from the values at the same position: they
# run on NCHWc blocks unchanged when every data input has the output's shape.
_UNARY = {"Relu", "Clip", "Sigmoid", "Tanh", "LeakyRelu", "HardSigmoid", "HardSwish", "Abs",
          "Neg", "Elu", "Selu", "Softplus", "Exp", "Sqrt", "Identity"}
_BINARY = {"Add", "Sub", "Mul", "Div", "Max", "Min"}
# Q and DQ with a per-tensor scale (and zero point) are elementwise too; `_elementwise_on`
# takes them only when every input past the first is a scalar constant.
_QDQ = {"QuantizeLinear", "DequantizeLinear"}
# Integer kernels ORT's QDQ transformers fuse Q/DQ into (what `session.disable_quant_qdq`
# prevents): their arithmetic is not the ONNX Q/DQ graph's.
_INTEGER_KERNELS = ("QLinear", "QGemm", "QAttention", "QEmbed", "QOrdered", "Integer",
                    "DynamicQuantize", "MatMulNBits")


@dataclass(frozen=True)
class Blocked:
    """An activation that the rewritten graph outputs as `output`, in NCHWc blocks of `block`
    channels (its shape still reads [N, C, H, W])."""

    output: str
    block: int


def block_probe() -> onnx.ModelProto:
    """A one-op model whose output shape gives this CPU's NCHWc block: ReorderInput pads
    4 channels (it takes multiples of 4) to one block ([1, 4, 1, 1] -> [1, B, 1, 1])."""
    node = helper.make_node("ReorderInput", ["x"], ["y"], domain=NCHWC_DOMAIN)
    graph = helper.make_graph([node], "nchwc_block_probe",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 1, 1])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13),
                                                   helper.make_opsetid(NCHWC_DOMAIN, 1)], ir_version=8)


def expose_blocked(optimized: onnx.ModelProto, exposed: set[str],
                   shapes: Mapping[str, tuple | None], block: int
                   ) -> tuple[onnx.ModelProto, dict[str, Blocked]]:
    """ORT's optimized graph (level `all`, CPU, saved with `optimized_model_filepath`) with the
    `exposed` graph outputs that it reorders from NCHWc taken from the blocks instead.

    `shapes`: the NCHW shapes of the original tensors (shape inference). Returns the new model
    and {exposed name: where it now comes out}; an empty map leaves nothing to gain (the model
    is then returned unchanged)."""
    graph = optimized.graph
    if any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS)
           for n in graph.node for a in n.attribute):
        return optimized, {}  # subgraphs read the outer scope by name: left as ORT built it
    scalars = {t.name for t in graph.initializer if all(d == 1 for d in t.dims)}
    inits = {t.name: t for t in graph.initializer}
    readers = _readers(graph)
    blocks: dict[str, str] = {}      # NCHW name -> the same values in NCHWc blocks
    alias: dict[str, str] = {}       # a ReorderInput's output -> the blocks it reordered
    produced_here: dict[str, int] = {}  # NCHW names no node will produce after the rewrite
    nodes: list[onnx.NodeProto] = []
    for node in graph.node:
        node = _renamed_inputs(node, alias)
        if node.domain == NCHWC_DOMAIN and node.op_type == "ReorderOutput":
            if _unblocked_ok(node, shapes.get(node.output[0]), block):
                blocks[node.output[0]] = node.input[0]
        elif node.domain == NCHWC_DOMAIN and node.op_type == "ReorderInput":
            if node.input[0] in blocks and not node_attribute(node, "channels_last", 0):
                alias[node.output[0]] = blocks[node.input[0]]
                continue
        elif node.domain in ("", "ai.onnx") and _elementwise_on(node, blocks, shapes, scalars) \
                and (node.op_type != "QuantizeLinear" or
                     _only_moved_dequantizers(node, readers, scalars, shapes)):
            out = node.output[0]
            node = _on_blocks(node, blocks)
            split = _dequantize_as_cast_mul(node, inits)
            if split is not None:
                nodes.append(split[0])
                node = split[1]
            blocks[out] = node.output[0]
            produced_here[out] = len(nodes)
        nodes.append(node)
    outputs = [o.name for o in graph.output]
    mapping = {name: Blocked(blocks[name], block) for name in outputs
               if name in exposed and name in blocks}
    if not mapping and not alias:
        return optimized, {}
    # NCHW tensors still read by a node, or by a graph output left as it is
    wanted = {i for n in nodes for i in n.input} | {o for o in outputs if o not in mapping}
    restore = {produced_here[name]: name for name in produced_here if name in wanted}
    kept: list[onnx.NodeProto] = []
    for k, node in enumerate(nodes):
        if node.domain == NCHWC_DOMAIN and node.op_type == "ReorderOutput" \
                and node.output[0] not in wanted:
            continue  # read by nothing now, or only by the statistics, which take the blocks
        kept.append(node)
        if k in restore:
            name = restore[k]
            kept.append(helper.make_node("ReorderOutput", [blocks[name]], [name],
                                         domain=NCHWC_DOMAIN, channels=int(shapes[name][1]),
                                         name=f"{name}/ptq_reorder_output"))
    out = onnx.ModelProto()
    out.CopyFrom(optimized)
    del out.graph.node[:]
    out.graph.node.extend(kept)
    new_outputs = []
    for o in graph.output:
        if o.name in mapping:  # same type and (unpadded) shape, read from the blocks
            o = onnx.ValueInfoProto(name=mapping[o.name].output, type=o.type)
        new_outputs.append(o)
    del out.graph.output[:]
    out.graph.output.extend(new_outputs)
    return out, mapping



def _static_nchw(shape: tuple | None) -> bool:
    return shape is not None and len(shape) == 4 and all(isinstance(d, int) and d > 0 for d in shape[1:])


def _unblocked_ok(node: onnx.NodeProto, shape: tuple | None, block: int) -> bool:
    """A ReorderOutput to plain NCHW of a tensor whose blocks hold no padding."""
    return (_static_nchw(shape) and not node_attribute(node, "channels_last", 0)
            and node_attribute(node, "channels", 0) == shape[1] and shape[1] % block == 0)


def _elementwise_on(node: onnx.NodeProto, blocks: Mapping[str, str],
                    shapes: Mapping[str, tuple | None], scalars: set[str]) -> bool:
    """An elementwise op whose data inputs are all available in blocks, at its output's shape."""
    if len(node.output) != 1:
        return False
    if (node.op_type in _UNARY or node.op_type in _QDQ) and node.input:
        data = node.input[:1]
        if any(name and name not in scalars for name in node.input[1:]):
            return False  # Clip's bounds: constant scalars only
    elif node.op_type in _BINARY and len(node.input) == 2:  # Max/Min/Sum take any number
        data = node.input[:2]
    else:
        return False
    shape = shapes.get(node.output[0])
    return (len(data) > 0 and _static_nchw(shape)
            and all(d in blocks and _same(shapes.get(d), shape) for d in data))


def _same(a: tuple | None, b: tuple | None) -> bool:
    """Equal shapes: the channel and spatial dims static and equal, the batch dim the same."""
    return a is not None and b is not None and len(a) == len(b) == 4 and tuple(a[1:]) == tuple(b[1:]) \
        and (a[0] == b[0] or (not isinstance(a[0], int) and not isinstance(b[0], int)))


def _dequantize_as_cast_mul(node: onnx.NodeProto, inits: Mapping[str, onnx.TensorProto]
                            ) -> tuple[onnx.NodeProto, onnx.NodeProto] | None:
    """A per-tensor DequantizeLinear with a float32 scale and a zero point of 0 as Cast + Mul:
    the same float32 product, float(q) * scale, bit for bit (tests/test_nchwc.py), and
    faster in the whole model: ORT runs Mul on all its threads (Cast and DequantizeLinear on
    one; measured 1 -> 2 threads, 38 M values: DQ 104 -> 102 ms, Cast + Mul 138 -> 90 ms; on
    16 cores a QDQ EfficientNet-Lite0 took 1.26 s with DQ, 1.11 s with Cast + Mul, of which
    Cast is still half: bench/results/h200-2026-12-02-sensitivity-cpu16-profile.log)."""
    if node.op_type != "DequantizeLinear":
        return None
    scale = inits.get(node.input[1]) if len(node.input) > 1 else None
    zero = inits.get(node.input[2]) if len(node.input) > 2 and node.input[2] else None
    if scale is None or scale.data_type != TensorProto.FLOAT or \
            (len(node.input) > 2 and node.input[2] and zero is None):
        return None
    if zero is not None and (zero.data_type not in (TensorProto.INT8, TensorProto.UINT8)
                             or numpy_helper.to_array(zero).any()):
        return None
    cast = helper.make_node("Cast", [node.input[0]], [f"{node.output[0]}/ptq_cast"],
                            to=TensorProto.FLOAT, name=f"{node.name}/ptq_cast")
    mul = helper.make_node("Mul", [cast.output[0], node.input[1]], [node.output[0]],
                           name=f"{node.name}/ptq_scale")
    return cast, mul


def _readers(graph: onnx.GraphProto) -> dict[str, list[onnx.NodeProto | None]]:
    """name -> the nodes that read it (None for a graph output)."""
    out: dict[str, list[onnx.NodeProto | None]] = {}
    for node in graph.node:
        for name in node.input:
            out.setdefault(name, []).append(node)
    for o in graph.output:
        out.setdefault(o.name, []).append(None)
    return out


def _only_moved_dequantizers(node: onnx.NodeProto, readers: Mapping[str, list],
                             scalars: set[str], shapes: Mapping[str, tuple | None]) -> bool:
    """A QuantizeLinear whose integer output only per-tensor DequantizeLinears of its shape
    read: they move onto the blocks with it, so nothing needs that output back in NCHW
    (ReorderOutput takes float32 only)."""
    q = node.output[0]
    return all(r is not None and r.op_type == "DequantizeLinear" and r.domain in ("", "ai.onnx")
               and list(r.input[:1]) == [q] and len(r.output) == 1
               and all(not name or name in scalars for name in r.input[1:])
               and _same(shapes.get(r.output[0]), shapes.get(q))
               for r in readers.get(q, [None]))


def _renamed_inputs(node: onnx.NodeProto, alias: Mapping[str, str]) -> onnx.NodeProto:
    if not any(i in alias for i in node.input):
        return node
    out = onnx.NodeProto()
    out.CopyFrom(node)
    for k, name in enumerate(out.input):
        if name in alias:
            out.input[k] = alias[name]
    return out


def _on_blocks(node: onnx.NodeProto, blocks: Mapping[str, str]) -> onnx.NodeProto:
    """The node reading the blocked inputs, writing its output under a new name."""
    out = onnx.NodeProto()
    out.CopyFrom(node)
    data = 2 if node.op_type in _BINARY else 1
    for k in range(data):
        out.input[k] = blocks[node.input[k]]
    out.output[0] = f"{node.output[0]}/ptq_nchwc"
    return out


def integer_ops(model: onnx.ModelProto) -> set[str]:
    """The integer-kernel ops in an ORT-optimized graph (none when Q/DQ stayed ONNX ops)."""
    return {n.op_type for n in model.graph.node if any(k in n.op_type for k in _INTEGER_KERNELS)}


def tensor_shapes(model: onnx.ModelProto) -> dict[str, tuple | None]:
    """Every value's inferred shape (ints where static), for `expose_blocked`: inferred afresh
    (a stale value_info in the file, which ORT ignores, would let a broadcast pass for an
    elementwise op) on the weightless skeleton (with the weights: 80 ms a model)."""
    bare = skeleton(model)
    del bare.graph.value_info[:]
    for o in bare.graph.output:
        o.type.tensor_type.ClearField("shape")
    try:
        inferred = onnx.shape_inference.infer_shapes(bare)
    except Exception:  # a graph shape inference cannot follow: nothing is rewritten
        return {}
    out: dict[str, tuple | None] = {}
    for vi in [*inferred.graph.input, *inferred.graph.value_info, *inferred.graph.output]:
        t = vi.type.tensor_type
        out[vi.name] = tuple(d.dim_value if d.HasField("dim_value") else None
                             for d in t.shape.dim) if t.HasField("shape") else None
    return out
