"""Q/DQ placement rules for TensorRT explicit quantization, one `Rule` per op type.

`RULES` is the single registry the Q/DQ pass, `quantizable_nodes` and the README
table read. A rule says which inputs of a node get a Q/DQ pair, which input is a
weight (per-channel, with its axis), and why (TENSORRT.md §3.4-3.6):

    Conv/ConvTranspose/Gemm/MatMul  activation input(s) + weight; never the output
                                    (grouped ConvTranspose: per-tensor weight)
    AttentionMatMul                 opt-in: MatMul of two activations (attention)
    Add                             only the residual input (the other one fuses into the conv)
    AveragePool/GlobalAveragePool/MaxPool   the input
    BatchNormalization/Clip/Mul/Concat/Resize/Upsample   opt-in only (`--op-types`)

`NOT_QUANTIZED` lists op types left float on purpose (Softmax, LayerNorm, GELU, pointwise
epilogues) with the reason. Bias inputs are never listed, so they stay float. `GraphIndex`
is the read-only view of the graph (producers, consumers, constants: anything computable
from initializers) the context-dependent rules look at.
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import onnx
from onnx import numpy_helper

WEIGHTED_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul")
# Ops TensorRT fuses into a preceding conv (its epilogue); ModelOpt walks the same chain.
_EPILOGUE_OPS = {"BatchNormalization", "Relu", "Clip", "MaxPool", "Sigmoid", "Mul", "Add"}
_COPY_OPS = {"Identity", "Reshape", "Flatten", "Squeeze", "Unsqueeze", "Transpose"}


# Ops whose outputs are constant when all their inputs are: anything deterministic.
# Random*, and ops holding subgraphs, are never folded.
_NOT_FOLDABLE = {"RandomNormal", "RandomNormalLike", "RandomUniform", "RandomUniformLike",
                 "Multinomial", "Bernoulli", "If", "Loop", "Scan", "QuantizeLinear",
                 "DequantizeLinear"}


@dataclass
class GraphIndex:
    """Producers, consumers and constant values of one graph, built once per pass.

    A tensor is constant ("a weight") when it can be computed from initializers alone:
    an initializer, a Constant node, or the output of any deterministic node whose inputs
    are all constant (PyTorch exports tied weights as Identity/Transpose/Cast of an
    initializer, biases as Reshape(Constant)). TensorRT folds those chains at build time;
    ptq reads their values by evaluating the chain with ONNX's reference evaluator.
    """

    nodes: list[onnx.NodeProto]
    producer: dict[str, int]
    consumers: dict[str, list[tuple[int, int]]]   # tensor -> [(node index, input slot)]
    initializers: dict[str, onnx.TensorProto]
    constant_nodes: dict[str, onnx.TensorProto]  # output of a Constant node -> its value
    graph_inputs: set[str]
    graph_outputs: set[str]
    folded: set[str] = field(default_factory=set)  # outputs of constant-foldable nodes
    data_dir: Path | None = None                 # folder of lazily loaded external weights
    _values: dict[str, np.ndarray] = field(default_factory=dict, repr=False)

    @classmethod
    def build(cls, graph: onnx.GraphProto, data_dir: Path | None = None) -> GraphIndex:
        producer, consumers, constant_nodes = {}, {}, {}
        inits = {t.name: t for t in graph.initializer}
        folded: set[str] = set()
        for i, node in enumerate(graph.node):
            for slot, name in enumerate(node.input):
                if name:
                    consumers.setdefault(name, []).append((i, slot))
            for name in node.output:
                if name:
                    producer[name] = i
            if node.op_type == "Constant" and node.output:
                value = next((a.t for a in node.attribute if a.name == "value"), None)
                if value is not None:
                    constant_nodes[node.output[0]] = value
                else:
                    folded.add(node.output[0])             # value_float(s)/value_int(s)/...
            elif node.input and node.op_type not in _NOT_FOLDABLE and node.domain in ("", "ai.onnx") \
                    and all(not x or x in inits or x in constant_nodes or x in folded
                            for x in node.input) \
                    and not any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS)
                                for a in node.attribute):
                folded.update(x for x in node.output if x)
        return cls(list(graph.node), producer, consumers, inits, constant_nodes,
                   {i.name for i in graph.input if i.name not in inits},
                   {o.name for o in graph.output}, folded, data_dir)

    @classmethod
    def of(cls, model: onnx.ModelProto) -> GraphIndex:
        from ptq.graph.model import data_dir

        return cls.build(model.graph, data_dir(model))

    def is_constant(self, name: str) -> bool:
        return name in self.initializers or name in self.constant_nodes or name in self.folded

    def is_stored(self, name: str) -> bool:
        """An initializer or Constant: a weight TensorRT reads as-is (no folding needed)."""
        return name in self.initializers or name in self.constant_nodes

    def constant_dtype(self, name: str) -> int:
        """The ONNX element type of a constant tensor."""
        if self.is_stored(name):
            proto = self.initializers[name] if name in self.initializers else self.constant_nodes[name]
            return proto.data_type
        return onnx.helper.np_dtype_to_tensor_dtype(self.constant_array(name).dtype)

    def constant_array(self, name: str) -> np.ndarray:
        if name in self._values:
            return self._values[name]
        if name in self.initializers:
            from ptq.graph.model import tensor_array

            value = tensor_array(self.initializers[name], self.data_dir)
        elif name in self.constant_nodes:
            value = numpy_helper.to_array(self.constant_nodes[name])
        elif name in self.folded:
            value = self._fold(name)
        else:
            raise KeyError(name)
        if name in self.folded:      # memoize chain results only (initializers may be huge)
            self._values[name] = value
        return value

    def _fold(self, name: str) -> np.ndarray:
        from onnx.reference import ReferenceEvaluator

        node = self.nodes[self.producer[name]]
        feeds = {x: self.constant_array(x) for x in node.input if x}
        try:
            outs = ReferenceEvaluator(node).run(None, feeds)
        except Exception as exc:  # an op the reference evaluator lacks
            from ptq.errors import ModelLoadError

            raise ModelLoadError(f"cannot compute the constant '{name}' ({node.op_type} "
                                 f"'{node.name}': {str(exc).splitlines()[0][:120] if str(exc) else type(exc).__name__})",
                                 hint="fold constants before quantizing (e.g. onnxsim or "
                                      "onnxruntime's offline optimizer), or --fp32 its consumer") from None
        for out, value in zip(node.output, outs):
            if out:
                self._values[out] = np.asarray(value)
        return self._values[name]

    def constant_shape(self, name: str) -> tuple[int, ...]:
        if name in self.initializers:
            return tuple(self.initializers[name].dims)
        if name in self.constant_nodes:
            return tuple(self.constant_nodes[name].dims)
        return tuple(self.constant_array(name).shape)

    def parents(self, index: int) -> list[int]:
        return [self.producer[x] for x in self.nodes[index].input if x in self.producer]


def _attr(node: onnx.NodeProto, name: str, default: int = 0) -> int:
    return next((a.i for a in node.attribute if a.name == name), default)


def conv_axis(node: onnx.NodeProto, shape: tuple[int, ...]) -> int:
    return 0                                           # W [K, C/g, kh, kw]: output channels


def conv_transpose_axis(node: onnx.NodeProto, shape: tuple[int, ...]) -> int | None:
    """Axis 1 of W[C, K/group, kh, kw]; with group > 1 axis 1 holds K/group entries, not
    one per output channel, and no single ONNX axis does: None = per-tensor."""
    return 1 if _attr(node, "group", 1) == 1 else None


def gemm_axis(node: onnx.NodeProto, shape: tuple[int, ...]) -> int:
    return 0 if _attr(node, "transB") else 1           # B is [N, K] with transB=1, else [K, N]


def matmul_axis(node: onnx.NodeProto, shape: tuple[int, ...]) -> int:
    return len(shape) - 1                              # B [..., K, N]: N (1 for a 2-D B)


def fusible_backbone(g: GraphIndex, index: int, depth: int = 6) -> int | None:
    """The Conv/ConvTranspose a node's output would fuse into (through BN, ReLU, Clip,
    bias Add/Mul, SiLU, MaxPool and copy ops), as in ModelOpt's `get_fusible_backbone`."""
    for _ in range(depth):
        node = g.nodes[index]
        if node.op_type in ("Conv", "ConvTranspose"):
            return index
        if node.op_type not in _EPILOGUE_OPS | _COPY_OPS:
            return None
        live = [x for x in node.input if x in g.producer and not g.is_constant(x)]
        if node.op_type == "Add" and len(live) > 1:    # a second residual, not a bias add
            return None
        if not live:
            return None
        index = g.producer[live[0]]
    return None


