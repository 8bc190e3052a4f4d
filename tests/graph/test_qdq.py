"""The Q/DQ pass on the real digits CNN and on small graphs for the op types it lacks.

Every produced model is checked structurally (what TensorRT's parser and ONNX Runtime
require) and run in ONNX Runtime.
"""
from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from ptq.backends.ort import OrtRunner
from ptq.calibrators import AMAX_FLOOR
from ptq.graph.edit import add_outputs
from ptq.graph.model import activations, load_model
from ptq.graph.qdq import opset_of
from ptq.quantization import QuantizeConfig, quantize
from ptq.table import CalibrationTable
from zoo import read_image_folder


@pytest.fixture(scope="module")
def digits_qdq(digits_model_path: Path, digits_ranges: Path) -> onnx.ModelProto:
    return quantize(digits_model_path, CalibrationTable.load(digits_ranges))


def _nodes(model: onnx.ModelProto, op: str) -> list[onnx.NodeProto]:
    return [n for n in model.graph.node if n.op_type == op]


def _init(model: onnx.ModelProto, name: str) -> np.ndarray:
    return numpy_helper.to_array(next(t for t in model.graph.initializer if t.name == name))


def _axis(node: onnx.NodeProto) -> int | None:
    return next((a.i for a in node.attribute if a.name == "axis"), None)


def check_qdq_invariants(model: onnx.ModelProto) -> None:
    """What TENSORRT.md §3 requires of every Q/DQ node."""
    onnx.checker.check_model(model, full_check=True)
    assert opset_of(model) >= 13
    producers = {o: n for n in model.graph.node for o in n.output}
    quantized_inputs = [n.input[0] for n in _nodes(model, "QuantizeLinear")]
    assert len(quantized_inputs) == len(set(quantized_inputs)), "one shared Q/DQ pair per tensor"
    for node in _nodes(model, "QuantizeLinear") + _nodes(model, "DequantizeLinear"):
        assert len(node.input) == 3, f"{node.name}: explicit zero point"
        scale, zp = _init(model, node.input[1]), _init(model, node.input[2])
        assert zp.dtype == np.int8 and not zp.any() and zp.shape == scale.shape
        assert scale.dtype == np.float32 and np.all(np.isfinite(scale)) and np.all(scale > 0)
        if scale.ndim == 1:  # per-channel: axis written out, never ONNX's implicit default
            assert _axis(node) is not None
    for node in _nodes(model, "DequantizeLinear"):
        q = producers[node.input[0]]
        assert q.op_type == "QuantizeLinear" and q.input[1:] == node.input[1:] and _axis(q) == _axis(node)
    for node in model.graph.node:  # weighted-op outputs are never quantized
        if node.op_type in ("Conv", "ConvTranspose", "Gemm", "MatMul"):
            consumers = [c for c in model.graph.node if node.output[0] in c.input]
            assert all(c.op_type != "QuantizeLinear" for c in consumers), node.name


def test_digits_qdq_model_is_valid_and_placed_as_the_rules_say(digits_qdq: onnx.ModelProto) -> None:
    check_qdq_invariants(digits_qdq)
    q_inputs = {n.input[0] for n in _nodes(digits_qdq, "QuantizeLinear")}
    # By hand from the rules: conv inputs (image, relu1, relu2, pool1), the residual relu1 (shared),
    # MaxPool input relu3, GlobalAveragePool input relu4, Gemm input flatten; 5 weights.
    assert q_inputs == {"image", "relu1", "relu2", "relu3", "pool1", "relu4", "flatten",
                        "conv1.weight", "conv2.weight", "conv3.weight", "conv4.weight", "fc.weight"}
    dq_of = {n.output[0]: n.input[0] for n in _nodes(digits_qdq, "DequantizeLinear")}
    node = {n.name: n for n in digits_qdq.graph.node}
    assert node["add"].input[0] == "conv3"  # the fused conv3 branch stays float
    assert dq_of[node["add"].input[1]] == "relu1_QuantizeLinear_Output"
    assert node["conv2"].input[0] == node["add"].input[1]  # relu1's pair is shared by both consumers
    assert node["conv1"].input[2] == "conv1.bias" and node["fc"].input[2] == "fc.bias"  # bias float


