"""A Q/DQ model seen as its float graph plus "which inputs carry a Q/DQ pair".

TensorRT's placement rules (ptq.graph.rules) are written for the float graph: which input
of a residual Add fuses into the conv, what a conv's epilogue is. Linting a Q/DQ model from
any tool means stripping its Q/DQ nodes (weights and activations), running those rules on
the float skeleton, and remembering where each pair sat, with its scale.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

import numpy as np
import onnx
from onnx import helper, numpy_helper

from ptq.graph.rules import GraphIndex


@dataclass(frozen=True)
class QdqPair:
    """One activation QuantizeLinear -> DequantizeLinear pair (or a DQ of a weight)."""

    q: str | None        # Q node name (None for a weight stored as INT8 + DQ)
    dq: str              # DQ node name
    tensor: str          # the float tensor it quantizes
    dq_output: str
    scale: np.ndarray | None
    zero_point: np.ndarray | None
    weight: bool


@dataclass
class QdqView:
    model: onnx.ModelProto
    float_graph: onnx.GraphProto          # Q/DQ removed, consumers wired to the float tensor
    g: GraphIndex                         # index over float_graph
    inputs: dict[tuple[str, int], QdqPair] = field(default_factory=dict)  # (node, slot) -> pair
    pairs_of: dict[str, list[QdqPair]] = field(default_factory=dict)      # tensor -> its pairs

    def node(self, name: str) -> onnx.NodeProto:
        return self.g.nodes[self.index[name]]

    @cached_property
    def index(self) -> dict[str, int]:
        return {n.name: i for i, n in enumerate(self.g.nodes)}

    def quantized(self, node: str, slot: int) -> QdqPair | None:
        return self.inputs.get((node, slot))

    def is_int8_conv(self, i: int) -> bool:
        """A weighted op whose activation input carries Q/DQ: TensorRT runs it in INT8."""
        n = self.g.nodes[i]
        return n.op_type in ("Conv", "ConvTranspose", "Gemm", "MatMul") and \
            self.quantized(n.name, 0) is not None


def _const(model_consts: dict[str, onnx.TensorProto], name: str) -> np.ndarray | None:
    t = model_consts.get(name)
    return None if t is None else numpy_helper.to_array(t)


def build_view(model: onnx.ModelProto) -> QdqView:
    g0 = GraphIndex.build(model.graph)
    consts = {**g0.initializers, **g0.constant_nodes}
    alias: dict[str, QdqPair] = {}                    # DQ output -> pair
    stripped: set[int] = set()
    for i, node in enumerate(g0.nodes):
        if node.op_type != "DequantizeLinear":
            continue
        src = node.input[0]
        scale = _const(consts, node.input[1]) if len(node.input) > 1 else None
        zp = _const(consts, node.input[2]) if len(node.input) > 2 and node.input[2] else None
        if g0.is_constant(src):                          # INT8 weight + DQ
            alias[node.output[0]] = QdqPair(None, node.name, src, node.output[0], scale, zp, True)
            stripped.add(i)
            continue
        q_index = g0.producer.get(src)
        if q_index is None or g0.nodes[q_index].op_type != "QuantizeLinear":
            continue
        q = g0.nodes[q_index]
        weight = g0.is_constant(q.input[0])
        alias[node.output[0]] = QdqPair(q.name, node.name, q.input[0], node.output[0], scale, zp,
                                        weight)
        stripped.add(i)
        only_to_dq = all(g0.nodes[c].op_type == "DequantizeLinear"
                         for c, _ in g0.consumers.get(q.output[0], []))
        if only_to_dq and q.output[0] not in g0.graph_outputs:
            stripped.add(q_index)
    nodes = []
    inputs: dict[tuple[str, int], QdqPair] = {}
    for i, node in enumerate(g0.nodes):
        if i in stripped:
            continue
        new = onnx.NodeProto()
        new.CopyFrom(node)
        for slot, name in enumerate(node.input):
            pair = alias.get(name)
            if pair is not None:
                new.input[slot] = pair.tensor
                inputs[(node.name, slot)] = pair
        nodes.append(new)
    graph = helper.make_graph(nodes, model.graph.name, list(model.graph.input),
                              list(model.graph.output), list(model.graph.initializer))
    pairs_of: dict[str, list[QdqPair]] = {}
    for pair in alias.values():
        pairs_of.setdefault(pair.tensor, []).append(pair)
    return QdqView(model, graph, GraphIndex.build(graph), inputs, pairs_of)
