"""What precision each layer of a produced (QDQ + Cast) model runs in, read from the graph.

Under TensorRT strong typing the graph itself states the precision (TENSORRT.md §4.1):

    INT8  an input comes from a DequantizeLinear (TensorRT fuses DQ -> op into an INT8 kernel)
    FP16  a float input (or output) is float16 (a Cast-typed FP16 island, or a float16 model)
    FP32  otherwise

The Q/DQ and Cast nodes themselves are plumbing, not layers, and are skipped. The
report reads this instead of trusting what was asked for, so it shows what was built.
"""
from __future__ import annotations

import enum

import onnx
from onnx import TensorProto

from ptq.graph.model import infer_types
from ptq.graph.rules import GraphIndex

PLUMBING_OPS = ("QuantizeLinear", "DequantizeLinear", "Cast")


class Precision(str, enum.Enum):
    INT8 = "int8"
    FP16 = "fp16"
    FP32 = "fp32"

    @classmethod
    def parse(cls, value: Precision | str) -> Precision:
        try:
            return cls(value.lower() if isinstance(value, str) else value)
        except ValueError:
            raise ValueError(f"unknown precision {value!r}; choose from "
                             f"{', '.join(p.value for p in cls)}") from None


def layer_precisions(model: onnx.ModelProto) -> dict[str, Precision]:
    """{node name: Precision} for every node except Q/DQ/Cast, in graph order."""
    elem = {name: info.elem_type for name, info in infer_types(model).items()}
    g = GraphIndex.of(model)
    out: dict[str, Precision] = {}
    for node in g.nodes:
        if node.op_type in PLUMBING_OPS:
            continue
        inputs = [x for x in node.input if x]
        if any(x in g.producer and g.nodes[g.producer[x]].op_type == "DequantizeLinear"
               for x in inputs):
            out[node.name] = Precision.INT8
        elif any(elem.get(x) == TensorProto.FLOAT16 for x in (*inputs, *node.output)):
            out[node.name] = Precision.FP16
        else:
            out[node.name] = Precision.FP32
    return out


def precision_counts(precisions: dict[str, Precision]) -> dict[str, int]:
    counts = {p.value: 0 for p in Precision}
    for p in precisions.values():
        counts[p.value] += 1
    return counts