def test_scales_match_independent_computation(digits_qdq: onnx.ModelProto, digits_model_path: Path,
                                              digits_ranges: Path) -> None:
    table = CalibrationTable.load(digits_ranges)
    for tensor in ("image", "relu1", "flatten"):
        expected = np.float32(table.tensors[tensor].amax["entropy"]) / np.float32(127)
        assert _init(digits_qdq, f"{tensor}_scale") == expected
    source = load_model(digits_model_path)
    for name, axis in (("conv2.weight", 0), ("fc.weight", 0)):
        w = _init(source, name)
        # per output channel, by a plain loop: max |w| over everything else, / 127
        expected = np.array([np.abs(np.take(w, k, axis=axis)).max() / 127 for k in range(w.shape[axis])])
        np.testing.assert_allclose(_init(digits_qdq, f"{name}_scale"), expected, rtol=1e-6)
        q = next(n for n in digits_qdq.graph.node if n.input[0] == name)
        assert _axis(q) == axis


def test_runs_in_ort_close_to_fp32(digits_model_path: Path, digits_ranges: Path,
                                   digits_images: Path) -> None:
    """On the 300 real test digits, with minmax ranges (nothing clipped, so only INT8 rounding
    remains), no logit moves by more than 5 % of the largest logit. Measured: 2.3 %; the bound
    is 2x that, far below the ~50 % a misplaced or mis-scaled Q/DQ pair causes."""
    x, _ = read_image_folder(digits_images)
    qdq = quantize(digits_model_path, CalibrationTable.load(digits_ranges),
                   config=QuantizeConfig(algo="minmax"))
    with OrtRunner(digits_model_path, optimization="disable") as ref, \
            OrtRunner(qdq, optimization="disable") as cand:
        a, b = ref.infer({"image": x})["logits"], cand.infer({"image": x})["logits"]
    assert np.abs(a - b).max() < 0.05 * np.abs(a).max()


def test_input_model_never_mutated(digits_model_path: Path, digits_ranges: Path) -> None:
    before = hashlib.sha256(digits_model_path.read_bytes()).hexdigest()
    proto = onnx.load(digits_model_path)
    proto_bytes = proto.SerializeToString()
    quantize(digits_model_path, digits_ranges)
    quantize(proto, digits_ranges, pins={"conv2": "fp16"})
    assert hashlib.sha256(digits_model_path.read_bytes()).hexdigest() == before
    assert proto.SerializeToString() == proto_bytes


def test_per_tensor_weights(digits_model_path: Path, digits_ranges: Path) -> None:
    model = quantize(digits_model_path, digits_ranges, config=QuantizeConfig(per_channel_weights=False))
    check_qdq_invariants(model)
    assert _init(model, "conv2.weight_scale").shape == ()
    assert all(_axis(n) is None for n in _nodes(model, "QuantizeLinear"))


# --- op types the digits CNN lacks: small graphs, ranges measured in ORT ---------------------


