"""The streaming statistics pass, on the real digits CNN in real ONNX Runtime.

Statistics are checked against an independent run: plain onnxruntime over an augmented copy of
the model built here, fed by the zoo's own PNG reader, with min/max/histograms computed in numpy.
"""
from __future__ import annotations

import logging
import tracemalloc
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

from ptq import batch_size
from ptq.batch_size import auto_batch_size
from ptq.collect import Statistics, collect_statistics
from ptq.datasets import IterableData
from ptq.errors import CalibrationError
from ptq.graph.model import Activation, TensorInfo, activations, graph_inputs, load_model
from ptq import kernels
from ptq.histogram import MAX_GROWTH
from zoo import DIGITS_NODES, digits_arrays, read_image_folder


@pytest.fixture(scope="module")
def digits(digits_model_path: Path) -> onnx.ModelProto:
    return load_model(digits_model_path)


@pytest.fixture(scope="module")
def calib_arrays(digits_calib_images: Path) -> np.ndarray:
    return read_image_folder(digits_calib_images)[0]


@pytest.fixture(scope="module")
def stats(digits: onnx.ModelProto, calib_arrays: np.ndarray) -> Statistics:
    seen = []
    source = IterableData([calib_arrays], graph_inputs(digits))
    result = collect_statistics(digits, source.batches(32), progress=seen.append)
    assert seen == [32] * 6 + [8]
    return result


def independent_outputs(model_path: Path, x: np.ndarray,
                        level: ort.GraphOptimizationLevel = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
                        ) -> dict[str, np.ndarray]:
    """Every node output of the digits CNN, from plain ORT (optimizations off by default)."""
    model = onnx.load(str(model_path))
    names = [out for node in model.graph.node for out in node.output]
    for name in names:
        if name not in {o.name for o in model.graph.output}:
            model.graph.output.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, None))
    opts = ort.SessionOptions()
    opts.graph_optimization_level = level
    session = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    return {"image": x, **dict(zip(names, session.run(names, {"image": x})))}


def test_statistics_match_an_independent_run(stats: Statistics, digits_model_path: Path,
                                             calib_arrays: np.ndarray) -> None:
    """Counts equal a float64 numpy histogram of an unoptimized ORT run, except for values that
    lie closer to a bin edge than the legitimate run-to-run variation: the pass runs ORT's
    optimized kernels (other summation order) and indexes in float32. That margin is measured
    here, per tensor, as the largest difference between an optimized and an unoptimized run,
    plus 4 float32 ulps of the largest value; each such value may land on either side."""
    ref = independent_outputs(digits_model_path, calib_arrays)
    alt = independent_outputs(digits_model_path, calib_arrays, ort.GraphOptimizationLevel.ORT_ENABLE_ALL)
    assert list(stats.tensors) == ["image", *[n for n in DIGITS_NODES if n != "fc"], "logits"]
    assert stats.num_samples == 200
    for name, st in stats.tensors.items():
        x = ref[name]
        assert st.count == x.size and st.sample_shape == x.shape[1:], name
        assert st.min == pytest.approx(float(x.min()), rel=1e-5, abs=1e-6), name
        assert st.max == pytest.approx(float(x.max()), rel=1e-5, abs=1e-6), name
        h = st.histogram
        a = np.abs(x.astype(np.float64)).ravel()
        margin = np.abs(x.astype(np.float64) - alt[name]).max() + 4 * np.spacing(np.float32(a.max()))
        if st.activation.producer is None:  # the graph input reaches the histogram unchanged:
            margin = 0.0                    # exact, even for pixels/255 == 1.0 on a bin edge
        last = len(h.counts) - 1
        lo = np.minimum(np.floor((a - margin) / h.bin_width), last).clip(0).astype(np.int64)
        hi = np.minimum(np.floor((a + margin) / h.bin_width), last).astype(np.int64)
        sure = lo == hi
        assert (hi - lo <= 1).all(), name  # the margin is far below one bin
        extra = h.counts - np.bincount(lo[sure], minlength=len(h.counts))
        may = np.bincount(lo[~sure], minlength=len(h.counts)) + np.bincount(hi[~sure], minlength=len(h.counts))
        assert h.total == x.size and (extra >= 0).all() and (extra <= may).all(), name
        assert extra.sum() == (~sure).sum() <= 1e-2 * x.size, name
        assert h.finalized()[0][-1] > 0, name  # the running max sits in the last finalized bin