def _ancestor_distances(g: GraphIndex, start: int) -> dict[int, int]:
    dist, queue = {start: 0}, deque([start])
    while queue:
        cur = queue.popleft()
        for parent in g.parents(cur):
            if parent not in dist:
                dist[parent] = dist[cur] + 1
                queue.append(parent)
    return dist


def lowest_common_ancestor(g: GraphIndex, a: int, b: int) -> tuple[int | None, int, int]:
    """(ancestor, distance from a, distance from b) minimising the summed distance."""
    da, db = _ancestor_distances(g, a), _ancestor_distances(g, b)
    common = set(da) & set(db)
    if not common:
        return None, 0, 0
    best = min(common, key=lambda n: (da[n] + db[n], n))
    return best, da[best], db[best]


def residual_inputs(node: onnx.NodeProto, g: GraphIndex) -> tuple[int, ...]:
    """The residual input slot of a residual Add (ModelOpt's `build_non_residual_input_map`).

    The input on the longer path back to the two inputs' common ancestor comes out of a
    conv that TensorRT fuses the Add into: it stays float. The other (skip) input is the
    residual and gets Q/DQ. Adds with a constant or graph-input operand, or without a
    conv on either side, are not residual Adds and get nothing.
    """
    if len(node.input) != 2 or any(g.is_constant(x) or x not in g.producer for x in node.input):
        return ()
    pa, pb = (g.producer[x] for x in node.input)
    ba, bb = fusible_backbone(g, pa), fusible_backbone(g, pb)
    lca, da, db = lowest_common_ancestor(g, pa, pb)
    if ba is not None and bb is not None:
        if ba == bb or g.nodes[ba].op_type != g.nodes[bb].op_type:
            return ()
        fused = 0 if da > db else 1
    elif ba is not None:
        if lca == ba:
            return ()
        fused = 0
    elif bb is not None:
        if lca == bb:
            return ()
        fused = 1
    else:
        return ()
    return (1 - fused,)


