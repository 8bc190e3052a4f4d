"""Relu/Clip(0, top) outputs counted from their input's pass equal the same outputs observed
on their own, on real models in real ONNX Runtime sessions: bit for bit (histograms, widths,
min/max), and per-channel sums within float64 summation-order rounding."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from ptq import kernels
from ptq.calibration import CalibrateConfig, PreprocessOptions, open_model_data
from ptq.collect import Statistics, collect_statistics
from ptq.datasets import IterableData
from ptq.graph.derived import ReluOf, relu_like
from ptq.graph.model import activations, graph_inputs, load_model
from ptq.histogram import Histogram


def assert_same(a: Statistics, b: Statistics) -> None:
    assert a.tensors.keys() == b.tensors.keys()
    for name, ta in a.tensors.items():
        tb = b.tensors[name]
        assert (ta.min, ta.max, ta.count, ta.sample_shape) == (tb.min, tb.max, tb.count, tb.sample_shape), name
        ha, hb = ta.histogram, tb.histogram
        assert (ha.bin_width, ha.pending_zeros) == (hb.bin_width, hb.pending_zeros), name
        np.testing.assert_array_equal(ha.counts, hb.counts, err_msg=name)
        assert ta.channel_count == tb.channel_count, name
        if ta.channel_sum is None:
            assert tb.channel_sum is None, name
        else:  # float64 sums of the same float32 values in another order: ~1e-16 relative
            np.testing.assert_allclose(ta.channel_sum, tb.channel_sum, rtol=1e-12, atol=1e-9,
                                       err_msg=name)


def both(model: onnx.ModelProto, batches: list) -> tuple[Statistics, Statistics]:
    kernels.kernel_name(wait=True)  # the numba kernels (when installed) from the first batch
    run = [collect_statistics(model, IterableData(batches, graph_inputs(model)).batches(len(batches[0])),
                              providers="cpu", device="cpu", derive=d) for d in (False, True)]
    return run[0], run[1]


@pytest.mark.slow
def test_efficientnet_relu6_outputs_on_real_photos(effnet_path: Path, sample_photos: Path) -> None:
    model = load_model(effnet_path)
    derived = relu_like(model, activations(model))
    assert len(derived) == 33 and {d.top for d in derived.values()} == {6.0}  # every ReLU6
    config = CalibrateConfig(preprocess=PreprocessOptions(preset="efficientnet-lite"))
    photos = np.concatenate([b.feeds["input"] for b in
                             open_model_data(effnet_path, model, sample_photos, config).batches(10)])
    # batches of 4 with rising contrast: later batches grow the grids (the coarsening path)
    batches = [photos[i:i + 4] * (1 + i / 8) for i in range(0, 20, 4)]
    plain, fast = both(model, batches)
    assert_same(plain, fast)
    clipped = fast.tensors["stem.relu6"]
    assert clipped.max == 6.0 and clipped.min == 0.0  # the photos do reach both bounds


def test_digits_relu_outputs(digits_model_path: Path) -> None:
    from zoo import digits_arrays

    model = load_model(digits_model_path)
    derived = relu_like(model, activations(model))
    assert derived and all(math.isinf(d.top) for d in derived.values())
    x, _ = digits_arrays("calib")
    plain, fast = both(model, [x[i:i + 50] for i in range(0, 300, 50)])
    assert_same(plain, fast)


def _clip_model(opset: int, lo: float | None, hi: float | None, extra_consumer: bool = False) -> onnx.ModelProto:
    """x -> Conv -> Clip(lo, hi) (-> a second Relu of the same conv output)."""
    w = helper.make_tensor("w", TensorProto.FLOAT, [8, 3, 3, 3],
                           np.random.default_rng(0).standard_normal(216).astype(np.float32) * 0.3)
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], name="conv", pads=[1, 1, 1, 1])]
    inits = [w]
    if opset >= 11:
        names = []
        for n, v in (("lo", lo), ("hi", hi)):
            if v is None:
                names.append("")
            else:
                inits.append(helper.make_tensor(n, TensorProto.FLOAT, [], [v]))
                names.append(n)
        nodes.append(helper.make_node("Clip", ["c", *names], ["y"], name="clip"))
    else:
        attrs = {k: v for k, v in (("min", lo), ("max", hi)) if v is not None}
        nodes.append(helper.make_node("Clip", ["c"], ["y"], name="clip", **attrs))
    outputs = [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)]
    if extra_consumer:
        nodes.append(helper.make_node("Relu", ["c"], ["r"], name="relu"))
        outputs.append(helper.make_tensor_value_info("r", TensorProto.FLOAT, None))
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT,
                                                                          [None, 3, 40, 40])],
                              outputs, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 7
    return onnx.shape_inference.infer_shapes(model)


@pytest.mark.parametrize("opset,lo,hi,expected", [
    (13, 0.0, 6.0, 6.0), (13, 0.0, None, math.inf), (13, 0.0, 0.5, 0.5),
    (13, -1.0, 1.0, None), (13, 0.5, 6.0, None), (13, 0.0, 0.0, None), (13, None, 6.0, None),
    (10, 0.0, 6.0, 6.0), (10, 0.0, None, float(np.finfo(np.float32).max)), (10, None, 6.0, None),
])
def test_which_clips_are_derived_and_their_statistics(opset: int, lo, hi, expected) -> None:
    model = _clip_model(opset, lo, hi)
    derived = relu_like(model, activations(model))
    assert derived == ({} if expected is None else {"y": ReluOf("c", expected)})
    rng = np.random.default_rng(1)
    batches = [rng.standard_normal((2, 3, 40, 40)).astype(np.float32) * s for s in (0.1, 3, 1, 40)]
    plain, fast = both(model, batches)
    assert_same(plain, fast)


def test_only_the_first_relu_of_a_tensor_is_derived() -> None:
    model = _clip_model(13, 0.0, 6.0, extra_consumer=True)
    assert relu_like(model, activations(model)) == {"y": ReluOf("c", 6.0)}
    rng = np.random.default_rng(2)
    plain, fast = both(model, [rng.standard_normal((2, 3, 40, 40)).astype(np.float32) * 4])
    assert_same(plain, fast)


def test_clip_bound_that_is_computed_is_not_derived() -> None:
    model = _clip_model(13, 0.0, 6.0)
    model.graph.node[1].input[2] = "c"  # the max is an activation now, not a constant
    assert relu_like(model, activations(model)) == {}


@pytest.mark.skipif(not kernels.kernel_name(wait=True) == "numba", reason="numba not installed")
@pytest.mark.parametrize("top", [6.0, math.inf, 1e-3, 1e30, 1e-40])  # 1e-40: a float64 top bin
def test_relu_kernel_equals_numpy_over_growing_batches(top: float) -> None:
    """The numba pair kernel against its numpy fallback (y computed, both observed)."""
    rng = np.random.default_rng(3)
    shapes = [(2, 16, 30, 30), (2, 16, 30, 30), (1, 16, 30, 30), (2, 16, 30, 30)]
    scales = [0.0, 1e-4, 7.0, 1e3]  # all zeros first (no grid yet), then growing ranges
    acc = {k: (Histogram(), Histogram(), np.zeros(16), np.zeros(16)) for k in ("fast", "numpy")}
    for shape, scale in zip(shapes, scales):
        x = rng.standard_normal(shape).astype(np.float32) * np.float32(scale)
        if scale:
            x.reshape(-1)[::97] = np.float32(min(top, 3e38))  # values exactly at the top
        x.reshape(-1)[5::101] = -0.0
        hx, hy, sx, sy = acc["fast"]
        got = kernels.observe_relu(x, top, hx, hy, sx, sy)
        hx, hy, sx, sy = acc["numpy"]
        want = kernels._observe_relu_numpy(x, top, hx, hy, sx, sy, None)
        assert got == want
    (fx, fy, fsx, fsy), (nx, ny, nsx, nsy) = acc["fast"], acc["numpy"]
    for f, n in ((fx, nx), (fy, ny)):
        assert (f.bin_width, f.pending_zeros) == (n.bin_width, n.pending_zeros)
        np.testing.assert_array_equal(f.counts, n.counts)
    np.testing.assert_allclose(fsx, nsx, rtol=1e-12, atol=1e-6)
    np.testing.assert_allclose(fsy, nsy, rtol=1e-12, atol=1e-6)


@pytest.mark.skipif(not kernels.kernel_name(wait=True) == "numba", reason="numba not installed")
@pytest.mark.parametrize("bad", [np.nan, -np.nan, np.inf, -np.inf])
def test_relu_kernel_reports_nan_and_inf_and_adds_nothing(bad: float) -> None:
    x = np.random.default_rng(4).standard_normal((2, 4, 64, 64)).astype(np.float32)
    x[1, 2, 3, 4] = bad
    hx, hy, sx, sy = Histogram(), Histogram(), np.zeros(4), np.zeros(4)
    (lo, hi), _ = kernels.observe_relu(x, 6.0, hx, hy, sx, sy)
    assert not (math.isfinite(lo) and math.isfinite(hi))
    assert hx.total == hy.total == 0 and not sx.any() and not sy.any()


def test_derived_statistics_with_a_bin_count_that_is_not_a_power_of_two() -> None:
    """1000 bins: widths are not powers of two, so local grids would not nest; the pair is then
    observed as x and a computed y (numpy), still equal to observing y from ONNX Runtime."""
    model = _clip_model(13, 0.0, 6.0)
    rng = np.random.default_rng(5)
    batches = [rng.standard_normal((2, 3, 40, 40)).astype(np.float32) * s for s in (0.5, 4, 20)]
    kernels.kernel_name(wait=True)
    plain, fast = (collect_statistics(model, IterableData(batches, graph_inputs(model)).batches(2),
                                      num_bins=1000, providers="cpu", device="cpu", derive=d)
                   for d in (False, True))
    assert_same(plain, fast)


def test_a_custom_domain_op_named_relu_is_not_derived() -> None:
    model = _clip_model(13, 0.0, 6.0)
    model.graph.node[1].domain = "com.example"
    model.opset_import.append(helper.make_opsetid("com.example", 1))
    assert relu_like(model, activations(model)) == {}


# Odd graphs (written in review): a Relu of a graph input, a Relu of a derived Relu, two Relus of
# one tensor, Clip bounds from Constant nodes (a tensor and value_float), an initializer of
# shape [1], min = -0.0, an opset-6 Clip with only a min (top FLT_MAX) over values near 1e38, a
# Clip whose min is absent, and rank-2 inputs.
F = TensorProto.FLOAT


def _graph(nodes: list, inits: list, opset: int, in_shape: list, outs: list[str]) -> onnx.ModelProto:
    for i, n in enumerate(nodes):
        n.name = n.name or f"n{i}_{n.op_type}"
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", F, in_shape)],
                              [helper.make_tensor_value_info(o, F, None) for o in outs], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 7
    return onnx.shape_inference.infer_shapes(model)


def _chains_opset13() -> onnx.ModelProto:
    nodes = [helper.make_node("Relu", ["x"], ["a"]),
             helper.make_node("Relu", ["a"], ["b"]),
             helper.make_node("Relu", ["x"], ["c"]),
             helper.make_node("Constant", [], ["zero"], value=helper.make_tensor("z", F, [], [0.0])),
             helper.make_node("Constant", [], ["six"], value_float=6.0),
             helper.make_node("Clip", ["b", "zero", "six"], ["d"]),
             helper.make_node("Clip", ["c", "zero", "one1"], ["e"]),
             helper.make_node("Add", ["d", "e"], ["f"]),
             helper.make_node("Clip", ["f", "negz", "half"], ["g"]),
             helper.make_node("Relu", ["g"], ["h"])]
    inits = [helper.make_tensor("one1", F, [1], [1.0]), helper.make_tensor("negz", F, [], [-0.0]),
             helper.make_tensor("half", F, [], [0.5])]
    return _graph(nodes, inits, 13, [None, 3, None, None], ["h", "a"])


def _huge_opset6() -> onnx.ModelProto:
    w = helper.make_tensor("w", F, [4, 3, 3, 3],
                           (np.random.default_rng(0).standard_normal(108) * 1e34).astype(np.float32))
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("Clip", ["c"], ["y"], min=0.0),
             helper.make_node("Clip", ["y"], ["z"], min=0.0, max=1e-3),
             helper.make_node("Relu", ["z"], ["r"])]
    return _graph(nodes, [w], 6, [None, 3, 40, 40], ["r"])


def _rank2_opset11() -> onnx.ModelProto:
    nodes = [helper.make_node("Relu", ["x"], ["a"]),
             helper.make_node("Clip", ["a", "", "top"], ["b"]),
             helper.make_node("Clip", ["x", "zero", ""], ["c"]),
             helper.make_node("Add", ["b", "c"], ["d"])]
    inits = [helper.make_tensor("top", F, [], [2.0]), helper.make_tensor("zero", F, [], [0.0])]
    return _graph(nodes, inits, 11, [None, 5000], ["d"])


def _edge_batches(shape: tuple[int, ...], n: int, seed: int) -> list[np.ndarray]:
    """Growing ranges with zeros of both signs, tops, bin edges and subnormals; all-zero first."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        x = (rng.standard_normal(shape) * 2.0 ** (3 * i - 4)).astype(np.float32)
        f = x.reshape(-1)
        f[::7], f[1::11], f[2::13], f[3::17], f[4::19] = 0.0, -0.0, 6.0, 1.0, 0.5
        f[5::23], f[6::29] = 2.0 ** -140, -(2.0 ** -149)
        out.append(x)
    out[0][:] = 0.0
    return out


@pytest.mark.parametrize("make,shape", [(_chains_opset13, (2, 3, 40, 40)), (_chains_opset13, (1, 3, 1, 1)),
                                        (_huge_opset6, (2, 3, 40, 40)), (_rank2_opset11, (2, 5000)),
                                        (_rank2_opset11, (1, 5000))])
def test_odd_graphs(make, shape: tuple[int, ...]) -> None:
    model = make()
    assert relu_like(model, activations(model))  # something is derived in each
    plain, fast = both(model, _edge_batches(shape, 4, 1))
    assert_same(plain, fast)
