"""The GPU counting arithmetic (ptq/cuda_stats.py), run by torch on whatever device it has.

The kernel is plain torch, so CPU-only CI checks the same float32 product, truncation and
top-edge fold that the GPU runs; tests/gpu/test_cuda_stats.py repeats it on a real GPU.
"""
from __future__ import annotations

import numpy as np
import pytest

from ptq.kernels import bin_counts, numpy_bin_counts

torch = pytest.importorskip("torch")
from ptq.cuda_stats import DeviceTensor  # noqa: E402

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


@pytest.mark.parametrize("dtype", [np.float32, np.float16, np.float64])
def test_device_counts_equal_host_counts_bin_for_bin(dtype) -> None:
    rng = np.random.default_rng(3)
    x = (np.maximum(rng.standard_normal((8, 4000)), -0.5) * 5).astype(dtype)
    cases = [(x, float(np.abs(x).max()) / 2048, 2048),   # the max lands on the top edge
             (x, float(np.abs(x).max()) / 1000, 900),    # values past the top: folded
             (x[:, :3999], float(np.abs(x).max()) / 64, 64)]  # a size that LANES doesn't divide
    if dtype != np.float16:  # widths whose float32 reciprocal overflows: the float64 path
        tiny = (x.astype(np.float64) * 1e-37).astype(dtype)
        cases.append((tiny, float(np.abs(tiny).max()) / 64, 64))
    for values, width, bins in cases:
        device = DeviceTensor(torch.from_numpy(values).to(DEVICE))
        np.testing.assert_array_equal(device.counts(width, bins).cpu().numpy(),
                                      numpy_bin_counts(values, width, bins))
        # Through the host kernel's entry point: counted on the device, returned later.
        assert not bin_counts(device, width, bins).any() and device.pending is not None


def test_device_tensor_reads_like_an_array() -> None:
    t = DeviceTensor(torch.zeros((3, 5, 7), device=DEVICE))
    assert (t.size, t.shape, t.ndim) == (105, (3, 5, 7), 3)
