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
