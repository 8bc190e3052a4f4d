"""What an engine says about the Q/DQ model: precision mix, reformat cost, INT8 intent, diffs.

The questions a deployment engineer asks of an INT8 engine (TensorRT issues 3197, 4554):
where the time goes, how many reformat layers TensorRT had to add and why, which layers the
Q/DQ model meant to run in INT8 that did not (and the reverse), and, against an FP16 build,
which layers got faster or slower.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from difflib import SequenceMatcher

import onnx

from ptq.engine.schema import Engine, EngineLayer

QDQ_OPS = ("QuantizeLinear", "DequantizeLinear")
# Per-layer profile times are averages of one profiling run; a ratio within +-5% is reported
# as "same" rather than read as a real speed-up or slow-down.
SAME_BAND = 0.05


def summarize(engine: Engine) -> dict:
    """Counts, precision mix (by layer and, when profiled, by time) and the reformat summary."""
    compute = [la for la in engine.layers if la.kind not in ("noop",)]
    by_prec = Counter(la.precision or "?" for la in compute)
    time_by_prec: dict[str, float] = {}
    for la in compute:
        if la.time_ms is not None:
            key = la.precision or "?"
            time_by_prec[key] = time_by_prec.get(key, 0.0) + la.time_ms
    return {"path": engine.path, "schema": engine.schema, "layers": len(engine.layers),
            "layer_types": dict(Counter(la.type for la in engine.layers).most_common()),
            "precision_layers": dict(by_prec.most_common()),
            "precision_ms": time_by_prec or None,
            "total_ms": engine.total_ms, "reformat": reformat_summary(engine),
            "io_tensors": engine.io_tensors}


def reformat_summary(engine: Engine) -> dict:
    """Reformat layers: how many, their share of the time, and what made each one."""
    ref = [la for la in engine.layers if la.is_reformat]
    total = engine.total_ms
    ms = sum(la.time_ms or 0.0 for la in ref) if engine.profiled else None
    return {"count": len(ref), "by_origin": dict(Counter(la.origin or "?" for la in ref)),
            "time_ms": ms, "share": (ms / total) if ms is not None and total else None,
            "layers": [{"name": la.name, "origin": la.origin, "source": la.reformat_source(),
                        "from": (la.inputs[0].dtype if la.inputs else None),
                        "to": la.out_precision, "time_ms": la.time_ms, "share": la.share}
                       for la in ref]}


@dataclass(frozen=True)
class IntentMismatch:
    """An ONNX node whose engine precision differs from what the Q/DQ placement asked for."""

    node: str
    op_type: str
    layer: str
    intended: str                # "INT8" or "float"
    actual: str | None

    def to_dict(self) -> dict:
        return self.__dict__.copy()


def int8_intended_nodes(model: onnx.ModelProto) -> dict[str, str]:
    """{node name: op type} of the nodes a Q/DQ model means to run in INT8: nodes fed by a
    DequantizeLinear of an activation (not only of a weight). Q/DQ nodes are not listed."""
    producer = {o: n for n in model.graph.node for o in n.output}
    consts = {t.name for t in model.graph.initializer} | {
        n.output[0] for n in model.graph.node if n.op_type == "Constant"}
    out = {}
    for node in model.graph.node:
        if node.op_type in QDQ_OPS:
            continue
        for x in node.input:
            dq = producer.get(x)
            if dq is None or dq.op_type != "DequantizeLinear":
                continue
            src = dq.input[0]
            q = producer.get(src)
            if src in consts or (q is not None and q.op_type == "QuantizeLinear"
                                 and q.input[0] in consts):
                continue                               # a weight DQ
            out[node.name] = node.op_type
            break
    return out


# Ops whose INT8 execution needs an INT8 input: running one in INT8 without a DQ on its
# input means TensorRT propagated a neighbour's scale there (legal, but not what was placed).
_COMPUTE_OPS = {"Conv", "ConvTranspose", "Gemm", "MatMul", "AveragePool", "GlobalAveragePool",
                "MaxPool"}


def int8_intent(engine: Engine, model: onnx.ModelProto) -> dict:
    """Cross-check the engine against the Q/DQ ONNX it was built from: nodes meant for INT8
    that ran in a float type, and compute nodes without Q/DQ that TensorRT ran in INT8."""
    intended = int8_intended_nodes(model)
    op_of = {n.name: n.op_type for n in model.graph.node}
    layer_of: dict[str, EngineLayer] = {}
    for la in engine.layers:
        for n in la.onnx_nodes:
            if n in op_of:
                layer_of.setdefault(n, la)
    not_int8, unexpected = [], []
    for node, op in op_of.items():
        la = layer_of.get(node)
        if la is None or op in QDQ_OPS or la.is_reformat:
            continue
        if node in intended and la.precision != "INT8":
            not_int8.append(IntentMismatch(node, op, la.name, "INT8", la.precision))
        elif node not in intended and op in _COMPUTE_OPS and la.precision == "INT8":
            unexpected.append(IntentMismatch(node, op, la.name, "float", la.precision))
    matched = sum(1 for n in op_of if n in layer_of)
    return {"intended_int8": len(intended), "matched_nodes": matched,
            "unmatched_intended": sorted(n for n in intended if n not in layer_of),
            "not_int8": [m.to_dict() for m in not_int8],
            "unexpected_int8": [m.to_dict() for m in unexpected]}


@dataclass
class EngineComparison:
    """Two engines of one network (e.g. FP16 vs INT8), layer by layer."""

    a: Engine
    b: Engine
    rows: list[dict]

    def to_dict(self) -> dict:
        return {"a": self.a.path, "b": self.b.path, "a_total_ms": self.a.total_ms,
                "b_total_ms": self.b.total_ms,
                "a_reformat": reformat_summary(self.a)["count"],
                "b_reformat": reformat_summary(self.b)["count"], "rows": self.rows}


def _key(la: EngineLayer) -> str:
    return la.kind


def compare_engines(a: Engine, b: Engine) -> EngineComparison:
    """Pair the compute layers of two engines and compare their times.

    Layers sharing an ONNX node name are paired first (builds of the same ONNX, or ptq's FP16
    and Q/DQ models, which keep node names); the rest are aligned by the order of their kind
    (conv / pool / ...), which survives renumbered nodes (PyTorch re-export with Q/DQ).
    Reformat and no-op layers are not paired: each engine's are listed on their own rows."""
    ca = [la for la in a.layers if la.kind not in ("reformat", "noop")]
    cb = [la for la in b.layers if la.kind not in ("reformat", "noop")]
    pairs: dict[int, int] = {}
    node_b = {n: j for j, la in enumerate(cb) for n in la.onnx_nodes}
    for i, la in enumerate(ca):
        j = next((node_b[n] for n in la.onnx_nodes if n in node_b), None)
        if j is not None and j not in pairs.values():
            pairs[i] = j
    if len(pairs) < min(len(ca), len(cb)) // 2:        # different exports: align by kind order
        pairs = {}
        sm = SequenceMatcher(a=[_key(x) for x in ca], b=[_key(x) for x in cb], autojunk=False)
        for blk in sm.get_matching_blocks():
            for k in range(blk.size):
                pairs[blk.a + k] = blk.b + k
    rows = []
    used_b = set(pairs.values())
    for i, la in enumerate(ca):
        lb = cb[pairs[i]] if i in pairs else None
        rows.append(_row(la, lb))
    rows += [_row(None, lb) for j, lb in enumerate(cb) if j not in used_b]
    for eng, side in ((a, "a"), (b, "b")):
        for la in eng.layers:
            if la.is_reformat:
                rows.append(_row(la, None) if side == "a" else _row(None, la))
    return EngineComparison(a, b, rows)


def _row(la: EngineLayer | None, lb: EngineLayer | None) -> dict:
    ta = la.time_ms if la else None
    tb = lb.time_ms if lb else None
    verdict = "only in A" if lb is None else "only in B" if la is None else None
    ratio = None
    if ta and tb:
        ratio = tb / ta
        verdict = "faster" if ratio < 1 - SAME_BAND else "slower" if ratio > 1 + SAME_BAND \
            else "same"
    return {"a": la.name if la else None, "b": lb.name if lb else None,
            "a_precision": la.precision if la else None,
            "b_precision": lb.precision if lb else None,
            "a_ms": ta, "b_ms": tb, "ratio": ratio, "verdict": verdict}
