"""Apply the safe lint fixes: remove a Q/DQ pair from one input, rewire an input to a Q/DQ
of the same tensor already in the model, write an explicit INT8 zero point or axis.

None of these creates a scale: a removed pair only removes a rounding step; a reused pair
applies a scale the model already applies to that very tensor elsewhere.
"""
from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper

from ptq.graph.edit import copy_model, finalize
from ptq.lint.checks import Finding
from ptq.lint.view import build_view


def apply_fixes(model: onnx.ModelProto,
                findings: list[Finding]) -> tuple[onnx.ModelProto, list[Finding]]:
    """A fixed copy of `model` and the findings that were fixed."""
    out = copy_model(model)
    view = build_view(model)
    by_name = {n.name: n for n in out.graph.node}
    done: list[Finding] = []
    zero_name = None
    for f in findings:
        if f.fix is None:
            continue
        kind = f.fix[0]
        if kind in ("remove", "reuse"):
            _, node_name, slot = f.fix[:3]
            pair = view.quantized(node_name, slot)
            node = by_name.get(node_name)
            if node is None:
                continue
            if kind == "remove" and pair is not None and node.input[slot] == pair.dq_output:
                node.input[slot] = pair.tensor
            elif kind == "reuse" and pair is None:
                node.input[slot] = f.fix[3]
            else:
                continue
        elif kind == "zero_point":
            if zero_name is None:
                zero_name = _unique(out, "ptq_lint_int8_zero")
                out.graph.initializer.append(numpy_helper.from_array(np.array(0, np.int8),
                                                                     zero_name))
            for name in f.fix[1]:
                node = by_name[name]
                while len(node.input) < 3:
                    node.input.append("")
                node.input[2] = zero_name
        elif kind == "axis":
            for name, axis in f.fix[1]:
                by_name[name].attribute.append(helper.make_attribute("axis", int(axis)))
        done.append(f)
    _drop_dead_qdq(out)
    _topological_sort(out.graph)
    # The checker after the rewrite catches ptq's bugs; a model that already failed it before
    # (e.g. an exporter's output without a shape) cannot be held to it.
    return finalize(out, check=_passes_checker(model)), done


def _passes_checker(model: onnx.ModelProto) -> bool:
    try:
        onnx.checker.check_model(model, full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError):
        return False
    except ValueError:                      # over 2 GB: finalize skips the check itself
        return True
    return True


def _topological_sort(graph: onnx.GraphProto) -> None:
    """Reorder nodes so each comes after its producers (a reused DQ may sit later), keeping
    the original order wherever it is already valid (Kahn's algorithm, lowest index first)."""
    import heapq

    nodes = list(graph.node)
    producer = {o: i for i, n in enumerate(nodes) for o in n.output if o}
    deps = [{producer[x] for x in n.input if x in producer} for n in nodes]
    users: dict[int, list[int]] = {}
    for i, d in enumerate(deps):
        for j in d:
            users.setdefault(j, []).append(i)
    missing = [len(d) for d in deps]
    heap = [i for i, m in enumerate(missing) if m == 0]
    heapq.heapify(heap)
    order = []
    while heap:
        i = heapq.heappop(heap)
        order.append(i)
        for u in users.get(i, []):
            missing[u] -= 1
            if missing[u] == 0:
                heapq.heappush(heap, u)
    if len(order) != len(nodes):                       # a cycle: leave the graph as it was
        return
    copies = []
    for i in order:
        c = onnx.NodeProto()
        c.CopyFrom(nodes[i])
        copies.append(c)
    del graph.node[:]
    graph.node.extend(copies)


def _drop_dead_qdq(model: onnx.ModelProto) -> None:
    """Remove Q/DQ nodes whose outputs nothing reads any more (repeat: a dead DQ frees its Q)."""
    while True:
        used = {x for n in model.graph.node for x in n.input} | {o.name for o in model.graph.output}
        dead = [n for n in model.graph.node
                if n.op_type in ("QuantizeLinear", "DequantizeLinear")
                and not any(o in used for o in n.output)]
        if not dead:
            return
        for n in dead:
            model.graph.node.remove(n)


def _unique(model: onnx.ModelProto, base: str) -> str:
    taken = {t.name for t in model.graph.initializer} | {o for n in model.graph.node
                                                         for o in n.output}
    name, k = base, 0
    while name in taken:
        k += 1
        name = f"{base}_{k}"
    return name
