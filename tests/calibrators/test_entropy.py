"""Entropy (KL) threshold search: hand-derived answers, and the literal published algorithm as oracle.

The oracle (``reference_algorithms.py``) is a loop-for-loop transcription of pytorch-quantization's
``_compute_amax_entropy`` using scipy's KL; ptq's version is a prefix-sum rewrite, so agreement on
real and random histograms checks the rewrite, and the hand-built histograms check the published
rules themselves (start bin 128, 128 levels, outliers folded, empty bins stay empty, ties -> largest).
"""
from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from calibrators.reference_algorithms import entropy_amax_reference, entropy_divergences_reference
from ptq.calibrators import entropy_amax, entropy_divergences
from ptq.table import CalibrationTable

W = 0.01  # any bin width: amax is always a whole number of bins times it


def test_uniform_first_128_bins_every_candidate_is_exact_so_the_largest_wins() -> None:
    # P = the 128 equal bins (nothing beyond them to fold in); Q keeps empty bins empty, so Q == P
    # for every candidate i in 128..2048 -> KL 0 everywhere -> the tie goes to i = 2048.
    counts = np.zeros(2048, np.int64)
    counts[:128] = 50
    cands, div = entropy_divergences(counts)
    assert cands[0] == 128 and cands[-1] == 2048
    np.testing.assert_allclose(div, 0.0, atol=1e-9)
    assert entropy_amax(counts, W) == pytest.approx(2048 * W)
    assert entropy_amax_reference(counts, W, stride=64) == pytest.approx(2048 * W)


def test_outliers_fold_into_the_last_kept_bin() -> None:
    # Uniform over 256 bins. Candidate 128 keeps bins 0..127 and folds the other 128 into bin 127:
    # p = 1/256 (127 bins) and 129/256 (last), q = 1/128 (128 levels of one bin each), so
    # KL = 127/256 * ln(1/2) + 129/256 * ln(129/2). Only candidate 256 folds nothing: KL 0.
    counts = np.full(256, 7, np.int64)
    cands, div = entropy_divergences(counts)
    expected_128 = 127 / 256 * math.log(0.5) + 129 / 256 * math.log(129 / 2)
    assert div[0] == pytest.approx(expected_128, rel=1e-12)
    assert (div[:-1] > 1e-6).all() and div[-1] == pytest.approx(0.0, abs=1e-12)
    assert entropy_amax(counts, W) == pytest.approx(256 * W)


def test_empty_bins_stay_empty_and_empty_last_bin_with_outliers_is_infinite() -> None:
    # 128 unit bins, 172 empty ones, then one far outlier (301 bins). Candidates 129..300 end on an
    # empty bin that must hold the folded outlier while Q is 0 there: KL = inf. Candidate 301 folds
    # nothing and, with empty bins kept at 0, Q equals P bin for bin: KL 0. (Smearing each level
    # over its empty bins would make that KL > 0 and move the answer to candidate 128.)
    counts = np.array([1] * 128 + [0] * 172 + [1], np.int64)
    cands, div = entropy_divergences(counts)
    ref_cands, ref_div = entropy_divergences_reference(counts)
    np.testing.assert_array_equal(cands, ref_cands)
    assert np.isinf(div[1:-1]).all() and np.isinf(ref_div[1:-1]).all()
    assert 0 < div[0] < math.inf and div[-1] == pytest.approx(0.0, abs=1e-12)
    assert entropy_amax(counts, W) == pytest.approx(301 * W) == entropy_amax_reference(counts, W)


def test_stride_and_short_and_empty_histograms() -> None:
    counts = np.random.default_rng(3).integers(0, 50, 700)
    cands, _ = entropy_divergences(counts, stride=16)
    np.testing.assert_array_equal(cands, np.arange(128, 701, 16))
    assert entropy_amax(counts, W, stride=16) == pytest.approx(entropy_amax_reference(counts, W, stride=16))
    assert entropy_amax(np.ones(100, np.int64), W) == pytest.approx(100 * W)  # < start_bin: full range
    assert entropy_amax(np.zeros(3000, np.int64), W) == 0.0  # nothing observed (floored by the caller)
    assert entropy_amax(np.ones(300, np.int64), 0.0) == 0.0


