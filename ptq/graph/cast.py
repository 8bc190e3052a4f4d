"""FP16 pinning the TensorRT 11 way: Cast-typed FP16 islands in an FP32/INT8 graph.

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


def pin_fp16(model: onnx.ModelProto, nodes: set[str] | list[str], types: dict[str, int], *,
             check: bool = True) -> CastResult:
    """A copy of `model` where `nodes` run in FP16; `types` maps tensor -> ONNX elem type
    (from `ptq.graph.model.infer_types` on the FP32 model) to tell float tensors apart."""
    out = copy_model(model)
    pinned = set(nodes)
    g = GraphIndex.of(out)
    unknown = sorted(pinned - {n.name for n in g.nodes})
    if unknown:
        raise ConfigError(f"no node named {unknown[0]!r} to pin to FP16",
                          hint="pin nodes by their ONNX node names")
    bad = [n for n in g.nodes if n.name in pinned and n.op_type in NOT_PINNABLE]
    if bad:
        raise ConfigError(f"node '{bad[0].name}' ({bad[0].op_type}) cannot be pinned to FP16",
                          hint="pin it to FP32 instead, or narrow the --fp16 pattern")
    result = CastResult(out)
    state = _State(out, g, pinned, types, result)
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
    """Bookkeeping for one pass: tensors already available in FP16, new initializers."""

    def __init__(self, model: onnx.ModelProto, g: GraphIndex, pinned: set[str],
                 types: dict[str, int], result: CastResult) -> None:
        self.model, self.g, self.pinned, self.types, self.result = model, g, pinned, types, result
        self.fp16: dict[str, str] = {}          # fp32 tensor name -> its fp16 twin
        self.converted: set[str] = set()        # initializers given an fp16 copy
        self.unique = UniqueNames(model)

    def _is_float(self, name: str) -> bool:
        init = self.g.initializers.get(name)
        if init is not None:
            return init.data_type == TensorProto.FLOAT
        if name in self.types:
            return self.types[name] == TensorProto.FLOAT
        producer = self.g.producer.get(name)             # Q/DQ outputs added after inference
        return producer is not None and self.g.nodes[producer].op_type == "DequantizeLinear"

    def cast_inputs(self, node: onnx.NodeProto) -> list[onnx.NodeProto]:
        new_nodes = []
        keep = KEEP_FP32_INPUTS.get(node.op_type, ())
        for slot, name in enumerate(node.input):
            if not name or slot in keep or not self._is_float(name):
                continue
            if name not in self.fp16:
                if name in self.g.initializers:
                    self.fp16[name] = self._fp16_initializer(name)
                else:
                    twin = self.unique(f"{name}_cast_to_fp16")
                    new_nodes.append(helper.make_node("Cast", [name], [twin], name=twin,
                                                      to=TensorProto.FLOAT16))
                    self.result.casts += 1
                    self.fp16[name] = twin
            node.input[slot] = self.fp16[name]
        return new_nodes

    def _fp16_initializer(self, name: str) -> str:
        values = self.g.constant_array(name)
        if np.any(np.abs(values[np.isfinite(values)]) > FP16_MAX):
            self.result.notes.append(f"initializer '{name}' saturated to the FP16 range")
            values = np.clip(values, -FP16_MAX, FP16_MAX)
        twin = self.unique(f"{name}_fp16")
        self.model.graph.initializer.append(numpy_helper.from_array(values.astype(np.float16), twin))
        self.converted.add(name)
        return twin

    def cast_outputs(self, node: onnx.NodeProto) -> list[onnx.NodeProto]:
        new_nodes = []
        for slot, name in enumerate(node.output):
            if not name or self.types.get(name) != TensorProto.FLOAT:
                continue
            twin = self.unique(f"{name}_fp16")
            node.output[slot] = twin
            self.fp16[name] = twin
            if self._needs_fp32(name):
                new_nodes.append(helper.make_node("Cast", [twin], [name],
                                                  name=self.unique(f"{name}_cast_to_fp32"),
                                                  to=TensorProto.FLOAT))
                self.result.casts += 1
        return new_nodes

    def _needs_fp32(self, name: str) -> bool:
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