def live_inputs(node: onnx.NodeProto, g: GraphIndex) -> tuple[int, ...]:
    """Every non-constant input slot."""
    return tuple(i for i, x in enumerate(node.input) if x and not g.is_constant(x))


AxisFn = Callable[[onnx.NodeProto, tuple[int, ...]], "int | None"]  # None: per-tensor
SelectFn = Callable[[onnx.NodeProto, GraphIndex], tuple[int, ...]]


@dataclass(frozen=True)
class Rule:
    """Where one op type gets Q/DQ. `inputs` are activation slots (per-tensor); `weight`
    is the slot quantized per-channel along `axis` when it holds a constant, per-tensor
    like an activation when it does not; `select` overrides `inputs` from graph context."""

    op_type: str
    reason: str
    inputs: tuple[int, ...] = (0,)
    weight: int | None = None
    axis: AxisFn | None = None
    select: SelectFn | None = None
    shared_scale: bool = False
    default: bool = True
    per_tensor_reason: str = "per-channel weight scales are not expressible for this node"

    def activation_slots(self, node: onnx.NodeProto, g: GraphIndex) -> tuple[int, ...]:
        slots = self.select(node, g) if self.select else self.inputs
        if self.weight is not None and self.weight < len(node.input) \
                and not g.is_constant(node.input[self.weight]):
            slots = (*slots, self.weight)              # activation x activation: both per-tensor
        return tuple(s for s in slots if s < len(node.input) and node.input[s]
                     and not g.is_constant(node.input[s]))

    def weight_slot(self, node: onnx.NodeProto, g: GraphIndex) -> int | None:
        w = self.weight
        return w if w is not None and w < len(node.input) and g.is_constant(node.input[w]) else None


_WEIGHTED = ("TensorRT: quantize all inputs of weighted operations; weights per-channel, "
             "activations per-tensor; the output is not quantized (it keeps a higher-precision "
             "epilogue such as bias, ReLU or a residual Add fused into the kernel)")