def test_only_accumulators_are_kept(stats: Statistics) -> None:
    """Memory cannot grow with the images: no state holds more than one histogram per tensor."""
    for st in stats.tensors.values():
        for key, value in vars(st).items():  # per-channel sums: one float per channel, no more
            assert not isinstance(value, np.ndarray) or (key == "channel_sum" and value.ndim == 1
                                                         and len(value) == st.sample_shape[0])
        assert set(vars(st.histogram)) == {"num_bins", "bin_width", "counts", "pending_zeros"}
        assert st.histogram.counts.dtype == np.int64
        assert len(st.histogram.counts) <= MAX_GROWTH * st.histogram.num_bins


def test_peak_memory_does_not_grow_with_the_number_of_images(digits: onnx.ModelProto) -> None:
    x, _ = digits_arrays("calib")
    kernels.kernel_name(wait=True)  # numba's one-time loading (a background thread) is not per image

    def peak(batches: int) -> int:
        def reader():
            for i in range(batches):
                yield x[(i * 20) % 300:(i * 20) % 300 + 20].copy()
        tracemalloc.start()
        try:
            stats = collect_statistics(digits, IterableData(reader(), graph_inputs(digits)).batches(20))
            assert stats.num_samples == 20 * batches
            return tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()

    one, four = peak(15), peak(60)  # 300 vs 1,200 images; keeping activations would be 4x
    assert four < 1.3 * one, (one, four)


def test_nan_activation_names_the_tensor(bad_models: dict[str, Path]) -> None:
    model = load_model(bad_models["nan_model"])
    x = np.random.default_rng(0).random((4, 3, 16, 16), np.float32)
    with pytest.raises(CalibrationError) as err:
        collect_statistics(model, IterableData([x], graph_inputs(model)).batches(4))
    assert "tensor 'bad'" in str(err.value) and "NaN" in str(err.value) and "(Log)" in str(err.value)


def test_inf_activation_names_the_tensor() -> None:
    node = helper.make_node("Div", ["x", "zero"], ["blowup"], name="div")
    graph = helper.make_graph([node, helper.make_node("Relu", ["blowup"], ["y"], name="relu")], "inf",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])],
                              [helper.make_tensor("zero", TensorProto.FLOAT, [], [0.0])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    with pytest.raises(CalibrationError, match="tensor 'blowup' from node 'div' \\(Div\\) contains Inf"):
        collect_statistics(model, IterableData([np.ones((2, 4), np.float32)], graph_inputs(model)).batches(2))


def test_fixed_batch_drops_a_partial_batch_with_a_warning(bad_models, caplog) -> None:
    model = load_model(bad_models["static_batch"])
    x = digits_arrays("calib")[0][:10]
    with caplog.at_level(logging.WARNING):
        stats = collect_statistics(model, IterableData([x], graph_inputs(model)).batches(4), fixed_batch=4)
    assert stats.num_samples == 8
    assert "dropping a final partial batch of 2" in caplog.text


def test_auto_batch_size(digits: onnx.ModelProto, caplog, monkeypatch) -> None:
    monkeypatch.setattr(batch_size, "default_threads", lambda: 2)  # the budget follows the cores
    acts = activations(digits)
    assert auto_batch_size(acts, None, 5) == 5
    assert auto_batch_size(acts, None, None) == 32  # ~100 KB per sample: the cap of 32 applies
    with caplog.at_level(logging.WARNING):
        assert auto_batch_size(acts, 4, 16) == 4
    assert "fixed batch of 4" in caplog.text
    dynamic = [Activation("t", "n", "Conv", TensorInfo("t", TensorProto.FLOAT, ("N", 8, "H", "W")))]
    assert auto_batch_size(dynamic, None, None) == 8  # per-sample size unknown
    big = [Activation("t", "n", "Conv", TensorInfo("t", TensorProto.FLOAT, ("N", 64, 512, 512)))]
    assert auto_batch_size(big, None, None) == 2  # 64 MB per sample, 128 MB budget
    assert auto_batch_size(big, None, None, "cuda") == 16  # 1 GiB of device memory
    monkeypatch.setattr(batch_size, "default_threads", lambda: 16)  # 32 MB a core: 512 MB
    assert auto_batch_size(big, None, None) == 8
    assert auto_batch_size(big, None, None, "cuda") == 16