def _toy(nodes, inits: dict[str, np.ndarray], opset: int = 17, y_rank: int = 4) -> onnx.ModelProto:
    graph = helper.make_graph(
        nodes, "toy", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None] * y_rank)],
        [numpy_helper.from_array(v.astype(np.float32), k) for k, v in inits.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    return model


def _measured_ranges(model: onnx.ModelProto, x: np.ndarray) -> dict[str, float]:
    acts = activations(model)
    with OrtRunner(add_outputs(model, [a.info for a in acts]), optimization="disable") as r:
        out = r.infer({"x": x})
    return {name: float(np.abs(v).max()) for name, v in out.items()}


def _run_both(model: onnx.ModelProto, qdq: onnx.ModelProto, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    with OrtRunner(model, optimization="disable") as a, OrtRunner(qdq, optimization="disable") as b:
        return a.infer({"x": x})["y"], b.infer({"x": x})["y"]


def _weights(rng: np.random.Generator, *shape: int) -> np.ndarray:
    return rng.standard_normal(shape) * 0.3


@pytest.mark.parametrize("op", ["ConvTranspose", "MatMul", "GemmNoTrans", "AveragePool"])
def test_other_op_types_quantize_and_run(op: str) -> None:
    rng = np.random.default_rng(1)
    if op == "ConvTranspose":   # W [C=4, K=6, 3, 3]: per-channel along axis 1 (6 scales)
        nodes = [helper.make_node("ConvTranspose", ["x", "w", "b"], ["y"], name="op")]
        inits, axis, channels = {"w": _weights(rng, 4, 6, 3, 3), "b": _weights(rng, 6)}, 1, 6
    elif op == "MatMul":        # x [N,4,8,8] @ W [8, 5]: axis 1 (5 scales)
        nodes = [helper.make_node("MatMul", ["x", "w"], ["y"], name="op")]
        inits, axis, channels = {"w": _weights(rng, 8, 5)}, 1, 5
    elif op == "GemmNoTrans":   # flatten -> Gemm with B [256, 7] (transB=0): axis 1
        nodes = [helper.make_node("Flatten", ["x"], ["f"], name="flat"),
                 helper.make_node("Gemm", ["f", "w", "b"], ["y"], name="op")]
        inits, axis, channels = {"w": _weights(rng, 256, 7), "b": _weights(rng, 7)}, 1, 7
    else:                       # AveragePool: input Q/DQ only, no weight
        nodes = [helper.make_node("AveragePool", ["x"], ["y"], name="op", kernel_shape=[2, 2])]
        inits, axis, channels = {}, None, 0
    model = _toy(nodes, inits, y_rank=2 if op == "GemmNoTrans" else 4)
    x = rng.standard_normal((2, 4, 8, 8)).astype(np.float32)
    qdq = quantize(model, _measured_ranges(model, x))
    check_qdq_invariants(qdq)
    op_node = next(n for n in qdq.graph.node if n.name == "op")
    assert op_node.input[0].endswith("_DequantizeLinear_Output")
    if axis is not None:
        wq = next(n for n in _nodes(qdq, "QuantizeLinear") if n.input[0] == "w")
        assert _axis(wq) == axis and _init(qdq, "w_scale").shape == (channels,)
    ref, out = _run_both(model, qdq, x)
    assert np.abs(ref - out).max() < 0.05 * np.abs(ref).max()  # 8-bit: ~1% per quantized tensor


def _concat_model() -> onnx.ModelProto:
    rng = np.random.default_rng(2)
    inits = {"wa": _weights(rng, 4, 4, 1, 1), "wb": _weights(rng, 4, 4, 1, 1) * 5,
             "wc": _weights(rng, 3, 8, 1, 1)}
    nodes = [helper.make_node("Conv", ["x", "wa"], ["ca"], name="ca"),
             helper.make_node("Conv", ["x", "wb"], ["cb"], name="cb"),
             helper.make_node("Relu", ["ca"], ["a"], name="a"),
             helper.make_node("Relu", ["cb"], ["b"], name="b"),
             helper.make_node("Concat", ["a", "b"], ["cat"], name="cat", axis=1),
             helper.make_node("Conv", ["cat", "wc"], ["y"], name="cc")]
    return _toy(nodes, inits)


def test_concat_inputs_are_never_split_across_scales() -> None:
    model = _concat_model()
    x = np.random.default_rng(3).standard_normal((2, 4, 8, 8)).astype(np.float32)
    ranges = _measured_ranges(model, x)
    assert ranges["b"] > 2 * ranges["a"]  # different ranges: a naive pass would give two scales
    default = quantize(model, ranges)
    check_qdq_invariants(default)
    cat = next(n for n in default.graph.node if n.name == "cat")
    assert list(cat.input) == ["a", "b"]  # default: no Q/DQ on Concat inputs at all
    shared = quantize(model, ranges, config=QuantizeConfig(op_types=("Conv", "Concat")))
    check_qdq_invariants(shared)
    assert _init(shared, "a_scale") == _init(shared, "b_scale") == np.float32(ranges["b"]) / np.float32(127)
    ref, out = _run_both(model, shared, x)
    assert np.abs(ref - out).max() < 0.05 * np.abs(ref).max()


def test_old_opset_is_upgraded_and_zero_weight_channel_floored() -> None:
    w = _weights(np.random.default_rng(4), 4, 4, 3, 3)
    w[2] = 0.0  # a dead output channel: max|w| = 0 must not become a zero scale
    model = _toy([helper.make_node("Conv", ["x", "w"], ["y"], name="op", pads=[1, 1, 1, 1])],
                 {"w": w}, opset=11)
    x = np.random.default_rng(5).standard_normal((1, 4, 8, 8)).astype(np.float32)
    qdq = quantize(model, _measured_ranges(model, x))
    check_qdq_invariants(qdq)
    assert opset_of(model) == 11 and opset_of(qdq) >= 13
    assert _init(qdq, "w_scale")[2] == np.float32(AMAX_FLOOR) / np.float32(127)
    ref, out = _run_both(model, qdq, x)
    assert np.all(ref[:, 2] == out[:, 2]) and np.all(out[:, 2] == 0)
