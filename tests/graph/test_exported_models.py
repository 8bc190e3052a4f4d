"""Issue 9 regressions on models built the way exporters build them (tests/graph/exported.py):
calibrate -> quantize -> run in ONNX Runtime against the FP32 model.

QDQ models run with ORT graph optimizations disabled (ORT's fused CPU kernels are not
faithful to TensorRT on CPUs without VNNI; the reference kernels are). Weights are random,
so the checks are on placement and on numerics, not on trained accuracy.
"""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, numpy_helper

import exported
from ptq.backends.ort import OrtRunner
from ptq.calibration import calibrate
from ptq.graph.model import activations, load_model
from ptq.graph.precisions import Precision, layer_precisions
from ptq.graph.qdq import plan_qdq
from ptq.graph.rules import DEFAULT_OP_TYPES
from ptq.quantization import QuantizeConfig, quantize_with_summary

# INT8 per-tensor activations + per-channel weights on 2-12 layers of random weights: each layer
# adds ~0.5-1% relative error (a step of amax/127 on roughly uniform values), so the outputs of
# these small nets stay above 0.98 cosine to FP32; a wrong scale or a quantized bias drops far below.
MIN_COSINE = 0.98


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.astype(np.float64).ravel(), b.astype(np.float64).ravel()
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def _data(shape: tuple[int, ...], n: int = 4, seed: int = 0, dtype=np.float32) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(shape).astype(dtype) for _ in range(n)]


def _run(model, x: np.ndarray, optimization: str = "disable") -> dict[str, np.ndarray]:
    with OrtRunner(model, optimization=optimization, providers="cpu") as r:
        return r.infer({"x": x})


def roundtrip(model: onnx.ModelProto, tmp_path: Path, shape: tuple[int, ...], *,
              config: QuantizeConfig = QuantizeConfig(), pins=(), dtype=np.float32):
    """Save, calibrate on seeded data, quantize; check calibration covered every tensor the
    Q/DQ plan needs; return (result, fp32 outputs, int8 outputs) on held-out data."""
    path = tmp_path / f"{model.graph.name}.onnx"
    onnx.save(model, path)
    table = calibrate(path, _data(shape, dtype=dtype))
    proto = load_model(path)
    planned = plan_qdq(proto, config.op_types or DEFAULT_OP_TYPES).activation_tensors()
    assert set(planned) <= set(table.tensors), "calibration must observe every planned tensor"
    result = quantize_with_summary(path, table, config=config, pins=pins)
    x = _data(shape, n=1, seed=99, dtype=dtype)[0]          # data calibration never saw
    return result, _run(path, x), _run(result.model, x)


def _q_inputs(model: onnx.ModelProto) -> set[str]:
    return {n.input[0] for n in model.graph.node if n.op_type == "QuantizeLinear"}


def _dq_fed(model: onnx.ModelProto, node_name: str) -> list[bool]:
    dq = {n.output[0] for n in model.graph.node if n.op_type == "DequantizeLinear"}
    node = next(n for n in model.graph.node if n.name == node_name)
    return [x in dq for x in node.input]


def test_bias_through_reshape_constant_is_a_weight_not_an_activation(tmp_path: Path) -> None:
    """rapidocr's MobileNetV3: Add(conv, Reshape(Constant)) was taken for a residual Add
    and its bias for an activation ("ranges have no entry for 'Reshape@0'")."""
    model = exported.bias_reshape_model()
    assert "bias0_4d" not in {a.name for a in activations(model)}
    result, ref, out = roundtrip(model, tmp_path, (2, 3, 16, 16))
    assert not any(_dq_fed(result.model, "add0")) and not any(_dq_fed(result.model, "add1"))
    assert not {"bias0_4d", "bias1_4d"} & _q_inputs(result.model)
    assert result.summary.counts["int8"] == 4     # conv0, conv1, gap, fc
    assert _cosine(ref["y"], out["y"]) > MIN_COSINE


