"""The counting kernels: numba (when installed) and numpy give the same counts, bin for bin."""
from __future__ import annotations

import os

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from ptq import kernels
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
