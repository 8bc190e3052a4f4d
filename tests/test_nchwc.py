"""Activations read in ONNX Runtime's NCHWc blocks (ptq.graph.nchwc) give the statistics that
the same activations reordered to NCHW give, on real models in real ONNX Runtime sessions: bit
for bit (histograms, widths, min/max), per-channel sums within float64 summation-order rounding.
Which tensors come out in blocks depends on the CPU's block (8 with AVX2, 16 with AVX-512):
the tests hold for either."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper
from test_derived import assert_same

from ptq import kernels
from ptq.backends.ort import nchwc_block
from ptq.calibration import CalibrateConfig, PreprocessOptions, open_model_data
from ptq.collect import Statistics, collect_statistics
from ptq.datasets import IterableData
from ptq.graph.model import activations, graph_inputs, load_model
from ptq.graph.nchwc import expose_blocked

BLOCK = nchwc_block()
needs_nchwc = pytest.mark.skipif(BLOCK is None, reason="this onnxruntime has no NCHWc kernels")


def both(model: onnx.ModelProto, batches: list) -> tuple[Statistics, Statistics]:
    kernels.kernel_name(wait=True)
    run = [collect_statistics(model, IterableData(batches, graph_inputs(model)).batches(len(batches[0])),
                              providers="cpu", device="cpu", blocked=b) for b in (False, True)]
    assert not run[0].blocked
    return run[0], run[1]


def channels(model: onnx.ModelProto) -> dict[str, int | None]:
    return {a.name: (a.info.shape[1] if a.info.shape and len(a.info.shape) == 4 else None)
            for a in activations(model)}


@needs_nchwc
@pytest.mark.slow
def test_efficientnet_on_real_photos(effnet_path: Path, sample_photos: Path) -> None:
    model = load_model(effnet_path)
    config = CalibrateConfig(preprocess=PreprocessOptions(preset="efficientnet-lite"))
    photos = np.concatenate([b.feeds["input"] for b in
                             open_model_data(effnet_path, model, sample_photos, config).batches(10)])
    batches = [photos[i:i + 4] * (1 + i / 8) for i in range(0, 20, 4)]  # growing grids
    plain, fast = both(model, batches)
    assert_same(plain, fast)
    c = channels(model)
    # every conv output and residual sum whose channels fill whole blocks (block 8: all 61
    # exposed tensors but the classifier's; block 16: the 24- and 40-channel ones stay NCHW)
    assert len(fast.blocked) >= 40 and all(c[n] % BLOCK == 0 for n in fast.blocked)
    assert {"blocks.6.add", "blocks.14.add", "stem.conv"} <= set(fast.blocked)


@needs_nchwc
def test_digits_cnn(digits_model_path: Path) -> None:
    from zoo import digits_arrays

    model = load_model(digits_model_path)
    x, _ = digits_arrays("calib")
    plain, fast = both(model, [x[i:i + 50] for i in range(0, 300, 50)])
    assert_same(plain, fast)
    c = channels(model)
    assert fast.blocked and all(c[n] % BLOCK == 0 for n in fast.blocked)


def _se_model() -> onnx.ModelProto:
    """Ops around NCHWc convolutions that the rewrite must leave in NCHW or handle: a 24-channel
    conv (padded to 32 in blocks of 16), a squeeze-excite Mul that broadcasts [N, 32, 1, 1],
    a residual Add, Sigmoid and LeakyRelu between convolutions, a Clip with Constant bounds."""
    rng = np.random.default_rng(0)

    def w(name: str, *shape: int) -> onnx.TensorProto:
        return helper.make_tensor(name, TensorProto.FLOAT, shape,
                                  (rng.standard_normal(shape) / np.sqrt(np.prod(shape[1:]))).astype(np.float32))

    nodes = [helper.make_node("Conv", ["x", "w1"], ["c1"], pads=[1, 1, 1, 1]),       # 24 channels
             helper.make_node("LeakyRelu", ["c1"], ["l1"], alpha=0.1),
             helper.make_node("Conv", ["l1", "w2"], ["c2"], pads=[1, 1, 1, 1]),      # 32
             helper.make_node("Sigmoid", ["c2"], ["s2"]),
             helper.make_node("Conv", ["s2", "w3"], ["c3"], pads=[1, 1, 1, 1]),      # 32
             helper.make_node("GlobalAveragePool", ["c3"], ["g3"]),
             helper.make_node("Mul", ["c3", "g3"], ["m3"]),                           # broadcast
             helper.make_node("Add", ["m3", "c2"], ["a3"]),                           # residual
             helper.make_node("Constant", [], ["lo"], value=helper.make_tensor("lo", TensorProto.FLOAT, [], [-1.0])),
             helper.make_node("Constant", [], ["hi"], value=helper.make_tensor("hi", TensorProto.FLOAT, [], [3.0])),
             helper.make_node("Clip", ["a3", "lo", "hi"], ["k3"]),
             helper.make_node("Conv", ["k3", "w4"], ["c4"], pads=[1, 1, 1, 1]),      # 64
             helper.make_node("Relu", ["c4"], ["out"])]
    for i, n in enumerate(nodes):
        n.name = f"n{i}_{n.op_type}"
    graph = helper.make_graph(nodes, "se", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 3, 32, 32])],
                              [helper.make_tensor_value_info("out", TensorProto.FLOAT, None)],
                              [w("w1", 24, 3, 3, 3), w("w2", 32, 24, 3, 3), w("w3", 32, 32, 3, 3),
                               w("w4", 64, 32, 3, 3)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 7
    return onnx.shape_inference.infer_shapes(model)


@needs_nchwc
def test_padded_broadcast_and_elementwise_ops(sample_photos: Path, tmp_path: Path) -> None:
    model = _se_model()
    path = tmp_path / "se.onnx"
    onnx.save(model, path)
    config = CalibrateConfig(preprocess=PreprocessOptions(preset="imagenet"))
    photos = np.concatenate([b.feeds["x"] for b in open_model_data(path, model, sample_photos, config).batches(10)])
    plain, fast = both(model, [photos[i:i + 5] * (1 + i / 10) for i in range(0, 20, 5)])
    assert_same(plain, fast)
    c = channels(model)
    assert all(c[n] % BLOCK == 0 for n in fast.blocked)
    assert ("c1" in fast.blocked) == (BLOCK == 8)  # 24 channels: padded in blocks of 16
    assert {"c2", "c3", "c4"} <= set(fast.blocked)


@needs_nchwc
def test_a_block_that_divides_no_channel_count_changes_nothing(tmp_path: Path) -> None:
    """expose_blocked over ORT's real optimized graph: with a block of 48 no tensor qualifies."""
    model = _se_model()
    acts = activations(model)
    names = [a.name for a in acts if a.producer is not None]
    from ptq.graph.edit import add_outputs
    augmented = add_outputs(model, [a.info for a in acts if a.producer is not None])
    opts = ort.SessionOptions()
    opts.optimized_model_filepath = str(tmp_path / "opt.onnx")
    opts.log_severity_level = 3
    ort.InferenceSession(augmented.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    optimized = onnx.load(tmp_path / "opt.onnx")
    shapes = {a.name: a.info.shape for a in acts}
    same, mapping = expose_blocked(optimized, set(names), shapes, 48)
    assert mapping == {} and same is optimized
    _, mapping = expose_blocked(optimized, set(names), shapes, BLOCK)
    assert mapping and all(m.block == BLOCK for m in mapping.values())


@needs_nchwc
def test_qdq_model_at_level_nchwc_equals_plain_onnxruntime(digits_model_path: Path,
                                                           digits_ranges: Path) -> None:
    """ptq's level `nchwc` (Q/DQ moved onto the NCHWc blocks) computes what onnxruntime's own
    session computes at level all with its Q/DQ fusions off, bit for bit; no integer kernel."""
    from zoo import digits_arrays

    from ptq.backends.ort import OrtRunner
    from ptq.quantization import quantize
    from ptq.table import CalibrationTable

    qdq = quantize(load_model(digits_model_path), CalibrationTable.load(digits_ranges))
    x, _ = digits_arrays("test")
    feeds = {"image": x[:64]}
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.add_session_config_entry("session.disable_quant_qdq", "1")
    want = ort.InferenceSession(qdq.SerializeToString(), opts, providers=["CPUExecutionProvider"]).run(None, feeds)
    with OrtRunner(qdq, providers="cpu", optimization="nchwc") as runner:
        assert runner.on_blocks
        got = list(runner.infer(feeds).values())
    np.testing.assert_array_equal(got[0], want[0])
    with OrtRunner(qdq, providers="cpu", optimization="disable") as runner:
        exact = list(runner.infer(feeds).values())[0]
    # FP32 summation order apart, the same model: logits within a few Q steps of `disable`
    assert np.abs(got[0] - exact).max() < 0.05 * np.abs(exact).max()
    assert (got[0].argmax(1) == exact.argmax(1)).mean() >= 0.98


def _qdq_conv() -> bytes:
    """x -> Q -> DQ -> Conv(DQ(W_int8)) -> Q -> DQ: the pattern ORT fuses into QLinearConv."""
    f, i8 = TensorProto.FLOAT, TensorProto.INT8
    w = np.random.default_rng(0).integers(-100, 100, (16, 8, 3, 3)).astype(np.int8)
    inits = [helper.make_tensor("s", f, [], [0.05]), helper.make_tensor("z", i8, [], [0]),
             helper.make_tensor("ws", f, [], [0.01]), helper.make_tensor("w", i8, w.shape, w.tobytes(), raw=True)]
    nodes = [helper.make_node("QuantizeLinear", ["x", "s", "z"], ["xq"]),
             helper.make_node("DequantizeLinear", ["xq", "s", "z"], ["xd"]),
             helper.make_node("DequantizeLinear", ["w", "ws", "z"], ["wd"]),
             helper.make_node("Conv", ["xd", "wd"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("QuantizeLinear", ["c", "s", "z"], ["cq"]),
             helper.make_node("DequantizeLinear", ["cq", "s", "z"], ["y"])]
    graph = helper.make_graph(nodes, "qdq", [helper.make_tensor_value_info("x", f, [1, 8, 16, 16])],
                              [helper.make_tensor_value_info("y", f, [1, 16, 16, 16])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    return model.SerializeToString()


def test_integer_kernels_are_recognised_in_a_real_optimized_graph(tmp_path: Path) -> None:
    """What `nchwc` checks before trusting ORT's graph: without session.disable_quant_qdq,
    level all fuses a Q/DQ'd convolution into an integer kernel; with it, none."""
    from ptq.graph.nchwc import integer_ops

    found = []
    for flag in ("0", "1"):
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.add_session_config_entry("session.disable_quant_qdq", flag)
        opts.optimized_model_filepath = str(tmp_path / f"opt{flag}.onnx")
        ort.InferenceSession(_qdq_conv(), opts, providers=["CPUExecutionProvider"])
        found.append(integer_ops(onnx.load(tmp_path / f"opt{flag}.onnx")))
    assert "QLinearConv" in found[0] and found[1] == set()


# Graphs from review that the rewrite got wrong or crashed on (fixed): a variadic Max, a Max of
# one input, a stale value_info declaring a broadcast operand full-size, a uint8 Q output that is
# also a graph output, an If branch reading a conv output from the outer scope.
def _odd(kind: str) -> onnx.ModelProto:
    rng = np.random.default_rng(3)
    f = TensorProto.FLOAT

    def w(name: str, *shape: int) -> onnx.TensorProto:
        return onnx.numpy_helper.from_array(
            (rng.standard_normal(shape) / np.sqrt(np.prod(shape[1:]))).astype(np.float32), name)

    conv = lambda x, wt, y: helper.make_node("Conv", [x, wt], [y], pads=[1, 1, 1, 1])  # noqa: E731
    inits = [w("w1", 16, 3, 3, 3), w("w2", 16, 3, 3, 3), w("w3", 16, 3, 3, 3), w("w4", 16, 16, 3, 3)]
    outputs = [helper.make_tensor_value_info("out", f, None)]
    value_info = []
    if kind == "max3":
        nodes = [conv("x", "w1", "c1"), conv("x", "w2", "c2"), conv("x", "w3", "c3"),
                 helper.make_node("Max", ["c1", "c2", "c3"], ["m"]), conv("m", "w4", "out")]
    elif kind == "max1":
        nodes = [conv("x", "w1", "c1"), helper.make_node("Max", ["c1"], ["m"]), conv("m", "w4", "out")]
    elif kind == "stale":
        nodes = [conv("x", "w1", "c1"), helper.make_node("GlobalAveragePool", ["c1"], ["g"]),
                 helper.make_node("Mul", ["c1", "g"], ["m"]), conv("m", "w4", "out")]
        value_info = [helper.make_tensor_value_info("g", f, [2, 16, 9, 7])]  # really [2, 16, 1, 1]
    elif kind == "q_output":
        inits += [onnx.numpy_helper.from_array(np.array(0.02, np.float32), "s"),
                  onnx.numpy_helper.from_array(np.array(128, np.uint8), "z")]
        nodes = [conv("x", "w1", "c1"), helper.make_node("QuantizeLinear", ["c1", "s", "z"], ["q"]),
                 helper.make_node("DequantizeLinear", ["q", "s", "z"], ["d"]), conv("d", "w4", "out")]
        outputs.append(helper.make_tensor_value_info("q", TensorProto.UINT8, None))
    else:  # "if"
        branch = lambda op, y: helper.make_graph(  # noqa: E731
            [helper.make_node(op, ["s1"], [y])], y, [], [helper.make_tensor_value_info(y, f, None)])
        inits.append(onnx.numpy_helper.from_array(np.array(0.0, np.float32), "zero"))
        nodes = [conv("x", "w1", "c1"), helper.make_node("Sigmoid", ["c1"], ["s1"]), conv("s1", "w4", "c2"),
                 helper.make_node("ReduceSum", ["x"], ["sx"], keepdims=0),
                 helper.make_node("Greater", ["sx", "zero"], ["cond"]),
                 helper.make_node("If", ["cond"], ["iff"], then_branch=branch("Sigmoid", "t"),
                                  else_branch=branch("Neg", "e")),
                 helper.make_node("Add", ["c2", "iff"], ["out"])]
    for i, n in enumerate(nodes):
        n.name = f"n{i}_{n.op_type}"
    graph = helper.make_graph(nodes, kind, [helper.make_tensor_value_info("x", f, [2, 3, 9, 7])],
                              outputs, inits, value_info=value_info)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    return model


@needs_nchwc
@pytest.mark.parametrize("kind", ["max3", "max1", "stale", "q_output", "if"])
def test_odd_graphs_give_the_same_values(kind: str) -> None:
    from ptq.backends.ort import OrtRunner

    model = _odd(kind)
    x = [np.random.default_rng(i).standard_normal((2, 3, 9, 7)).astype(np.float32) for i in range(3)]
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.add_session_config_entry("session.disable_quant_qdq", "1")
    session = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    with OrtRunner(model, providers="cpu", optimization="nchwc") as runner:
        got = runner.infer({"x": x[0]}, names)
    for name, want in zip(names, session.run(names, {"x": x[0]})):
        np.testing.assert_array_equal(got[name], want, err_msg=name)
    if kind != "q_output":  # statistics take float models
        plain, fast = both(model, x)
        assert_same(plain, fast)
