"""MSE threshold: a hand-derived answer and the literal published loop as oracle."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from calibrators.reference_algorithms import mse_amax_reference
from ptq.calibrators import mse_amax
from ptq import kernels
from ptq.calibrators.mse import mse_errors, sweep_numpy
from ptq.table import CalibrationTable


@pytest.mark.parametrize("k", [128, 700, 2047])
def test_all_mass_in_one_bin_is_quantized_exactly_at_its_centre(k: int) -> None:
    # Every value sits at the centre c_k = (k + 0.5) w. With amax = c_k it maps to +127 exactly:
    # error 0. A smaller candidate (i < k, when allowed) clips it; a larger one needs an integer
    # level m < 127 with (k + 0.5) * 127 / m - 0.5 a whole bin index <= 2047, which never happens
    # for these k. So the first minimum is candidate k.
    counts = np.zeros(2048, np.int64)
    counts[k] = 12345
    amaxes, errors = mse_errors(counts, 0.01)
    assert errors[k - 128] == pytest.approx(0.0, abs=1e-20)
    assert (np.delete(errors, k - 128) > 1e-12).all()
    assert mse_amax(counts, 0.01) == pytest.approx((k + 0.5) * 0.01)


def test_candidates_start_at_bin_128_and_edge_cases() -> None:
    counts = np.zeros(2048, np.int64)
    counts[10] = 5  # every candidate is >= centre 128 > the data: all error is rounding error
    assert mse_amax(counts, 1.0) == pytest.approx(mse_amax_reference(counts, 1.0))
    assert mse_amax(counts, 1.0) >= 128.5
    assert mse_amax(np.zeros(500), 1.0) == 0.0
    assert mse_amax(np.ones(100), 0.5) == pytest.approx(50.0)  # no candidate: the full range
    amaxes, _ = mse_errors(np.ones(1000), 1.0, stride=100)
    np.testing.assert_allclose(amaxes, np.arange(128, 1000, 100) + 0.5)


@settings(max_examples=40, deadline=None)
@given(counts=hnp.arrays(np.int64, st.integers(129, 900),
                         elements=st.one_of(st.just(0), st.integers(0, 10**5))))
def test_matches_the_literal_algorithm_on_random_histograms(counts: np.ndarray) -> None:
    if counts.sum() == 0:
        return
    assert mse_amax(counts, 0.03) == pytest.approx(mse_amax_reference(counts, 0.03))


def test_matches_the_literal_algorithm_on_every_real_digits_tensor(digits_ranges) -> None:
    table = CalibrationTable.load(digits_ranges)
    for name, t in table.tensors.items():
        counts, width = t.histogram.finalized()
        assert t.amax["mse"] == pytest.approx(mse_amax_reference(counts, width)), name


@pytest.mark.slow
def test_matches_the_literal_algorithm_on_efficientnet(effnet_ranges) -> None:
    table = CalibrationTable.load(effnet_ranges)
    for name, t in table.tensors.items():
        counts, width = t.histogram.finalized()
        assert mse_amax(counts, width, stride=8) == pytest.approx(
            mse_amax_reference(counts, width, stride=8)), name


@pytest.mark.skipif(not kernels.kernel_name(wait=True) == "numba", reason="numba not installed")
@settings(max_examples=30, deadline=None)
@given(counts=hnp.arrays(np.int64, st.integers(129, 2048),
                         elements=st.one_of(st.just(0), st.integers(0, 10**6))),
       width=st.floats(1e-6, 1e3))
def test_numba_sweep_equals_numpy_blocks(counts: np.ndarray, width: float) -> None:
    """The numba sweep (used once loaded) against the numpy blocks: errors to float64
    summation order, and so the same candidate (near-ties are recomputed exactly)."""
    centers = (np.arange(len(counts)) + 0.5) * width
    amaxes = centers[128:]
    nz = counts > 0
    fast, slow = np.empty(len(amaxes)), np.empty(len(amaxes))
    args = (centers[nz], counts[nz].astype(np.float64), amaxes, float(len(counts)), 127.0)
    kernels.mse_sweep()(*args, fast)
    sweep_numpy(*args, slow)
    # float64 sums of up to 2048 terms in another order, with reassociated products: measured
    # up to 1.2e-12 apart; 1e-9 is still far inside the 1e-6 band of near-ties that mse_errors
    # recomputes with the published arithmetic, so the chosen candidate cannot move.
    np.testing.assert_allclose(fast, slow, rtol=1e-9, atol=1e-300)
    if counts.sum():
        assert mse_amax(counts, width) == pytest.approx(mse_amax_reference(counts, width))
