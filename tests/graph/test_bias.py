"""Bias correction: the output shift of INT8 weight rounding, by hand and through ONNX Runtime."""
from __future__ import annotations

import json
import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from ptq.graph.bias import (METADATA_KEY, conv_output_shift, correct_biases, gemm_output_shift,
                            rounding_error)
from ptq.graph.qdq import insert_qdq, plan_qdq


def test_rounding_error_by_hand() -> None:
    w = np.array([[1.0, 0.26], [0.5, -0.5]], np.float32)
    # row 0: scale 0.1 -> 10, 2.6 -> 3: error 0.04; row 1: scale 0.2 -> 2.5 -> 2 (half to even)
    err = rounding_error(w, np.array([0.1, 0.2]), axis=0)
    np.testing.assert_allclose(err, [[0.0, 0.04], [-0.1, 0.1]], atol=1e-7)


def test_conv_shift_by_hand() -> None:
    dw = np.array([1.0, 2.0, 3.0, 4.0]).reshape(2, 1, 1, 2)       # depthwise, 2 channels
    np.testing.assert_allclose(conv_output_shift(dw, np.array([10.0, 100.0]), group=2), [30, 700])
    dense = np.array([1.0, 2.0]).reshape(1, 2, 1, 1)                # 2 inputs -> 1 output
    np.testing.assert_allclose(conv_output_shift(dense, np.array([10.0, 100.0])), [210])


def test_gemm_shift_by_hand() -> None:
    db = np.array([[1.0, 0.0, 2.0], [0.0, 1.0, 1.0]])             # B [K=2, N=3]
    np.testing.assert_allclose(gemm_output_shift(db, np.array([10.0, 100.0])), [10, 100, 120])
    np.testing.assert_allclose(gemm_output_shift(db.T, np.array([10.0, 100.0]), trans_b=True),
                               [10, 100, 120])


def _depthwise(bias: bool) -> onnx.ModelProto:
    rng = np.random.default_rng(1)
    w = rng.normal(0, 0.3, (4, 1, 3, 3)).astype(np.float32)
    inits = [numpy_helper.from_array(w, "w")]
    if bias:
        inits.append(numpy_helper.from_array(np.array([0.1, -0.2, 0.3, 0.0], np.float32), "b"))
    node = helper.make_node("Conv", ["x", "w"] + (["b"] if bias else []), ["y"], name="dw", group=4)
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 4, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 4, 6, 6])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _run(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    return ort.InferenceSession(model.SerializeToString(), opts,
                                providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]


@pytest.mark.parametrize("bias", [True, False])
def test_corrected_int8_conv_has_the_fp32_mean_output(bias: bool) -> None:
    # Inputs on the INT8 grid of amax 4 (no activation rounding), channel means far from 0, and
    # constant over each image (every 3x3 window then has the image's mean, as the correction
    # assumes; real images differ at the borders): the only error left is weight rounding,
    # whose mean the correction removes exactly.
    rng = np.random.default_rng(2)
    levels = rng.integers(0, 128, (32, 4, 1, 1)) * (4.0 / 127)
    x = np.broadcast_to(levels, (32, 4, 8, 8)).astype(np.float32)
    model = _depthwise(bias)
    plan = plan_qdq(model, ("Conv",))
    means = {"x": x.mean(axis=(0, 2, 3))}
    fixed, record = correct_biases(model, plan, means)
    ref = _run(model, x)
    shift_before = (_run(insert_qdq(model, plan, {"x": 4.0}), x) - ref).mean(axis=(0, 2, 3))
    shift_after = (_run(insert_qdq(fixed, plan, {"x": 4.0}), x) - ref).mean(axis=(0, 2, 3))
    assert np.abs(shift_before).max() > 1e-3                 # weight rounding did shift the mean
    # float32 arithmetic on ~|y| <= 10 leaves ~1e-6 of the exact cancellation
    np.testing.assert_allclose(shift_after, 0.0, atol=1e-5)
    assert set(record) == {"dw"} and record["dw"] == pytest.approx(np.abs(shift_before).max(), rel=1e-4)
    assert [i.name for i in model.graph.initializer] == (["w", "b"] if bias else ["w"])  # input untouched


def test_auto_quantization_corrects_and_records_the_biases(digits_model_path, digits_calib_images) -> None:
    from ptq.calibration import CalibrateConfig, PreprocessOptions, calibrate
    from ptq.quantization import QuantizeConfig, quantize

    table = calibrate(digits_model_path, digits_calib_images,
                      CalibrateConfig(preprocess=PreprocessOptions(preset="raw", mean=(0.0,), std=(255.0,))))
    q = quantize(digits_model_path, table)  # the defaults: auto ranges, bias correction on
    meta = {p.key: p.value for p in q.metadata_props}
    assert meta["ptq.algo"] == "auto" and METADATA_KEY in meta
    weighted = [n.name for n in onnx.load(str(digits_model_path)).graph.node if n.op_type in ("Conv", "Gemm")]
    assert sorted(json.loads(meta[METADATA_KEY])) == sorted(weighted)
    off = quantize(digits_model_path, table, config=QuantizeConfig(bias_correction=False))
    assert METADATA_KEY not in {p.key for p in off.metadata_props}