counts_arrays = st.integers(128, 260).flatmap(lambda n: hnp.arrays(
    np.int64, n, elements=st.one_of(st.just(0), st.integers(0, 20), st.integers(0, 10**6))))


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(counts=counts_arrays)
def test_matches_the_literal_algorithm_on_random_histograms(counts: np.ndarray) -> None:
    cands, div = entropy_divergences(counts)
    ref_cands, ref_div = entropy_divergences_reference(counts)
    assume(not np.isnan(ref_div).any())  # 0/0 in the transcription: see the digits-input test
    np.testing.assert_array_equal(cands, ref_cands)
    np.testing.assert_array_equal(np.isinf(div), np.isinf(ref_div))
    finite = np.isfinite(ref_div)
    np.testing.assert_allclose(div[finite], ref_div[finite], rtol=1e-7, atol=1e-9)
    if finite.any():
        assert entropy_amax(counts, W) == pytest.approx(entropy_amax_reference(counts, W))


@settings(max_examples=25, deadline=None)
@given(counts=counts_arrays, zero_bin=st.integers(0, 10**9))
def test_the_zero_bin_is_ignored(counts: np.ndarray, zero_bin: int) -> None:
    # b[0] := b[1]: the spike of exact zeros (ReLU) never moves the threshold. (A real histogram
    # always has mass past bin 0: its max lands in the last bin.)
    assume(counts[1:].any())
    other = counts.copy()
    other[0] = zero_bin
    assert entropy_amax(counts, W) == entropy_amax(other, W)


@pytest.fixture(scope="module")
def digits_table(digits_ranges) -> CalibrationTable:
    return CalibrationTable.load(digits_ranges)


def test_matches_the_literal_algorithm_on_every_real_digits_tensor(digits_table: CalibrationTable) -> None:
    for name, t in digits_table.tensors.items():
        counts, width = t.histogram.finalized()
        cands, div = entropy_divergences(counts, stride=32)
        ref_cands, ref_div = entropy_divergences_reference(counts, stride=32)
        np.testing.assert_array_equal(cands, ref_cands)
        ok = ~np.isnan(ref_div)
        np.testing.assert_array_equal(np.isinf(div[ok]), np.isinf(ref_div[ok]), err_msg=name)
        finite = np.isfinite(ref_div)
        np.testing.assert_allclose(div[finite], ref_div[finite], rtol=1e-7, atol=1e-9, err_msg=name)
    counts, width = digits_table.tensors["relu1"].histogram.finalized()  # where entropy clips most
    assert entropy_amax(counts, width, stride=8) == pytest.approx(
        entropy_amax_reference(counts, width, stride=8))
    assert entropy_amax(counts, width) < 0.5 * digits_table.tensors["relu1"].max


def test_digits_input_keeps_the_whole_pixel_range(digits_table: CalibrationTable) -> None:
    # Pixels/255 take 17 levels (~k/16). On the power-of-two grid [0, 2) of width 1/1024 they
    # fill bins 0, 64, 128, ..., and 1.0 sits on the lower edge of bin 1024, the last one.
    # Bin 1 is empty, so b[0] := b[1] = 0; KL is 0 where Q reproduces P exactly and the tie
    # goes to the largest candidate: all 1025 bins, the whole pixel range (as the literal
    # algorithm, checked here at every candidate).
    t = digits_table.tensors["image"]
    counts, width = t.histogram.finalized()
    assert t.max == 1.0 and width == 1 / 1024 and len(counts) == 1025
    assert np.flatnonzero(counts)[:4].tolist() == [0, 64, 128, 192]
    assert t.amax["entropy"] == entropy_amax_reference(counts, width) == 1025 / 1024


@pytest.mark.slow
def test_matches_the_literal_algorithm_on_efficientnet(effnet_ranges) -> None:
    table = CalibrationTable.load(effnet_ranges)
    for name, t in table.tensors.items():
        counts, width = t.histogram.finalized()
        ref_cands, ref_div = entropy_divergences_reference(counts, stride=32)
        cands, div = entropy_divergences(counts, stride=32)
        finite = np.isfinite(ref_div)
        np.testing.assert_allclose(div[finite], ref_div[finite], rtol=1e-7, atol=1e-9, err_msg=name)
        if not np.isnan(ref_div).any():
            assert entropy_amax(counts, width, stride=32) == pytest.approx(
                entropy_amax_reference(counts, width, stride=32)), name
