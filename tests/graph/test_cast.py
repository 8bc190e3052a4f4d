"""FP16 pinning via Cast nodes and FP16 initializers (TensorRT 11 strong typing)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from ptq.backends.ort import OrtRunner
from ptq.errors import ConfigError
from ptq.graph.cast import FP16_MAX, pin_fp16
from ptq.graph.model import infer_types
from ptq.graph.precisions import Precision, layer_precisions
from ptq.quantization import QuantizeConfig, quantize, quantize_with_summary


def _types(model: onnx.ModelProto) -> dict[str, int]:
    return {k: v.elem_type for k, v in infer_types(model).items()}


def _inits(model: onnx.ModelProto) -> dict[str, onnx.TensorProto]:
    return {t.name: t for t in model.graph.initializer}


def _by_name(model: onnx.ModelProto) -> dict[str, onnx.NodeProto]:
    return {n.name: n for n in model.graph.node}


@pytest.fixture(scope="module")
def pinned(digits_model_path: Path, digits_ranges: Path):
    """INT8 digits CNN with conv2+relu2 (consecutive) and fc (feeds the graph output) in FP16."""
    return quantize_with_summary(digits_model_path, digits_ranges,
                                 pins={"conv2": "fp16", "relu2": "fp16", "fc": "fp16"})


def test_fp16_island_structure(pinned) -> None:
    model, nodes, inits = pinned.model, _by_name(pinned.model), _inits(pinned.model)
    casts = {n.name: (n.input[0], n.output[0], n.attribute[0].i) for n in model.graph.node
             if n.op_type == "Cast"}
    assert casts == {
        "relu1_cast_to_fp16": ("relu1", "relu1_cast_to_fp16", TensorProto.FLOAT16),
        "relu2_cast_to_fp32": ("relu2_fp16", "relu2", TensorProto.FLOAT),      # feeds conv3's Q
        "flatten_cast_to_fp16": ("flatten", "flatten_cast_to_fp16", TensorProto.FLOAT16),
        "logits_cast_to_fp32": ("logits_fp16", "logits", TensorProto.FLOAT),   # graph output
    }
    assert nodes["relu2"].input[0] == nodes["conv2"].output[0] == "conv2_fp16"  # no Cast pair between
    assert nodes["conv2"].input[1:] == ["conv2.weight_fp16", "conv2.bias_fp16"]
    for name in ("conv2.weight_fp16", "conv2.bias_fp16", "fc.weight_fp16", "fc.bias_fp16"):
        assert inits[name].data_type == TensorProto.FLOAT16
    assert "conv2.weight" not in inits and "fc.bias" not in inits  # FP32 originals had no other reader
    for value in (*model.graph.input, *model.graph.output):
        assert value.type.tensor_type.elem_type == TensorProto.FLOAT
    assert pinned.summary.casts == 4
    onnx.checker.check_model(model, full_check=True)


def test_precisions_read_back_from_the_graph(pinned) -> None:
    precisions = layer_precisions(pinned.model)
    assert {n for n, p in precisions.items() if p is Precision.FP16} == {"conv2", "relu2", "fc"}
    assert {n for n, p in precisions.items() if p is Precision.INT8} == \
        {"conv1", "conv3", "add", "pool1", "conv4", "pool2"}
    counts = pinned.summary.counts
    assert counts == {"int8": 6, "fp16": 3, "fp32": len(precisions) - 9}


def test_fp16_model_runs_in_ort(pinned, digits_model_path: Path) -> None:
    x = np.random.default_rng(0).random((4, 3, 16, 16), np.float32)
    with OrtRunner(pinned.model, optimization="disable") as r:
        out = r.infer({"image": x})["logits"]
    assert out.dtype == np.float32 and out.shape == (4, 10) and np.all(np.isfinite(out))


def test_all_fp16_stays_within_fp16_rounding(digits_model_path: Path) -> None:
    """Every layer in FP16, no INT8: only FP16 rounding remains. Half precision keeps 11
    significant bits (relative step 2**-11 = 4.9e-4) and the CNN has 5 weighted layers, so
    the logit error should stay within a few such steps of the logit scale: bound 2e-3."""
    fp32 = onnx.load(digits_model_path)
    every = {n.name: "fp16" for n in fp32.graph.node}
    model = quantize(fp32, {}, pins=every, config=QuantizeConfig(op_types=()))
    assert not any(n.op_type == "QuantizeLinear" for n in model.graph.node)
    assert sum(n.op_type == "Cast" for n in model.graph.node) == 2  # one in, one out
    x = np.random.default_rng(1).random((16, 3, 16, 16), np.float32)
    with OrtRunner(fp32, optimization="disable") as a, OrtRunner(model, optimization="disable") as b:
        ref, out = a.infer({"image": x})["logits"], b.infer({"image": x})["logits"]
    assert 0 < np.abs(ref - out).max() <= 2e-3 * np.abs(ref).max()


def _clip_model(upper: float = 6.0) -> onnx.ModelProto:
    """x -> c1 = Clip(lo, hi) -> conv -> c2 = Clip(lo, hi) -> y: two Clips share lo/hi (as ReLU6s do)."""
    w = np.random.default_rng(2).standard_normal((4, 4, 1, 1)).astype(np.float32)
    nodes = [helper.make_node("Clip", ["x", "lo", "hi"], ["c1"], name="c1"),
             helper.make_node("Conv", ["c1", "w"], ["conv"], name="conv"),
             helper.make_node("Clip", ["conv", "lo", "hi"], ["y"], name="c2")]
    inits = [numpy_helper.from_array(np.array(0.0, np.float32), "lo"),
             numpy_helper.from_array(np.array(upper, np.float32), "hi"), numpy_helper.from_array(w, "w")]
    value = helper.make_tensor_value_info
    graph = helper.make_graph(nodes, "clips", [value("x", TensorProto.FLOAT, ["N", 4, 4, 4])],
                              [value("y", TensorProto.FLOAT, ["N", 4, 4, 4])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def test_shared_clip_bounds_are_duplicated_not_converted() -> None:
    model = _clip_model()
    result = pin_fp16(model, {"c1"}, _types(model))
    inits, nodes = _inits(result.model), _by_name(result.model)
    assert inits["lo"].data_type == inits["hi"].data_type == TensorProto.FLOAT  # c2 still reads them
    assert nodes["c2"].input[1:] == ["lo", "hi"]
    assert nodes["c1"].input[1:] == ["lo_fp16", "hi_fp16"]
    assert inits["hi_fp16"].data_type == TensorProto.FLOAT16
    both = pin_fp16(model, {"c1", "c2"}, _types(model)).model
    assert {"lo", "hi"}.isdisjoint(_inits(both))  # no FP32 reader left: originals dropped
    x = np.random.default_rng(3).standard_normal((2, 4, 4, 4)).astype(np.float32) * 8
    with OrtRunner(model) as a, OrtRunner(result.model) as b:
        np.testing.assert_allclose(a.infer({"x": x})["y"], b.infer({"x": x})["y"], atol=2e-2)


def test_out_of_range_initializer_saturates_with_a_note() -> None:
    model = _clip_model(upper=3.0e38)  # "no upper bound" exported as FLT_MAX
    result = pin_fp16(model, {"c1"}, _types(model))
    assert numpy_helper.to_array(_inits(result.model)["hi_fp16"]) == np.float16(FP16_MAX)
    assert any("saturated" in note for note in result.notes)


def test_unpinnable_and_unknown_nodes_are_refused() -> None:
    model = _clip_model()
    cast = helper.make_node("Cast", ["y"], ["y64"], name="cast", to=TensorProto.DOUBLE)
    model.graph.node.append(cast)
    with pytest.raises(ConfigError, match="cannot be pinned to FP16"):
        pin_fp16(model, {"cast"}, _types(model), check=False)
    with pytest.raises(ConfigError, match="no node named"):
        pin_fp16(model, {"c3"}, _types(model), check=False)