def test_weights_through_cast_identity_transpose_are_folded(tmp_path: Path) -> None:
    model = exported.tied_weights_model()
    acts = {a.name for a in activations(model)}
    assert not {"w0", "w1_shared", "E_t"} & acts   # computed from initializers: not activations
    result, ref, out = roundtrip(model, tmp_path, (2, 3, 16, 16))
    q = {n.input[0]: n for n in result.model.graph.node if n.op_type == "QuantizeLinear"}
    inits = {t.name: t for t in result.model.graph.initializer}
    for name, channels, axis in (("w0_folded", 8, 0), ("w1_shared_folded", 8, 0), ("E_t_folded", 5, 1)):
        assert name in inits, name                # a constant TensorRT can quantize per channel
        scale = numpy_helper.to_array(inits[q[name].input[1]])
        assert scale.shape == (channels,) and q[name].attribute[0].i == axis
    w0 = numpy_helper.to_array(inits["w0_folded"])
    assert w0.dtype == np.float32 and np.array_equal(w0, numpy_helper.to_array(inits["w0_fp16"]).astype(np.float32))
    assert np.array_equal(ref["E_out"], out["E_out"])   # the tied tensor's other reader is untouched
    assert _cosine(ref["y"], out["y"]) > MIN_COSINE


@pytest.mark.parametrize("group", [1, 2])
def test_grouped_conv_transpose_weight_scales(tmp_path: Path, group: int) -> None:
    """W[C=4, 6/group, 2, 2]: group=1 has 6 per-channel scales on axis 1; group=2 has only 3
    entries on axis 1 for 6 output channels, so no ONNX axis is per-output-channel: per-tensor."""
    result, ref, out = roundtrip(exported.grouped_conv_transpose_model(group), tmp_path, (2, 4, 8, 8))
    q = next(n for n in result.model.graph.node if n.op_type == "QuantizeLinear" and n.input[0] == "up.w")
    scale = numpy_helper.to_array(next(t for t in result.model.graph.initializer if t.name == q.input[1]))
    if group == 1:
        assert scale.shape == (6,) and [a.i for a in q.attribute if a.name == "axis"] == [1]
        assert not result.summary.notes
    else:
        assert scale.shape == () and not q.attribute
        assert any("up" in n and "per-tensor" in n for n in result.summary.notes)
    assert _cosine(ref["y"], out["y"]) > MIN_COSINE


def test_transformer_encoder_keeps_attention_softmax_layernorm_gelu_float(tmp_path: Path) -> None:
    model = exported.transformer_encoder()
    result, ref, out = roundtrip(model, tmp_path, (2, 8, 16))
    qdq = result.model
    for i in range(2):
        assert not any(_dq_fed(qdq, f"l{i}.qk")) and not any(_dq_fed(qdq, f"l{i}.av"))  # attention
        for name in (f"l{i}.softmax", f"l{i}.ln1", f"l{i}.ln2", f"l{i}.gelu.erf", f"l{i}.res1"):
            assert not any(_dq_fed(qdq, name)), name
        for lin in ("q", "k", "v", "o", "fc1", "fc2"):
            assert _dq_fed(qdq, f"l{i}.{lin}.matmul") == [True, True], lin  # activation + weight
    precisions = layer_precisions(qdq)
    assert precisions["l0.qk"] is Precision.FP32 and precisions["l0.q.matmul"] is Precision.INT8
    assert _cosine(ref["y"], out["y"]) > MIN_COSINE
    # Opt-in: attention MatMuls quantized on both inputs, per-tensor.
    opt = quantize_with_summary(tmp_path / "transformer_encoder.onnx",
                                calibrate(tmp_path / "transformer_encoder.onnx", _data((2, 8, 16))),
                                config=QuantizeConfig(op_types=(*DEFAULT_OP_TYPES, "AttentionMatMul")))
    assert _dq_fed(opt.model, "l0.qk") == [True, True] and _dq_fed(opt.model, "l1.av") == [True, True]
    assert opt.summary.counts["int8"] == result.summary.counts["int8"] + 4


def test_se_block_prelu_resize_concat(tmp_path: Path) -> None:
    model = exported.se_block_model()
    result, ref, out = roundtrip(model, tmp_path, (2, 3, 16, 16))
    qdq = result.model
    assert _dq_fed(qdq, "se.gap") == [True]                    # INT8 reduction
    for name in ("hswish", "se.gate", "se.mul", "prelu", "up", "cat"):
        assert not any(_dq_fed(qdq, name)), name               # epilogues / opt-in ops stay float
    assert _dq_fed(qdq, "head")[:2] == [True, True]
    assert _cosine(ref["y"], out["y"]) > MIN_COSINE
    # Opt-in Resize (input 0 only, never its scales) and Concat (one shared scale).
    config = QuantizeConfig(op_types=(*DEFAULT_OP_TYPES, "Resize", "Concat"))
    opt, ref2, out2 = roundtrip(model, tmp_path, (2, 3, 16, 16), config=config)
    assert _dq_fed(opt.model, "up") == [True, False, False]
    scales = {t.name: numpy_helper.to_array(t) for t in opt.model.graph.initializer}
    q = {n.input[0]: n.input[1] for n in opt.model.graph.node if n.op_type == "QuantizeLinear"}
    assert scales[q["up"]] == scales[q["se"]] == scales[q["cat"]]   # concat inputs + output share
    assert _cosine(ref2["y"], out2["y"]) > MIN_COSINE


