"""FP16 pinning the TensorRT 11 way: Cast-typed FP16 islands in an FP32/INT8 graph
(and, the other way round, FP32 islands in a float16 model: `pin_float(to=FLOAT)`).

TensorRT 11 is always strongly typed, so a layer's precision is the dtype of its
inputs (TENSORRT.md §4.2). To run node N in FP16:

    x (fp32) -> Cast(to=FLOAT16) -> N(fp16 weights) -> Cast(to=FLOAT) -> fp32 consumers
                 x_cast_to_fp16        W_fp16             y (name kept)

- activation inputs get one shared `Cast(to=FLOAT16)` per tensor (ModelOpt's
  `<tensor>_cast_to_fp16` naming); FP16 producers feed FP16 consumers directly, so
  consecutive FP16 nodes have no Cast pair between them;
- float initializers get an FP16 copy `<name>_fp16`; the FP32 original is removed only
  when nothing else reads it (ReLU6's shared Clip min/max are duplicated, never
  converted in place); values beyond the FP16 range saturate to +-65504 with a note;
- the node's float outputs are renamed `<tensor>_fp16` and cast back to FP32 under
  the original name when an FP32 node, a Q node or a graph output reads them, so graph
  inputs and outputs stay FP32 and every other node is untouched.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from ptq.errors import ConfigError
from ptq.graph.edit import copy_model, finalize
from ptq.graph.qdq import UniqueNames
from ptq.graph.rules import GraphIndex

FP16_MAX = float(np.finfo(np.float16).max)
# Inputs that ONNX requires in FP32 whatever the data type (Resize roi/scales).
KEEP_FP32_INPUTS: dict[str, tuple[int, ...]] = {"Resize": (1, 2), "Upsample": (1,)}
# Ops whose output type is not their input's, or that hold subgraphs (ModelOpt never lowers these).
NOT_PINNABLE = {"Constant", "ConstantOfShape", "Cast", "CastLike", "Shape", "Size",
                "QuantizeLinear", "DequantizeLinear", "If", "Loop", "Scan",
                "NonMaxSuppression", "Upsample", "Celu"}


@dataclass
class CastResult:
    model: onnx.ModelProto
    casts: int = 0
    notes: list[str] = field(default_factory=list)


_SUFFIX = {TensorProto.FLOAT16: "fp16", TensorProto.FLOAT: "fp32"}


def pin_fp16(model: onnx.ModelProto, nodes: set[str] | list[str], types: dict[str, int], *,
             check: bool = True) -> CastResult:
    """A copy of `model` where `nodes` run in FP16; `types` maps tensor -> ONNX elem type
    (from `ptq.graph.model.infer_types` on the FP32 model) to tell float tensors apart."""
    return pin_float(model, nodes, types, to=TensorProto.FLOAT16, check=check)


def pin_float(model: onnx.ModelProto, nodes: set[str] | list[str], types: dict[str, int], *,
              to: int, check: bool = True) -> CastResult:
    """A copy of `model` where `nodes` compute in float type `to`: FP16 islands in an
    FP32 model, or FP32 islands in an FP16 model (an FP32 pin on a float16 export). Only
    tensors of the other float type are cast; the rest of the graph is untouched."""
    src = TensorProto.FLOAT if to == TensorProto.FLOAT16 else TensorProto.FLOAT16
    out = copy_model(model)
    pinned = set(nodes)
    g = GraphIndex.of(out)
    unknown = sorted(pinned - {n.name for n in g.nodes})
    if unknown:
        raise ConfigError(f"no node named {unknown[0]!r} to pin to {_SUFFIX[to].upper()}",
                          hint="pin nodes by their ONNX node names")
    bad = [n for n in g.nodes if n.name in pinned and n.op_type in NOT_PINNABLE]
    if bad:
        raise ConfigError(f"node '{bad[0].name}' ({bad[0].op_type}) cannot be pinned to "
                          f"{_SUFFIX[to].upper()}",
                          hint="leave it at the model's precision, or narrow the pin pattern")
    result = CastResult(out)
    state = _State(out, g, pinned, types, result, src, to)
    ordered: list[onnx.NodeProto] = []
    for node in g.nodes:
        if node.name in pinned:
            ordered.extend(state.cast_inputs(node))
            ordered.append(node)
            ordered.extend(state.cast_outputs(node))
        else:
            ordered.append(node)
    del out.graph.node[:]
    out.graph.node.extend(ordered)
    state.drop_unused_initializers()
    if check:
        finalize(out)
    return result


class _State:
    """Bookkeeping for one pass: tensors already available in the island type, new initializers."""

    def __init__(self, model: onnx.ModelProto, g: GraphIndex, pinned: set[str],
                 types: dict[str, int], result: CastResult, src: int, to: int) -> None:
        self.model, self.g, self.pinned, self.types, self.result = model, g, pinned, types, result
        self.src, self.to, self.tag = src, to, _SUFFIX[to]
        self.twin: dict[str, str] = {}          # src-typed tensor name -> its island-typed twin
        self.converted: set[str] = set()        # initializers given a converted copy
        self.unique = UniqueNames(model)

    def _is_src(self, name: str) -> bool:
        init = self.g.initializers.get(name)
        if init is not None:
            return init.data_type == self.src
        if name in self.types:
            return self.types[name] == self.src
        producer = self.g.producer.get(name)             # Q/DQ outputs added after inference
        if producer is None or self.g.nodes[producer].op_type != "DequantizeLinear":
            return False
        scale = self.g.initializers.get(self.g.nodes[producer].input[1])
        return (scale.data_type if scale is not None else TensorProto.FLOAT) == self.src

    def cast_inputs(self, node: onnx.NodeProto) -> list[onnx.NodeProto]:
        new_nodes = []
        keep = KEEP_FP32_INPUTS.get(node.op_type, ())
        for slot, name in enumerate(node.input):
            if not name or slot in keep or not self._is_src(name):
                continue
            if name not in self.twin:
                if name in self.g.initializers:
                    self.twin[name] = self._converted_initializer(name)
                else:
                    twin = self.unique(f"{name}_cast_to_{self.tag}")
                    new_nodes.append(helper.make_node("Cast", [name], [twin], name=twin, to=self.to))
                    self.result.casts += 1
                    self.twin[name] = twin
            node.input[slot] = self.twin[name]
        return new_nodes

    def _converted_initializer(self, name: str) -> str:
        values = self.g.constant_array(name)
        if self.to == TensorProto.FLOAT16 and np.any(np.abs(values[np.isfinite(values)]) > FP16_MAX):
            self.result.notes.append(f"initializer '{name}' saturated to the FP16 range")
            values = np.clip(values, -FP16_MAX, FP16_MAX)
        twin = self.unique(f"{name}_{self.tag}")
        dtype = np.float16 if self.to == TensorProto.FLOAT16 else np.float32
        self.model.graph.initializer.append(numpy_helper.from_array(values.astype(dtype), twin))
        self.converted.add(name)
        return twin

    def cast_outputs(self, node: onnx.NodeProto) -> list[onnx.NodeProto]:
        new_nodes = []
        for slot, name in enumerate(node.output):
            if not name or self.types.get(name) != self.src:
                continue
            twin = self.unique(f"{name}_{self.tag}")
            node.output[slot] = twin
            self.twin[name] = twin
            if self._needs_src(name):
                back = _SUFFIX[self.src]
                new_nodes.append(helper.make_node("Cast", [twin], [name],
                                                  name=self.unique(f"{name}_cast_to_{back}"),
                                                  to=self.src))
                self.result.casts += 1
        return new_nodes

    def _needs_src(self, name: str) -> bool:
        if name in self.g.graph_outputs:
            return True
        for i, slot in self.g.consumers.get(name, []):
            consumer = self.g.nodes[i]
            if consumer.name not in self.pinned or slot in KEEP_FP32_INPUTS.get(consumer.op_type, ()):
                return True
        return False

    def drop_unused_initializers(self) -> None:
        """Remove FP32 originals that only pinned nodes read (now replaced by their twins)."""
        used = {x for n in self.model.graph.node for x in n.input}
        drop = {name for name in self.converted if name not in used}
        if not drop:
            return
        keep = [t for t in self.model.graph.initializer if t.name not in drop]
        del self.model.graph.initializer[:]
        self.model.graph.initializer.extend(keep)
        inputs = [i for i in self.model.graph.input if i.name not in drop]
        del self.model.graph.input[:]
        self.model.graph.input.extend(inputs)
