"""The Q/DQ placement registry: default set, weight axes, residual-Add classification."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from ptq.graph.model import load_model
from ptq.graph.rules import NOT_QUANTIZED, DEFAULT_OP_TYPES, RULES, GraphIndex, residual_inputs

# ModelOpt's INT8 default op types (TENSORRT.md §3.6): the baseline each rule is judged against.
MODELOPT_INT8_DEFAULT = {"Add", "AveragePool", "BatchNormalization", "Clip", "Conv", "ConvTranspose",
                         "Gemm", "GlobalAveragePool", "MatMul", "MaxPool", "Mul"}


def _model(nodes, inits: dict[str, np.ndarray], inputs: list[str], outputs: list[str]) -> onnx.ModelProto:
    graph = helper.make_graph(
        nodes, "toy", [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in inputs],
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in outputs],
        [numpy_helper.from_array(v.astype(np.float32), k) for k, v in inits.items()])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _slots(model: onnx.ModelProto, name: str) -> tuple[tuple[int, ...], int | None]:
    g = GraphIndex.build(model.graph)
    node = next(n for n in g.nodes if n.name == name)
    rule = RULES[node.op_type]
    return rule.activation_slots(node, g), rule.weight_slot(node, g)


def test_default_set_is_modelopt_minus_the_fusing_ops() -> None:
    # BN, Clip and Mul follow a conv and fuse into it: quantizing their input would quantize a
    # weighted-op output, which TensorRT's placement guide says not to do. They stay opt-in.
    assert set(DEFAULT_OP_TYPES) == MODELOPT_INT8_DEFAULT - {"BatchNormalization", "Clip", "Mul"}
    # Attention MatMuls (two activations) stay out of INT8 as in ModelOpt; Resize/Upsample are
    # opt-in because TensorRT moves the consumer's Q above them anyway.
    assert set(RULES) - set(DEFAULT_OP_TYPES) == {"BatchNormalization", "Clip", "Mul", "Concat",
                                                  "AttentionMatMul", "Resize", "Upsample"}
    assert all(len(rule.reason) > 40 for rule in RULES.values())  # the README prints these
    assert all(len(why) > 40 for why in NOT_QUANTIZED.values())
    assert not set(NOT_QUANTIZED) & set(RULES)


def test_weighted_ops_quantize_input_and_weight_never_bias(digits_model_path: Path) -> None:
    model = load_model(digits_model_path)
    for name in ("conv1", "conv2", "conv3", "conv4", "fc"):
        assert _slots(model, name) == ((0,), 1)  # slot 2 (bias) is never listed: it stays float


@pytest.mark.parametrize(("op", "attrs", "w_shape", "axis"), [
    ("Conv", {}, (8, 3, 3, 3), 0),
    ("ConvTranspose", {}, (3, 8, 3, 3), 1),
    ("Gemm", {"transB": 1}, (10, 32), 0),
    ("Gemm", {"transB": 0}, (32, 10), 1),
    ("Gemm", {}, (32, 10), 1),
    ("MatMul", {}, (32, 10), 1),
])
def test_weight_axis_is_the_output_channel(op: str, attrs: dict, w_shape: tuple, axis: int) -> None:
    node = helper.make_node(op, ["x", "w"], ["y"], name="n", **attrs)
    assert RULES[op].axis(node, w_shape) == axis
    # the axis indexes the output-channel dimension (10 or 8 here, never the input's 32 or 3)
    assert w_shape[axis] in (8, 10)


def test_activation_times_activation_matmul_quantizes_both_per_tensor() -> None:
    model = _model([helper.make_node("MatMul", ["a", "b"], ["y"], name="mm")], {}, ["a", "b"], ["y"])
    assert _slots(model, "mm") == ((0, 1), None)


def test_digits_residual_add_quantizes_the_skip_input(digits_model_path: Path) -> None:
    # add = conv3 + relu1: conv3 is the fused branch (longer path back to relu1, their common
    # ancestor), relu1 is the skip connection and the only input that gets Q/DQ.
    model = load_model(digits_model_path)
    add = next(n for n in model.graph.node if n.name == "add")
    assert list(add.input) == ["conv3", "relu1"]
    assert residual_inputs(add, GraphIndex.build(model.graph)) == (1,)


def _conv(name: str, x: str, inits: dict) -> onnx.NodeProto:
    inits[f"{name}.w"] = np.ones((4, 4, 1, 1))
    return helper.make_node("Conv", [x, f"{name}.w"], [name], name=name)


def test_add_without_a_residual_structure_gets_nothing() -> None:
    inits: dict = {"bias": np.ones((1, 4, 1, 1))}
    nodes = [_conv("c1", "x", inits), helper.make_node("Relu", ["x"], ["r"], name="r"),
             helper.make_node("Add", ["c1", "bias"], ["bias_add"], name="bias_add"),       # constant
             helper.make_node("Add", ["c1", "x"], ["input_add"], name="input_add"),        # graph input
             helper.make_node("Relu", ["x"], ["r2"], name="r2"),
             helper.make_node("Add", ["r", "r2"], ["plain_add"], name="plain_add")]       # no conv
    model = _model(nodes, inits, ["x"], ["bias_add", "input_add", "plain_add"])
    g = GraphIndex.build(model.graph)
    for node in g.nodes:
        if node.op_type == "Add":
            assert residual_inputs(node, g) == (), node.name


def test_convnext_style_add_is_not_residual() -> None:
    # conv -> add and conv -> relu -> add: the common ancestor IS the backbone (ModelOpt: no residual)
    inits: dict = {}
    nodes = [_conv("c1", "x", inits), helper.make_node("Relu", ["c1"], ["r"], name="r"),
             helper.make_node("Sigmoid", ["r"], ["s"], name="s"),
             helper.make_node("Add", ["c1", "s"], ["y"], name="add")]
    model = _model(nodes, inits, ["x"], ["y"])
    g = GraphIndex.build(model.graph)
    assert residual_inputs(g.nodes[-1], g) == ()


def test_two_conv_branches_without_common_ancestor_follow_modelopt_tie_rule() -> None:
    inits: dict = {}
    nodes = [_conv("ca", "a", inits), _conv("cb", "b", inits),
             helper.make_node("Add", ["ca", "cb"], ["y"], name="add")]
    model = _model(nodes, inits, ["a", "b"], ["y"])
    g = GraphIndex.build(model.graph)
    assert residual_inputs(g.nodes[-1], g) == (0,)  # input 1 fuses (d1 > d2 is false), 0 is residual


@pytest.mark.slow
def test_effnet_every_block_add_quantizes_the_block_input(effnet_path: Path) -> None:
    model = load_model(effnet_path)
    g = GraphIndex.build(model.graph)
    adds = [n for n in g.nodes if n.op_type == "Add"]
    assert len(adds) == 9
    for add in adds:
        block = add.name.rsplit(".", 1)[0]                       # "blocks.N"
        (slot,) = residual_inputs(add, g)
        fused = add.input[1 - slot]
        assert fused == f"{block}.project.conv"                  # the conv the Add fuses into
        assert not add.input[slot].startswith(block + ".")       # the skip comes from outside
