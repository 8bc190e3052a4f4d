"""The lint rules: where a Q/DQ placement costs speed or is refused by TensorRT.

Each rule is a function of the `QdqView` returning `Finding`s that name the nodes, the rule,
why TensorRT cares (TENSORRT.md §3, the TensorRT developer guide's "Q/DQ Layer-Placement
Recommendations") and the expected effect, with the measured ResNet18 figures where the
fixture engines show it. A finding may carry a `fix`: a rewrite that only removes a pair or
rewires an input to a Q/DQ of the same tensor already in the model (never a new scale).

Past 400 lines because it is one registry: ten check functions side by side, each with its reason,
read and reviewed together (splitting them by file would scatter the TensorRT rationale).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import onnx

from ptq.graph.rules import fusible_backbone, residual_inputs
from ptq.lint import evidence
from ptq.lint.view import QdqView

# Q/DQ types TensorRT accepts (TENSORRT.md §3.1): UINT8 has its own rule (DLA only). An INT32
# DQ is ONNX Runtime's quantized bias (a constant); whether the parser takes it is not verified
# here, so it is not flagged rather than flagged on a guess.
TRT_QUANT_TYPES = (onnx.TensorProto.INT8, onnx.TensorProto.FLOAT8E4M3FN, onnx.TensorProto.INT4,
                   onnx.TensorProto.FLOAT4E2M1)
POOL_OPS = ("MaxPool", "AveragePool", "GlobalAveragePool")
# Ops TensorRT fuses into the weighted op before them; a Q/DQ in between splits the fusion.
EPILOGUE_OPS = ("BatchNormalization", "Relu", "Clip", "LeakyRelu", "Sigmoid", "HardSigmoid",
                "Add", "Mul", "Sub", "Div")
# Ops with no INT8 kernel in TensorRT (they run in FP16/FP32): a DQ before and a Q after
# become two reformat layers. Data-movement ops that commute with Q/DQ are not listed.
NO_INT8_OPS = ("Sigmoid", "Tanh", "Softmax", "Exp", "Log", "Div", "Sqrt", "Pow", "Erf",
               "HardSigmoid", "HardSwish", "LeakyRelu", "Elu", "Selu", "Gelu", "Mish",
               "LayerNormalization", "InstanceNormalization", "ReduceMean", "ReduceSum",
               "ReduceMax", "Resize", "Upsample", "Sin", "Cos", "Reciprocal")
# Single-input ops between a residual Add and a pooling layer that TensorRT fuses away.
_PASS_OPS = ("Relu", "Clip", "Identity", "LeakyRelu")
UNSUPPORTED_QOPS = ("QLinearConv", "QLinearMatMul", "ConvInteger", "MatMulInteger",
                    "DynamicQuantizeLinear", "QGemm", "QLinearAdd", "QLinearMul",
                    "QLinearConcat", "QLinearAveragePool", "QLinearGlobalAveragePool")


@dataclass
class Finding:
    rule: str
    severity: str                 # error (TensorRT refuses) | warning (slower) | info
    nodes: list[str]
    message: str
    why: str
    effect: str
    fix: tuple | None = None      # ("remove"|"reuse"|"zero_point"|"axis", ...) see ptq.lint.fix
    fix_note: str = ""            # why it is not fixed automatically, when fix is None
    extra: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"rule": self.rule, "severity": self.severity, "nodes": self.nodes,
                "message": self.message, "why": self.why, "effect": self.effect,
                "fixable": self.fix is not None, "fix_note": self.fix_note}


def _pair_nodes(pair) -> list[str]:
    return [n for n in (pair.q, pair.dq) if n]


def check_epilogue(v: QdqView) -> list[Finding]:
    """Q/DQ between a weighted op and its BN / bias / activation epilogue."""
    out = []
    for i, node in enumerate(v.g.nodes):
        if node.op_type not in EPILOGUE_OPS:
            continue
        live = [s for s, x in enumerate(node.input) if x and not v.g.is_constant(x)]
        if node.op_type in ("Add", "Mul", "Sub", "Div") and len(live) != 1:
            continue                                   # two activations: not an epilogue
        for slot in live:
            pair = v.quantized(node.name, slot)
            src = v.g.producer.get(node.input[slot])
            if pair is None or src is None or pair.weight:
                continue
            backbone = fusible_backbone(v.g, src)
            if backbone is None:
                continue
            conv = v.g.nodes[backbone].name
            out.append(Finding(
                "qdq-in-epilogue", "warning", [conv, *_pair_nodes(pair), node.name],
                f"Q/DQ on {pair.tensor} sits between {conv} ({v.g.nodes[backbone].op_type}) "
                f"and its epilogue {node.name} ({node.op_type})",
                "TensorRT fuses BN, bias, ReLU/Clip and similar epilogues into the weighted "
                "op's kernel; a Q/DQ in between quantizes the weighted op's output and splits "
                "the fusion (guide: 'do not simulate batch-normalization and ReLU fusions', "
                "'by default, do not quantize the outputs of weighted-operations')",
                "the epilogue runs as a separate layer plus a quantize step instead of inside "
                "the weighted op's kernel; removing the pair restores the fusion and removes a "
                "rounding step (accuracy same or better)",
                fix=("remove", node.name, slot)))
    return out


def check_residual(v: QdqView) -> list[Finding]:
    """Residual Adds: Q/DQ on the fused (conv-branch) input, none on the skip input."""
    out = []
    for i, node in enumerate(v.g.nodes):
        if node.op_type != "Add":
            continue
        res = residual_inputs(node, v.g)
        if not res:
            continue
        skip, fused = res[0], 1 - res[0]
        fused_src = v.g.producer[node.input[fused]]
        backbone = fusible_backbone(v.g, fused_src)
        conv = v.g.nodes[backbone].name if backbone is not None else node.input[fused]
        pair = v.quantized(node.name, fused)
        if pair is not None:
            out.append(Finding(
                "residual-fused-input-qdq", "warning", [conv, *_pair_nodes(pair), node.name],
                f"the conv-branch input of residual {node.name} ({pair.tensor}, from {conv}) "
                "is quantized",
                "TensorRT fuses a residual Add into the conv that produces its conv-branch "
                "input; Q/DQ on that input quantizes the conv's output and prevents the "
                "Conv+Add(+ReLU) fusion (only the skip input should be quantized)",
                "the Add runs as a separate element-wise layer; removing the pair lets it fuse "
                f"into the conv (the fusion behind: {evidence.residual_effect()})",
                fix=("remove", node.name, fused)))
        skip_pair = v.quantized(node.name, skip)
        if skip_pair is None and backbone is not None and v.is_int8_conv(backbone):
            tensor = node.input[skip]
            fix = _reuse_fix(v, node, skip, tensor)
            out.append(Finding(
                "residual-skip-unquantized", "warning", [node.name, conv],
                f"residual {node.name}: the skip input {tensor} has no Q/DQ while {conv} "
                "runs in INT8",
                "TensorRT fuses the Add into the INT8 conv only when the skip input is INT8 "
                "too ('quantize the residual input in skip-connections'); otherwise the conv "
                "writes a float output and the Add runs as a separate, higher-precision layer",
                evidence.residual_effect(), fix=fix,
                fix_note="" if fix else f"no Q/DQ of {tensor} exists in the model to reuse; "
                                        "re-quantize with `ptq quantize` (residual rule on)"))
    return out


def _reuse_fix(v: QdqView, node: onnx.NodeProto, slot: int, tensor: str) -> tuple | None:
    """Feed input `slot` of `node` from a Q/DQ of `tensor` already in the model (no new scale)."""
    existing = [p for p in v.pairs_of.get(tensor, []) if not p.weight]
    return ("reuse", node.name, slot, existing[0].dq_output) if existing else None


def check_pooling(v: QdqView) -> list[Finding]:
    """Pooling left in float after an INT8 producer."""
    out = []
    for node in v.g.nodes:
        if node.op_type not in POOL_OPS or v.quantized(node.name, 0) is not None:
            continue
        src = v.g.producer.get(node.input[0])
        backbone = fusible_backbone(v.g, src) if src is not None else None
        add_index = src
        while add_index is not None and v.g.nodes[add_index].op_type in _PASS_OPS:
            live = [x for x in v.g.nodes[add_index].input if x in v.g.producer]
            add_index = v.g.producer[live[0]] if live else None
        if backbone is None and add_index is not None and v.g.nodes[add_index].op_type == "Add":
            add = v.g.nodes[add_index]                 # pooling after a residual block (+ReLU)
            backbone = next((b for x in add.input if x in v.g.producer
                             for b in [fusible_backbone(v.g, v.g.producer[x])]
                             if b is not None), None)
        if backbone is None or not v.is_int8_conv(backbone):
            continue
        fix = _reuse_fix(v, node, 0, node.input[0])
        out.append(Finding(
            "unquantized-pooling", "warning", [node.name, v.g.nodes[backbone].name],
            f"{node.name} ({node.op_type}) reads {node.input[0]} in float although "
            f"{v.g.nodes[backbone].name} before it runs in INT8",
            "without Q/DQ on its input TensorRT runs the pooling in FP16/FP32, so the INT8 "
            "producer writes a float tensor and a reformat layer converts it back "
            "(pooling is quantizable: DQ->pool->Q fuses into an INT8 pooling layer)",
            evidence.pooling_effect(), fix=fix,
            fix_note="" if fix else f"no Q/DQ of {node.input[0]} exists in the model to "
                                    "reuse; `ptq quantize` quantizes pooling inputs by default"))
    return out


def check_concat(v: QdqView) -> list[Finding]:
    out = []
    for node in v.g.nodes:
        if node.op_type != "Concat":
            continue
        pairs = [v.quantized(node.name, s) for s in range(len(node.input))]
        scales = [float(np.max(p.scale)) for p in pairs if p is not None and p.scale is not None]
        mixed = 0 < len(scales) < len(pairs)
        if not mixed and (len(scales) < 2 or max(scales) <= min(scales) * (1 + 1e-6)):
            continue
        out.append(Finding(
            "concat-scale-mismatch", "warning", [node.name],
            f"{node.name}: inputs " + ("mix quantized and float tensors" if mixed else
                                       f"carry different scales ({min(scales):.4g} .. "
                                       f"{max(scales):.4g})"),
            "TensorRT runs Concat as a copy into one INT8 buffer only when every input has "
            "the same scale; otherwise it inserts a requantization (DQ->Q, a reformat) per "
            "input (ModelOpt's concat elimination forces one shared scale)",
            "one reformat layer per mismatched input; quantize all inputs with one shared "
            "scale (`ptq quantize --op-types ...,Concat`)",
            fix_note="unifying scales would change them; ptq lint never invents scales"))
    return out


def check_reformat_pairs(v: QdqView) -> list[Finding]:
    out = []
    quantized_tensors = {p.tensor for p in v.inputs.values() if not p.weight}
    for node in v.g.nodes:
        if node.op_type not in NO_INT8_OPS:
            continue
        pin = next((v.quantized(node.name, s) for s in range(len(node.input))
                    if v.quantized(node.name, s) is not None), None)
        qout = [o for o in node.output if o in quantized_tensors]
        if pin is None or not qout:
            continue
        after = [p for p in v.pairs_of.get(qout[0], [])]
        out.append(Finding(
            "reformat-pair", "warning",
            [*_pair_nodes(pin), node.name, *[n for p in after[:1] for n in _pair_nodes(p)]],
            f"{node.name} ({node.op_type}) has no INT8 implementation but sits between a DQ "
            "and a Q",
            "TensorRT runs the op in FP16/FP32: the DQ before it and the Q after it become "
            "two standalone reformat layers (MobileNet fixture: 17 reformat layers of QDQ "
            "origin)",
            "two reformat layers around a float op; drop the Q/DQ around it, or keep the "
            "neighbouring ops in float too",
            fix_note="which side to keep in INT8 is a model decision"))
    return out


def _names(nodes: list[str], k: int = 4) -> str:
    return ", ".join(nodes[:k]) + (f" and {len(nodes) - k} more" if len(nodes) > k else "")


def check_qdq_attributes(v: QdqView) -> list[Finding]:
    """Zero point and axis problems, one finding per rule listing every node concerned."""
    g = v.model.graph
    consts = {t.name: t for t in g.initializer}
    consts.update({n.output[0]: next(a.t for a in n.attribute if a.name == "value")
                   for n in g.node if n.op_type == "Constant" and n.attribute})
    producer = {o: n for n in g.node for o in n.output}
    no_zp, no_zp_fix, uint8, nonzero, no_axis = [], [], [], [], []
    other_type: dict[str, list[str]] = {}
    for node in g.node:
        if node.op_type not in ("QuantizeLinear", "DequantizeLinear"):
            continue
        zp = consts.get(node.input[2]) if len(node.input) > 2 and node.input[2] else None
        scale = consts.get(node.input[1]) if len(node.input) > 1 else None
        qtype = _quant_type(node, zp, consts)
        if qtype is not None and qtype not in TRT_QUANT_TYPES and \
                qtype not in (onnx.TensorProto.UINT8, onnx.TensorProto.INT32):
            other_type.setdefault(onnx.TensorProto.DataType.Name(qtype), []).append(node.name)
            continue
        typed = qtype is not None and qtype != onnx.TensorProto.UINT8  # output_dtype, INT8 data
        if (len(node.input) < 3 or not node.input[2]) and typed:
            pass                                         # the type is stated: no ambiguity
        elif len(node.input) < 3 or not node.input[2]:
            no_zp.append(node.name)
            if scale is not None and len(scale.dims) == 0:
                no_zp_fix.append(node.name)
        elif zp is not None and zp.data_type == onnx.TensorProto.UINT8:
            uint8.append(node.name)
        elif zp is not None and np.any(onnx.numpy_helper.to_array(zp) != 0):
            nonzero.append(node.name)
        if scale is not None and len(scale.dims) == 1 and scale.dims[0] > 1 and \
                not any(a.name == "axis" for a in node.attribute):
            data = consts.get(node.input[0])
            q = producer.get(node.input[0])
            if data is None and q is not None and q.op_type == "QuantizeLinear":
                data = consts.get(q.input[0])             # DQ of a Q of the float weight
            fits = [a for a, d in enumerate(data.dims) if d == scale.dims[0]] if data else []
            no_axis.append((node.name, 1 if 1 in fits else fits[0] if len(fits) == 1 else None))
    out = []
    for type_name, nodes in other_type.items():
        out.append(Finding(
            "qdq-unsupported-type", "error", nodes,
            f"{len(nodes)} Q/DQ nodes quantize to {type_name}: {_names(nodes)}",
            "TensorRT's Q/DQ layers take INT8, FP8 (E4M3), INT4 and FP4 only",
            "the build fails; quantize to INT8 (ORT: activation_type=weight_type=QInt8)",
            fix_note=f"an {type_name} scale cannot become an INT8 one without new calibration"))
    if uint8:
        out.append(Finding(
            "qdq-uint8", "error", uint8, f"{len(uint8)} Q/DQ nodes use a UINT8 zero point: "
            f"{_names(uint8)}",
            "TensorRT's ONNX parser rejects UINT8 Q/DQ (only DLA accepts it)",
            "the build fails; quantize activations as INT8, symmetric",
            fix_note="a UINT8/asymmetric scale cannot become a symmetric INT8 one without new "
                     "calibration (ORT: activation_type=QInt8, ActivationSymmetric=True)"))
    if nonzero:
        out.append(Finding(
            "qdq-nonzero-zero-point", "error", nonzero,
            f"{len(nonzero)} Q/DQ nodes have a non-zero zero point (asymmetric): {_names(nonzero)}",
            "TensorRT supports symmetric quantization only (zero point all zeros)",
            "the build fails",
            fix_note="needs a new symmetric calibration (ORT: extra_options "
                     "ActivationSymmetric=True; or `ptq quantize`)"))
    if no_zp:
        out.append(Finding(
            "qdq-no-zero-point", "warning", no_zp,
            f"{len(no_zp)} Q/DQ nodes have no explicit zero point: {_names(no_zp)}",
            "ONNX (and ONNX Runtime) default to UINT8 without a zero point, TensorRT to INT8: "
            "the same file means different arithmetic (negatives clip to 0 in ORT)",
            "ONNX Runtime accuracy checks do not predict the engine; write an INT8 zero point 0",
            fix=("zero_point", no_zp_fix) if no_zp_fix else None,
            fix_note="" if len(no_zp_fix) == len(no_zp) else
            "per-channel nodes need a zero-point vector; only per-tensor ones are fixed"))
    if no_axis:
        fixes = [(n, a) for n, a in no_axis if a is not None]
        names = [n for n, _ in no_axis]
        out.append(Finding(
            "qdq-no-axis", "warning", names,
            f"{len(names)} per-channel Q/DQ nodes have no axis attribute: {_names(names)}",
            "ONNX defaults the axis to 1, TensorRT's parser to 0: for a Conv weight [K,C,..] "
            "they quantize different dimensions",
            "engine and ONNX Runtime disagree; write the axis explicitly",
            fix=("axis", fixes) if fixes else None,
            fix_note="the axis written is ONNX's default 1 when the scale fits it (what ONNX "
                     "Runtime computes), else the only dimension the scale fits"
            if fixes else "the weight shape is unknown, so the axis cannot be chosen"))
    bad_ops = [n.name for n in g.node if n.op_type in UNSUPPORTED_QOPS]
    if bad_ops:
        out.append(Finding(
            "unsupported-quant-op", "error", bad_ops,
            f"{len(bad_ops)} operator-format quantized ops (QLinear*/Integer): {_names(bad_ops)}",
            "TensorRT accepts only the Q/DQ format; QLinear*/Integer ops are not parsed",
            "the build fails; export in QDQ format (ORT QuantFormat.QDQ)",
            fix_note="converting operator format back to Q/DQ is out of scope"))
    return out


def _quant_type(node: onnx.NodeProto, zp: onnx.TensorProto | None,
                consts: dict[str, onnx.TensorProto]) -> int | None:
    """The integer/float8 type a Q produces or a DQ reads: the zero point's type, else Q's
    `output_dtype` attribute, else a DQ's constant input's type; None when not stated."""
    if zp is not None:
        return zp.data_type
    if node.op_type == "QuantizeLinear":
        attr = next((a.i for a in node.attribute if a.name == "output_dtype"), 0)
        return attr or None
    data = consts.get(node.input[0])
    return data.data_type if data is not None else None


def check_quantized(v: QdqView) -> list[Finding]:
    """A model with no Q/DQ at all: lint has nothing to check, and the user most likely passed
    the FP32 model instead of the quantized one."""
    ops = {n.op_type for n in v.model.graph.node}
    if ops & {"QuantizeLinear", "DequantizeLinear", *UNSUPPORTED_QOPS}:
        return []
    return [Finding(
        "not-quantized", "warning", [],
        "the model has no QuantizeLinear/DequantizeLinear nodes: it is not quantized",
        "lint checks where Q/DQ pairs sit; without any, TensorRT builds the model in "
        "FP32/FP16 (explicit INT8 needs Q/DQ nodes)",
        "no INT8 at all; pass the quantized model, or make one: ptq calibrate + ptq quantize",
        fix_note="quantizing needs calibration data (ptq calibrate, then ptq quantize)")]


def check_cast_in_epilogue(v: QdqView) -> list[Finding]:
    """A precision Cast between a weighted op and its activation epilogue (a pin that took the
    conv but not its ReLU/Clip): TensorRT cannot fuse across a type change."""
    out = []
    for node in v.g.nodes:
        if node.op_type not in ("Relu", "Clip", "LeakyRelu", "Sigmoid", "HardSigmoid",
                                "BatchNormalization"):
            continue
        src = v.g.producer.get(node.input[0])
        if src is None or v.g.nodes[src].op_type != "Cast":
            continue
        cast = v.g.nodes[src]
        before = v.g.producer.get(cast.input[0])
        if before is None or fusible_backbone(v.g, before) is None:
            continue
        conv = v.g.nodes[fusible_backbone(v.g, before)].name
        out.append(Finding(
            "cast-in-epilogue", "warning", [conv, cast.name, node.name],
            f"Cast {cast.name} separates {conv} from its epilogue {node.name} ({node.op_type})",
            "a precision pin that covers the conv but not its activation puts a type change "
            "inside the Conv+activation fusion; TensorRT runs them as two layers plus a "
            "reformat",
            "one extra layer and reformat; pin the epilogue together with its conv",
            fix_note="changing a pin's extent is a precision decision (re-run the pin with "
                     "its epilogue)"))
    return out


def check_cast_islands(v: QdqView) -> list[Finding]:
    g = v.g
    out = []
    for node in g.nodes:
        if node.op_type == "Cast":
            continue
        live = [x for x in node.input if x and x in g.producer]
        if not live or not all(g.nodes[g.producer[x]].op_type == "Cast" for x in live):
            continue
        cons = [g.nodes[c] for o in node.output for c, _ in g.consumers.get(o, [])]
        if not cons or not all(c.op_type == "Cast" for c in cons):
            continue
        out.append(Finding(
            "cast-island", "info", [node.name],
            f"{node.name} ({node.op_type}) is a single op islanded between Cast nodes",
            "each Cast pair becomes two reformat layers in TensorRT; a one-op precision "
            "island often costs more than it saves",
            "two reformat layers; pin a contiguous region instead, or keep the pin only if "
            "`ptq sensitivity` shows it is needed",
            fix_note="a precision pin is a deliberate choice"))
    return out


CHECKS = (check_quantized, check_qdq_attributes, check_epilogue, check_residual, check_pooling, check_concat,
          check_reformat_pairs, check_cast_in_epilogue, check_cast_islands)
RULE_NAMES = ("not-quantized", "unsupported-quant-op", "qdq-unsupported-type", "qdq-uint8", "qdq-nonzero-zero-point", "qdq-no-zero-point",
              "qdq-no-axis", "qdq-in-epilogue", "residual-fused-input-qdq",
              "residual-skip-unquantized", "unquantized-pooling", "concat-scale-mismatch",
              "reformat-pair", "cast-in-epilogue", "cast-island")
