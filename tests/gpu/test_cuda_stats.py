"""GPU statistics equal CPU statistics, on real models in real ONNX Runtime CUDA sessions.

Runs only where onnxruntime-gpu's CUDA EP and a CUDA torch exist (skips cleanly elsewhere):
    pytest tests/gpu -q
Two comparisons, each isolating one thing:
- same activations (one CUDA EP session), statistics on the GPU vs on the host: exact, since
  both compute floor(float32(|x|) * float32(1/w)) and exact min/max;
- CUDA EP end to end vs CPU EP end to end: only the EPs' convolution arithmetic differs.
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

torch = pytest.importorskip("torch")
if "CUDAExecutionProvider" not in ort.get_available_providers() or not torch.cuda.is_available():
    pytest.skip("needs onnxruntime-gpu with the CUDA EP and a CUDA torch", allow_module_level=True)

from ptq.backends.ort import OrtRunner  # noqa: E402
from ptq.calibration import CalibrateConfig, PreprocessOptions, calibrate  # noqa: E402
from ptq.calibrators import Method  # noqa: E402
from ptq.collect import TensorStatistics, collect_statistics  # noqa: E402
from ptq.cuda_stats import DeviceOutputs  # noqa: E402
from ptq.datasets import IterableData  # noqa: E402
from ptq.graph.edit import add_outputs  # noqa: E402
from ptq.graph.model import activations, graph_inputs, load_model  # noqa: E402
from ptq.histogram import Histogram  # noqa: E402
from zoo import read_image_folder  # noqa: E402


def test_cuda_ep_is_what_runs(digits_model_path: Path) -> None:
    with OrtRunner(digits_model_path, providers="auto") as runner:
        assert runner.provider == "CUDAExecutionProvider"


def test_same_activations_give_identical_statistics(digits_model_path: Path,
                                                    digits_calib_images: Path) -> None:
    model = load_model(digits_model_path)
    acts = [a for a in activations(model) if a.producer is not None]
    names = [a.name for a in acts]
    x = read_image_folder(digits_calib_images)[0]
    host = {a.name: TensorStatistics(a, Histogram()) for a in acts}
    device = {a.name: TensorStatistics(a, Histogram()) for a in acts}
    with OrtRunner(add_outputs(model, [a.info for a in acts]), providers="cuda") as runner:
        outputs = DeviceOutputs(runner.session, names, runner.device_id)
        for s in range(0, len(x), 32):  # batches of 32, the second one grows the histograms
            values = outputs.run({"image": x[s:s + 32]})
            minmax = outputs.minmax(values)
            for name, value in values.items():
                host[name].update(value.tensor.cpu().numpy())
                device[name].update(value, minmax=minmax[name])
            outputs.add_pending(values, {n: device[n].histogram for n in values})
    for name in names:
        h, d = host[name], device[name]
        assert (d.min, d.max, d.count) == (h.min, h.max, h.count), name
        assert d.histogram.bin_width == h.histogram.bin_width, name
        np.testing.assert_array_equal(d.histogram.counts, h.histogram.counts, err_msg=name)
        assert_same_means(d.channel_mean, h.channel_mean, name)


def test_gpu_pass_equals_host_pass_on_the_cuda_ep(digits_model_path: Path,
                                                  digits_calib_images: Path) -> None:
    # The whole pass (second thread, statistics stream, one transfer a batch) against the
    # host pass over the same CUDA EP's activations: exact counts, means within rtol 1e-9.
    model = load_model(digits_model_path)
    x = read_image_folder(digits_calib_images)[0]
    runs = {d: collect_statistics(model, IterableData([x], graph_inputs(model)).batches(32),
                                  providers="cuda", device=d) for d in ("cuda", "cpu")}
    gpu, cpu = runs["cuda"], runs["cpu"]
    assert (gpu.device, cpu.device) == ("cuda", "cpu") and gpu.num_samples == len(x)
    for name, c in cpu.tensors.items():
        g = gpu.tensors[name]
        assert (g.min, g.max, g.count) == (c.min, c.max, c.count), name
        assert g.histogram.bin_width == c.histogram.bin_width, name
        np.testing.assert_array_equal(g.histogram.counts, c.histogram.counts, err_msg=name)
        assert_same_means(g.channel_mean, c.channel_mean, name)


def assert_same_means(device: np.ndarray | None, host: np.ndarray | None, name: str) -> None:
    """Both sum in float64, in different orders: equal within rtol 1e-9."""
    if host is None:
        assert device is None, name
        return
    np.testing.assert_allclose(device, host, rtol=1e-9, atol=0, err_msg=name)


def test_calibrate_on_gpu_equals_host_statistics_on_effnet(effnet_path: Path,
                                                           sample_photos: Path) -> None:
    # Same CUDA EP, statistics on the GPU vs copied to the host: the amax of every algorithm
    # is identical (a different batch order or EP would be a different experiment).
    pre = PreprocessOptions(preset="efficientnet-lite")
    tables = {dev: calibrate(effnet_path, sample_photos,
                             CalibrateConfig(algorithms=tuple(Method), providers="cuda",
                                             stats_device=dev, batch_size=4, preprocess=pre))
              for dev in ("cuda", "cpu")}
    gpu, cpu = tables["cuda"], tables["cpu"]
    assert gpu.settings["provider_used"] == "CUDAExecutionProvider"
    assert (gpu.settings["statistics_device"], cpu.settings["statistics_device"]) == ("cuda", "cpu")
    assert list(gpu.tensors) == list(cpu.tensors)
    for name, t in gpu.tensors.items():
        c = cpu.tensors[name]
        assert t.amax == c.amax and (t.min, t.max) == (c.min, c.max), name
        np.testing.assert_array_equal(t.histogram.counts, c.histogram.counts, err_msg=name)


def test_cuda_ep_statistics_match_cpu_ep(digits_model_path: Path, digits_calib_images: Path) -> None:
    model = load_model(digits_model_path)
    x = read_image_folder(digits_calib_images)[0]
    runs = {p: collect_statistics(model, IterableData([x], graph_inputs(model)).batches(32),
                                  providers=p) for p in ("cuda", "cpu")}
    gpu, cpu = runs["cuda"], runs["cpu"]
    assert (gpu.provider, gpu.device) == ("CUDAExecutionProvider", "cuda")
    assert (cpu.provider, cpu.device) == ("CPUExecutionProvider", "cpu")
    for name, g in gpu.tensors.items():
        c = cpu.tensors[name]
        # cuDNN and MLAS sum the convolutions in different orders (TF32 is off in ptq's CUDA
        # sessions): float32 rounding, ~1e-6 relative; 1e-4 leaves room for 4 layers of it.
        assert g.max == pytest.approx(c.max, rel=1e-4, abs=1e-5), name
        assert g.min == pytest.approx(c.min, rel=1e-4, abs=1e-5), name
        assert g.histogram.bin_width == pytest.approx(c.histogram.bin_width, rel=1e-4), name
        n = min(len(g.histogram.counts), len(c.histogram.counts))
        moved = np.abs(g.histogram.counts[:n] - c.histogram.counts[:n]).sum()
        # values within that rounding of a bin edge change bins (both sides count): <= 1%.
        assert moved <= 0.01 * g.count, name


def test_a_cuda_ep_that_cannot_load_is_reported_not_hidden(digits_model_path: Path) -> None:
    # Without ptq's preload_dlls, onnxruntime-gpu from pip finds no cuDNN and ORT silently
    # builds a CPU session: ptq must refuse an explicit --providers cuda and say why.
    code = ("import sys, ptq.backends.ort as o; o._PRELOADED = True\n"
            "from ptq.errors import ConfigError\n"
            "try:\n"
            f"    r = o.OrtRunner({str(digits_model_path)!r}, providers='cuda').__enter__()\n"
            "    print('RAN', r.provider)\n"
            "except ConfigError as e:\n"
            "    print('REFUSED', e)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    if "RAN CUDAExecutionProvider" in out.stdout:
        pytest.skip("the CUDA libraries load without preloading here: no fallback to provoke")
    assert "REFUSED" in out.stdout and "fell back to CPUExecutionProvider" in out.stdout, \
        out.stdout + out.stderr