def _fp16(model: onnx.ModelProto) -> onnx.ModelProto:
    from onnxconverter_common import float16

    return float16.convert_float_to_float16(model, keep_io_types=False)


def test_fp16_model_gets_fp16_scales_and_pins_work(tmp_path: Path) -> None:
    """A float16 export (weights and I/O): Q/DQ scales are float16 (opset 19), the model
    runs in ORT, and FP32/FP16 pins still do what they say."""
    model = _fp16(exported.bias_reshape_model())
    result, ref, out = roundtrip(model, tmp_path, (2, 3, 16, 16), dtype=np.float16)
    qdq = result.model
    assert next(o.version for o in qdq.opset_import if o.domain in ("", "ai.onnx")) >= 19
    scale_names = {n.input[1] for n in qdq.graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear")}
    scales = [t for t in qdq.graph.initializer if t.name in scale_names]
    assert scales and all(t.data_type == TensorProto.FLOAT16 for t in scales)
    assert all(np.all(numpy_helper.to_array(t) > 0) for t in scales)
    assert out["y"].dtype == np.float16
    # FP16 carries ~3 decimal digits on top of the INT8 error: same bound as FP32.
    assert _cosine(ref["y"], out["y"]) > MIN_COSINE
    pinned, _, out_p = roundtrip(model, tmp_path, (2, 3, 16, 16), dtype=np.float16,
                                 pins={"conv1": "fp32", "conv0": "fp16"})
    precisions = layer_precisions(pinned.model)
    assert precisions["conv1"] is Precision.FP32 and precisions["conv0"] is Precision.FP16
    assert precisions["fc"] is Precision.INT8
    assert _cosine(ref["y"], out_p["y"]) > MIN_COSINE


def test_torch_exported_transformer_encoder(tmp_path: Path) -> None:
    """nn.TransformerEncoder (2 layers, GELU) through torch.onnx's TorchScript exporter: the
    in-projection weight arrives as a computed tensor, attention as MatMul(activation,
    activation), LayerNormalization and Erf as exported ops."""
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    layer = torch.nn.TransformerEncoderLayer(d_model=32, nhead=4, dim_feedforward=64, batch_first=True,
                                             activation="gelu")
    net = torch.nn.TransformerEncoder(layer, num_layers=2, enable_nested_tensor=False).eval()
    path = tmp_path / "torch_encoder.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")                 # the TorchScript exporter's deprecation notice
        torch.onnx.export(net, (torch.randn(2, 10, 32),), str(path), input_names=["x"], output_names=["y"],
                          dynamic_axes={"x": {0: "N"}}, opset_version=17, dynamo=False)
    model = onnx.load(path)
    result, ref, out = roundtrip(model, tmp_path, (2, 10, 32))
    precisions = layer_precisions(result.model)
    matmuls = {n.name: precisions[n.name] for n in model.graph.node if n.op_type in ("MatMul", "Gemm")}
    attention = {n for n in matmuls if n.endswith(("self_attn/MatMul_1", "self_attn/MatMul_2"))}
    assert len(attention) == 4 and all(matmuls[n] is Precision.FP32 for n in attention)
    assert all(p is Precision.INT8 for n, p in matmuls.items() if n not in attention)   # projections, FFN
    # Measured 0.99995 (trained-init weights, 8 INT8 GEMMs); the common bound applies.
    assert _cosine(ref["y"], out["y"]) > MIN_COSINE



def test_contrib_op_output_is_still_calibrated(tmp_path: Path) -> None:
    """ONNX shape inference cannot type a com.microsoft op's output; ONNX Runtime types it,
    so calibration observes it and the Conv that reads it gets its Q/DQ."""
    model = exported.contrib_op_model()
    assert "gelu" in {a.name for a in activations(model)}
    result, ref, out = roundtrip(model, tmp_path, (2, 3, 8, 8))
    assert _dq_fed(result.model, "c1")[:2] == [True, True]
    assert _cosine(ref["y"], out["y"]) > MIN_COSINE
