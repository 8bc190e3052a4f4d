"""The GPU statistics pass (ptq.collect._device_pass), run by torch on the CPU.

CI has no GPU, but the device pass is plain torch: with `on_host=True` the same code (IOBinding,
deferred counts and channel sums, one transfer per batch) runs over host outputs. Its statistics
must equal the host pass's on the real digits CNN in real ONNX Runtime; tests/gpu repeats the
comparison on a real GPU.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest

from ptq.backends.ort import OrtRunner
from ptq.collect import Statistics, TensorStatistics, _device_pass, collect_statistics
from ptq.datasets import IterableData
from ptq.errors import CalibrationError
from ptq.graph.edit import add_outputs
from ptq.graph.model import activations, graph_inputs, load_model
from ptq.histogram import Histogram
from zoo import read_image_folder

pytest.importorskip("torch")


def device_pass_on_cpu(model: onnx.ModelProto, x: np.ndarray, batch: int) -> Statistics:
    """collect_statistics' set-up, then the device pass with torch on the CPU."""
    acts = activations(model)
    stats = Statistics({a.name: TensorStatistics(a, Histogram()) for a in acts})
    inputs = [a.name for a in acts if a.producer is None]
    names = [a.name for a in acts if a.producer is not None]
    augmented = add_outputs(model, [a.info for a in acts if a.producer is not None])
    with OrtRunner(augmented, providers="cpu", optimization="all",
                   session_config={"session.intra_op.allow_spinning": "0"}) as runner:
        source = IterableData([x], graph_inputs(model))
        _device_pass(runner, source.batches(batch), stats, inputs, names, None, None, on_host=True)
    return stats


def host_pass(model: onnx.ModelProto, x: np.ndarray, batch: int) -> Statistics:
    return collect_statistics(model, IterableData([x], graph_inputs(model)).batches(batch),
                              providers="cpu", device="cpu")


def assert_same_statistics(device: Statistics, host: Statistics) -> int:
    """Exact histograms and min/max, channel means within rtol 1e-9 (both sum in float64,
    in different orders); returns how many tensors had means."""
    assert device.num_samples == host.num_samples
    assert list(device.tensors) == list(host.tensors)
    with_means = 0
    for name, h in host.tensors.items():
        d = device.tensors[name]
        assert (d.min, d.max, d.count) == (h.min, h.max, h.count), name
        assert d.histogram.bin_width == h.histogram.bin_width, name
        np.testing.assert_array_equal(d.histogram.counts, h.histogram.counts, err_msg=name)
        assert d.histogram.pending_zeros == h.histogram.pending_zeros, name
        assert d.channel_count == h.channel_count, name
        if h.channel_mean is None:
            assert d.channel_mean is None, name
            continue
        np.testing.assert_allclose(d.channel_mean, h.channel_mean, rtol=1e-9, atol=0, err_msg=name)
        with_means += 1
    return with_means


def test_device_pass_equals_host_pass(digits_model_path: Path, digits_calib_images: Path) -> None:
    model = load_model(digits_model_path)
    x = read_image_folder(digits_calib_images)[0]
    # batches of 32: later batches grow the histograms; the last one is partial (8)
    device, host = device_pass_on_cpu(model, x, 32), host_pass(model, x, 32)
    assert device.num_samples == len(x)
    # the input and every conv/relu output of the CNN have channels
    assert assert_same_statistics(device, host) >= 8


def test_all_zero_tensor_on_the_device_pass(bad_models: dict[str, Path]) -> None:
    # 'zeros' is 0 for every input: no grid, pending zeros only, zero means
    model = load_model(bad_models["zero_model"])
    x = np.random.default_rng(0).standard_normal((12, 3, 16, 16)).astype(np.float32)
    device, host = device_pass_on_cpu(model, x, 4), host_pass(model, x, 4)
    assert device.tensors["zeros"].histogram.pending_zeros == x.size
    assert assert_same_statistics(device, host) == len(host.tensors)


def test_device_pass_reports_nan_like_the_host(bad_models: dict[str, Path]) -> None:
    model = load_model(bad_models["nan_model"])
    x = np.random.default_rng(0).standard_normal((4, 3, 16, 16)).astype(np.float32)
    with pytest.raises(CalibrationError, match="'bad'.*contains NaN"):
        device_pass_on_cpu(model, x, 4)
