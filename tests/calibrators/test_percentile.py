"""Percentile threshold: hand-built histograms, raw-data percentiles, and the published formula."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from calibrators.reference_algorithms import percentile_amax_reference
from ptq.calibrators import AMAX_FLOOR, AlgorithmSettings, Method, compute_amax, percentile_amax
from ptq.calibrators.percentile import DEFAULT_PERCENTILE
from ptq.histogram import Histogram
from ptq.table import CalibrationTable


def test_hand_built_histogram_gives_the_left_edge_of_the_crossing_bin() -> None:
    # 100 values in 4 bins of width 0.5: CDF after each bin = 0.1, 0.3, 0.6, 1.0.
    counts = np.array([10, 20, 30, 40])
    assert percentile_amax(counts, 0.5, 20.0) == 0.5   # crosses in bin 1 = [0.5, 1.0)
    assert percentile_amax(counts, 0.5, 50.0) == 1.0   # bin 2
    assert percentile_amax(counts, 0.5, 99.99) == 1.5  # bin 3
    assert percentile_amax(counts, 0.5, 100.0) == 1.5  # published: edges[idx], not the top edge
    assert percentile_amax(counts, 0.5, 5.0) == 0.0    # bin 0: a zero amax, floored below
    assert compute_amax(Method.PERCENTILE, counts, 0.5, 0.0, 2.0,
                        AlgorithmSettings(percentile=5.0)) == (AMAX_FLOOR, True)


def test_default_is_99_99_and_bad_percentiles_are_refused() -> None:
    assert DEFAULT_PERCENTILE == 99.99
    # 1,000,000 values: 999,950 in bin 0, then 12, 12, 12, 12, 2. The 99.99th percentile is the
    # 999,900th value (bin 0); the 99.999th is the 999,990th: bins 0..3 hold 999,986 and bins
    # 0..4 hold 999,998, so it is in bin 4 (left edge 4 w).
    counts = np.array([999_950, 12, 12, 12, 12, 2])
    assert percentile_amax(counts, 1.0) == 0.0
    assert percentile_amax(counts, 1.0, 99.999) == 4.0
    for bad in (0.0, -1.0, 100.5):
        with pytest.raises(ValueError, match="percentile"):
            percentile_amax(counts, 1.0, bad)
    assert percentile_amax(np.zeros(10), 1.0) == 0.0
    assert percentile_amax(counts, 0.0) == 0.0


@pytest.mark.parametrize("p", [90.0, 99.0, 99.9, 99.99])
def test_brackets_the_percentile_of_the_raw_values(p: float) -> None:
    # Independent check: numpy's percentile of the raw |x| lies inside the bin ptq picks.
    x = np.random.default_rng(int(p * 100)).laplace(size=400_000).astype(np.float32)
    h = Histogram()
    for part in np.array_split(x, 4):
        h.update(part)
    counts, width = h.finalized()
    amax = percentile_amax(counts, width, p)
    true = float(np.percentile(np.abs(x), p))
    # numpy interpolates between order statistics, the CDF counts whole samples: at a bin edge
    # the two can disagree by one sample, i.e. land one bin apart
    assert amax - width * 1.0001 <= true <= amax + width * 1.0001


@settings(max_examples=60, deadline=None)
@given(counts=hnp.arrays(np.int64, st.integers(1, 3000), elements=st.integers(0, 10**6)),
       p=st.floats(0.01, 100.0))
def test_matches_the_published_formula(counts: np.ndarray, p: float) -> None:
    if counts.sum() == 0:
        assert percentile_amax(counts, 0.25, p) == 0.0
        return
    assert percentile_amax(counts, 0.25, p) == min(percentile_amax_reference(counts, 0.25, p),
                                                   len(counts) * 0.25)


def test_digits_table_uses_the_configured_percentile(digits_ranges) -> None:
    table = CalibrationTable.load(digits_ranges)
    assert table.settings["percentile"] == DEFAULT_PERCENTILE
    for t in table.tensors.values():
        counts, width = t.histogram.finalized()
        assert t.amax["percentile"] == pytest.approx(max(
            percentile_amax_reference(counts, width, DEFAULT_PERCENTILE), AMAX_FLOOR))
        assert t.amax["percentile"] <= t.amax["minmax"] + width