RULES: dict[str, Rule] = {r.op_type: r for r in [
    Rule("Conv", f"{_WEIGHTED}; weight axis 0 (output channels of W[K,C,kh,kw])",
         weight=1, axis=conv_axis),
    Rule("ConvTranspose", f"{_WEIGHTED}; weight axis 1 (W[C,K,kh,kw]); with group > 1 axis 1 "
                          "holds K/group entries, so no ONNX axis gives one scale per output "
                          "channel: the weight is quantized per-tensor",
         weight=1, axis=conv_transpose_axis,
         per_tensor_reason="grouped ConvTranspose: W[C, K/group, kh, kw] has no axis with one "
                           "entry per output channel, so per-channel scales are not expressible"),
    Rule("Gemm", f"{_WEIGHTED}; weight axis 0 when transB=1 (W[N,K]) else 1; bias C stays float",
         weight=1, axis=gemm_axis),
    Rule("MatMul", f"{_WEIGHTED}; weight axis 1 (B[K,N]) (the last axis of a batched B); "
                   "B may be computed from initializers (tied weights)",
         weight=1, axis=matmul_axis),
    Rule("AttentionMatMul", "opt-in: a MatMul of two activations (attention QK^T and "
                            "softmax x V); both inputs per-tensor. Off by default as in "
                            "ModelOpt, which keeps MHA out of INT8: the Softmax output spans "
                            "[0,1] with most mass near 0, which INT8 per-tensor resolves badly",
         inputs=(0, 1), default=False),
    Rule("Add", "TensorRT: quantize the residual input of skip connections; the other input "
                "comes from a conv that the Add fuses into (ModelOpt's residual-Add rule); Adds "
                "with a constant or graph-input operand, or no conv branch, stay float",
         select=residual_inputs),
    Rule("AveragePool", "TensorRT fuses DQ -> AveragePool -> Q into an INT8 pooling layer; "
                        "quantizing its input lets the producer emit INT8"),
    Rule("GlobalAveragePool", "same as AveragePool: an INT8 reduction, input quantized "
                              "(ModelOpt default)"),
    Rule("MaxPool", "MaxPool commutes with Q/DQ; an input Q/DQ lets TensorRT run it in INT8 "
                    "and fuse the Q into the producing conv (ModelOpt default)"),
    Rule("BatchNormalization", "opt-in: TensorRT folds BN into the preceding conv, so its input "
                               "is usually a weighted-op output that must stay unquantized",
         default=False),
    Rule("Clip", "opt-in: ReLU6/Clip fuses into the preceding conv; quantizing its input would "
                 "quantize a weighted-op output and split the fusion", default=False),
    Rule("Mul", "opt-in: element-wise Mul (e.g. SiLU's x*sigmoid(x)) follows a conv whose "
                "output should stay unquantized", select=live_inputs, default=False),
    Rule("Concat", "opt-in: all inputs share ONE scale (the largest range) so TensorRT needs "
                   "no requantization; by default Concat gets no Q/DQ and TensorRT propagates "
                   "the consumer's Q backwards through it (and any input quantized for another "
                   "consumer shares the output's scale: ModelOpt's concat elimination)",
         select=live_inputs, shared_scale=True, default=False),
    Rule("Resize", "opt-in: nearest/linear Resize commutes with per-tensor Q/DQ, so an input "
                   "Q/DQ lets TensorRT upsample in INT8 (FPN/U-Net necks); off by default as in "
                   "ModelOpt (TensorRT moves the consumer's Q above it anyway); roi/scales/sizes "
                   "are never quantized", inputs=(0,), default=False),
    Rule("Upsample", "opt-in: the pre-opset-10 Resize; same as Resize (input 0 only)",
         inputs=(0,), default=False),
]}

# Op types with no Q/DQ rule on purpose, and why (the README table lists these too).
# Their inputs still get Q/DQ when a quantized consumer reads them; they themselves run in
# the model's float type.
NOT_QUANTIZED: dict[str, str] = {
    "Softmax": "exponent/normalisation: needs float range and precision; ModelOpt removes it from "
               "the INT8 op types and TensorRT's MHA kernels keep it in FP16/FP32",
    "LayerNormalization": "a reduction + normalisation; TensorRT runs it in FP16/FP32 (INT8 "
                          "LayerNorm loses accuracy), and ModelOpt excludes LayerNorm partitions; "
                          "its decomposed form (ReduceMean/Sub/Pow/Sqrt/Div) has no rules either",
    "Erf": "GELU's erf: a pointwise op TensorRT fuses into the preceding GEMM epilogue; quantizing "
           "its input would quantize a weighted-op output",
    "Gelu": "the opset-20 fused GELU: a pointwise GEMM epilogue, as Erf; not quantized",
    "Sigmoid": "pointwise epilogue of the preceding conv (SiLU = x*sigmoid(x) fuses); ModelOpt "
               "removes it from the INT8 op types",
    "HardSigmoid": "pointwise epilogue (SE-block gates, HardSwish); TensorRT fuses it into the conv",
    "HardSwish": "pointwise epilogue of the preceding conv (MobileNetV3); TensorRT fuses it",
    "PRelu": "pointwise epilogue; TensorRT fuses PReLU into the conv; its slope is a float weight "
             "of the epilogue, never quantized",
    "LeakyRelu": "pointwise epilogue; ModelOpt removes it from the INT8 op types",
    "Relu": "fuses into the conv; ModelOpt removes it from the INT8 op types",
    "Reshape/Transpose/Flatten/Squeeze/Unsqueeze/Slice/Split/Gather": "data movement commutes "
        "with Q/DQ; TensorRT propagates Q/DQ through it (ModelOpt removes these op types)",
}


def why_float(op_type: str) -> str | None:
    """Why an op type has no Q/DQ rule, when that is on purpose (for reports)."""
    if op_type in NOT_QUANTIZED:
        return NOT_QUANTIZED[op_type]
    return next((why for key, why in NOT_QUANTIZED.items() if op_type in key.split("/")), None)


def rule_key(node: onnx.NodeProto, g: GraphIndex) -> str:
    """The registry key for a node: its op type, except a MatMul whose B is not a
    constant, which is an attention MatMul (a separate, opt-in rule)."""
    if node.op_type == "MatMul" and len(node.input) > 1 and not g.is_constant(node.input[1]):
        return "AttentionMatMul"
    return node.op_type


DEFAULT_OP_TYPES: tuple[str, ...] = tuple(op for op, r in RULES.items() if r.default)
