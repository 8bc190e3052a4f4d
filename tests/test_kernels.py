"""The counting kernels: numba (when installed) and numpy give the same counts, bin for bin."""
from __future__ import annotations

import os

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from ptq import kernels
from ptq.histogram import Histogram
from ptq.kernels import Scratch, bin_counts, numpy_bin_counts

numba = pytest.importorskip("numba", reason="the numba kernel needs numba (pip install 'ptq[fast]')")


@pytest.fixture(autouse=True, scope="module")
def loaded() -> None:
    if os.environ.get("PTQ_KERNEL", "").lower() == "numpy":
        pytest.skip("PTQ_KERNEL=numpy forces the numpy kernel")
    assert kernels.kernel_name(wait=True) == "numba"  # waits for the background load


@settings(max_examples=60, deadline=None)
@given(x=hnp.arrays(np.float32, st.integers(4096, 20000),
                    elements=st.floats(-1e4, 1e4, width=32)),
       width=st.floats(1e-2, 1e3), spare=st.integers(0, 3))
def test_numba_equals_numpy_exactly(x: np.ndarray, width: float, spare: int) -> None:
    # Same float32 product and the same truncation: no tolerance, even at bin edges.
    n = max(1, int(np.abs(x).max() / width) + 1 - spare)  # spare > 0: the top-edge fold is used
    np.testing.assert_array_equal(bin_counts(x, width, n), numpy_bin_counts(x, width, n, Scratch()))


@pytest.mark.parametrize("dtype", [np.float16, np.float64])
def test_other_dtypes_and_strided_views(dtype) -> None:
    rng = np.random.default_rng(1)
    x = (rng.standard_normal((64, 300)) * 3).astype(dtype)
    view = x[:, ::3]  # not contiguous
    for arr in (x, view):
        np.testing.assert_array_equal(bin_counts(arr, 0.01, 1000), numpy_bin_counts(arr, 0.01, 1000))


def test_activation_like_data_with_many_zeros() -> None:
    rng = np.random.default_rng(2)
    x = np.maximum(rng.standard_normal(1_000_003).astype(np.float32), 0) * 6
    w = float(x.max()) / 2048
    counts = bin_counts(x, w, 2048)
    assert counts[0] >= 500_000 and counts.sum() == x.size and counts[-1] >= 1
    np.testing.assert_array_equal(counts, numpy_bin_counts(x, w, 2048))


@pytest.mark.parametrize("shape", [(2, 16, 30, 30), (3, 1000), (70000,), (2, 3, 1, 1, 2000)])
def test_fused_observe_equals_the_numpy_passes(shape: tuple[int, ...]) -> None:
    """`observe` (one numba pass: min/max, channel sums, counts) against numpy's separate
    passes, over batches that start all-zero and then grow the grid."""
    rng = np.random.default_rng(5)
    channels = shape[1] if len(shape) > 1 else 0
    fast, slow = (Histogram(), np.zeros(channels)), (Histogram(), np.zeros(channels))
    for scale in (0.0, 1e-3, 5.0, 0.5, 300.0):
        x = (rng.standard_normal(shape) * scale).astype(np.float32)
        x.reshape(-1)[3::89] = -0.0
        sums = (lambda s: s if channels else None)
        got = kernels.observe(x, fast[0], sums(fast[1]))
        want = kernels._observe_numpy(x, slow[0], sums(slow[1]), None)
        assert got == want
    assert (fast[0].bin_width, fast[0].pending_zeros) == (slow[0].bin_width, slow[0].pending_zeros)
    np.testing.assert_array_equal(fast[0].counts, slow[0].counts)
    np.testing.assert_allclose(fast[1], slow[1], rtol=1e-12, atol=1e-6)  # summation order only


@pytest.mark.parametrize("bad", [np.nan, -np.nan, np.inf, -np.inf])
def test_fused_observe_reports_nan_and_inf_and_adds_nothing(bad: float) -> None:
    x = np.random.default_rng(6).standard_normal((2, 4, 64, 64)).astype(np.float32)
    x[1, 3, 63, 63] = bad
    hist, sums = Histogram(), np.zeros(4)
    lo, hi = kernels.observe(x, hist, sums)
    assert not (np.isfinite(lo) and np.isfinite(hi)) and hist.total == 0 and not sums.any()


def _to_blocks(x: np.ndarray, lanes: int) -> np.ndarray:
    """x [N, C, H, W] laid out as ONNX Runtime's NCHWc ([N, C/lanes, H, W, lanes] in memory),
    read back with the NCHW shape, as the statistics outputs come."""
    n, c, h, w = x.shape
    return np.ascontiguousarray(x.reshape(n, c // lanes, lanes, h, w).transpose(0, 1, 3, 4, 2)).reshape(n, c, h, w)


@pytest.mark.parametrize("lanes", [8, 16])
@pytest.mark.parametrize("path", ["numba", "numpy"])
def test_observe_in_nchwc_blocks_equals_nchw(lanes: int, path: str, monkeypatch) -> None:
    """Counts, widths and min/max are the same values in another order; each channel's sum is
    its own lane of the blocks (summation order only)."""
    if path == "numpy":
        monkeypatch.setattr(kernels, "_fast", lambda *a: False)
    elif kernels.kernel_name(wait=True) != "numba":
        pytest.skip("numba is not installed")
    rng = np.random.default_rng(8)
    nchw, blocked = (Histogram(), np.zeros(32)), (Histogram(), np.zeros(32))
    relu_nchw = (Histogram(), Histogram(), np.zeros(32), np.zeros(32))
    relu_blk = (Histogram(), Histogram(), np.zeros(32), np.zeros(32))
    for scale in (0.0, 0.01, 3.0, 40.0):
        x = (rng.standard_normal((3, 32, 9, 11)) * scale + np.arange(32).reshape(1, 32, 1, 1) * scale / 8
             ).astype(np.float32)
        b = _to_blocks(x, lanes)
        assert kernels.observe(b, blocked[0], blocked[1], lanes=lanes) == \
            kernels.observe(x, nchw[0], nchw[1])
        assert kernels.observe_relu(b, 6.0, *relu_blk, lanes=lanes) == \
            kernels.observe_relu(x, 6.0, *relu_nchw)
    for a, b in ((nchw[0], blocked[0]), (relu_nchw[0], relu_blk[0]), (relu_nchw[1], relu_blk[1])):
        assert (a.bin_width, a.pending_zeros) == (b.bin_width, b.pending_zeros)
        np.testing.assert_array_equal(a.counts, b.counts)
    for a, b in ((nchw[1], blocked[1]), (relu_nchw[2], relu_blk[2]), (relu_nchw[3], relu_blk[3])):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-9)  # float64, summation order only
    assert np.ptp(nchw[1]) > 1  # the channels differ, so a lane mix-up would show
