"""The mergeable |x| histogram: merge = concatenation, growth keeps the width, zeros, edges."""
from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from ptq.histogram import DEFAULT_NUM_BINS, Histogram, Scratch, bin_counts

finite32 = st.floats(-1e6, 1e6, allow_nan=False, width=32)
batches = hnp.arrays(np.float32, st.integers(1, 300), elements=finite32)


def with_width(width: float, num_bins: int = 64) -> Histogram:
    """An empty histogram whose width is already fixed (as after a first batch)."""
    return Histogram(num_bins, width, np.zeros(num_bins, np.int64))


def raw_index(x: np.ndarray, width: float) -> np.ndarray:
    """floor(|x| / w) as ptq computes it (float32 product), before the top-edge fold."""
    if 1.0 / width >= float(np.finfo(np.float32).max):
        return (np.abs(x.astype(np.float64)) * (1.0 / width)).astype(np.int64)
    return (np.abs(x).astype(np.float32) * np.float32(1.0 / width)).astype(np.int64)


def same(a: Histogram, b: Histogram) -> bool:
    return (a.bin_width == b.bin_width and a.pending_zeros == b.pending_zeros
            and np.array_equal(a.counts, b.counts))


@settings(max_examples=150, deadline=None)
@given(a=batches, b=batches)
def test_merge_equals_histogram_of_the_concatenation(a: np.ndarray, b: np.ndarray) -> None:
    # The first batch fixes the width; b is histogrammed at that width, separately and in the
    # concatenation. (When b is the larger one it grows the bins; see the next test.)
    assume(np.abs(a).max() > 0 and np.abs(b).max() <= np.abs(a).max())
    first = Histogram(DEFAULT_NUM_BINS)
    first.update(a)
    second = with_width(first.bin_width, DEFAULT_NUM_BINS)
    second.update(b)
    whole = with_width(first.bin_width, DEFAULT_NUM_BINS)
    whole.update(np.concatenate([a, b]))
    assert same(first.merge(second), whole)
    assert same(second.merge(first), whole)
    assert first.merge(second).total == a.size + b.size


small = hnp.arrays(np.float32, st.integers(1, 300), elements=st.floats(-1e4, 1e4, width=32))


@settings(max_examples=150, deadline=None)
@given(a=small, b=small, width=st.floats(1.0, 100.0))
def test_merge_equals_concatenation_with_growth(a: np.ndarray, b: np.ndarray, width: float) -> None:
    # Counting is additive at a shared width whatever each batch grows to, as long as no value sits
    # exactly on the top edge of the (smaller) histogram it was counted in: such a value goes to
    # that histogram's last bin (the top-edge rule) but to the next bin in the concatenation.
    ha, hb, whole = (with_width(width, 1024) for _ in range(3))  # grows up to 10,000 bins
    ha.update(a)
    hb.update(b)
    whole.update(np.concatenate([a, b]))
    assume((raw_index(a, width) < len(ha.counts)).all() and (raw_index(b, width) < len(hb.counts)).all())
    assert same(ha.merge(hb), whole)


@settings(max_examples=100, deadline=None)
@given(parts=st.lists(batches, min_size=2, max_size=5))
def test_streaming_updates_equal_merging_per_batch_histograms(parts: list[np.ndarray]) -> None:
    first_max = float(np.abs(parts[0]).max())
    assume(first_max > 0 and max(float(np.abs(x).max()) for x in parts) <= 8 * first_max)
    stream = Histogram(256)
    for x in parts:
        stream.update(x)
    merged = Histogram(256)
    merged.update(parts[0])
    for x in parts[1:]:
        h = with_width(merged.bin_width, 256)
        h.update(x)
        # A value on the top edge of its own batch's histogram goes to that histogram's last bin,
        # but to the next bin when the stream has already grown past it: excluded here.
        assume((raw_index(x, merged.bin_width) < len(h.counts)).all())
        merged = merged.merge(h)
    assert same(stream, merged)
    assert stream.total == sum(x.size for x in parts)


def test_growth_appends_bins_and_keeps_the_width() -> None:
    h = Histogram()
    h.update(np.array([0.25, 1.0], np.float32))
    width, before = h.bin_width, h.counts.copy()
    assert width == 1.0 / 2048 and len(before) == 2048
    h.update(np.array([2.5], np.float32))
    assert h.bin_width == width
    assert len(h.counts) == math.ceil(2.5 / width) == 5120
    np.testing.assert_array_equal(h.counts[:2048], before)
    assert h.counts[-1] == 1 and h.counts[2048:-1].sum() == 0
    assert h.upper == pytest.approx(2.5)
    np.testing.assert_allclose(h.edges, np.arange(5121) * width)
    h.update(np.array([1.75], np.float32))  # inside the range: no growth
    assert len(h.counts) == 5120 and h.counts[3584] == 1


def test_values_on_the_top_edge_land_in_the_last_bin() -> None:
    h = Histogram(4)
    h.update(np.array([0.0, 1.0, 2.0, 3.0, 4.0, -4.0], np.float32))  # width 1, top edge 4
    np.testing.assert_array_equal(h.counts, [1, 1, 1, 3])
    h.update(np.array([6.0], np.float32))  # grows to 6 bins; 6.0 is the new top edge
    np.testing.assert_array_equal(h.counts, [1, 1, 1, 3, 0, 1])
    assert bin_counts(np.array([2.0, 2.0], np.float32), 0.5, 4).tolist() == [0, 0, 0, 2]


def test_all_zero_batches_wait_then_join_bin_zero() -> None:
    h = Histogram(16)
    h.update(np.zeros((2, 3), np.float32))
    h.update(np.zeros(4, np.float32))
    assert (h.bin_width, h.pending_zeros, h.total, len(h.counts)) == (0.0, 10, 10, 0)
    assert [c.tolist() for c in h.finalized()[:1]] == [[10]] and h.finalized()[1] == 0.0
    h.update(np.array([0.0, -8.0, 3.0], np.float32))
    assert h.bin_width == 0.5 and h.pending_zeros == 0
    assert h.counts[0] == 11 and h.counts[6] == 1 and h.counts[15] == 1 and h.total == 13
    zeros_only = Histogram(16)
    zeros_only.update(np.zeros(5, np.float32))
    assert same(zeros_only.merge(h), h.merge(zeros_only))
    assert zeros_only.merge(h).counts[0] == 16


def test_merging_different_widths_is_refused() -> None:
    with pytest.raises(ValueError, match="bin widths"):
        with_width(0.5).merge(with_width(0.25))


@settings(max_examples=100, deadline=None)
@given(x=hnp.arrays(np.float32, st.integers(1, 500), elements=st.floats(-1e4, 1e4, width=32)),
       width=st.floats(1e-2, 1e3))
def test_bin_counts_agree_with_float64_floor_except_at_rounding_boundaries(x, width) -> None:
    exact = np.abs(x.astype(np.float64)) / width
    n = int(math.ceil(exact.max())) + 2  # room above the largest value: no top-edge fold
    counts = bin_counts(x, width, n)
    reference = np.bincount(np.floor(exact).astype(np.int64), minlength=n)
    near_edge = np.abs(exact - np.round(exact)) <= 1e-6 * np.maximum(exact, 1.0)
    assert counts.sum() == x.size
    assert np.abs(counts - reference).sum() <= 2 * near_edge.sum()
    np.testing.assert_array_equal(bin_counts(x, width, n, Scratch()), counts)


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_float16_and_float64_activations(dtype) -> None:
    h = Histogram(8)
    h.update(np.array([-1.0, 0.5, 2.0], dtype))
    assert h.bin_width == 0.25 and h.counts.tolist() == [0, 0, 1, 0, 1, 0, 0, 1]


def test_tiny_activations_do_not_break_the_bin_index() -> None:
    # max|x| = 1e-37 gives a width whose float32 reciprocal overflows to inf.
    h = Histogram()
    x = np.array([1e-37, 0.0, 5e-38, -2.5e-38], np.float32)
    h.update(x)
    assert h.total == 4 and h.counts[0] == 1 and h.counts[-1] == 1
    assert h.counts[1024] + h.counts[1023] == 1 and h.counts[512] + h.counts[511] == 1


def test_a_near_zero_first_batch_cannot_make_the_bins_explode() -> None:
    # The first batch fixes the width; a later batch 1e9 times larger would need 2e12 bins
    # (~16 TB) if the width were kept at any cost. The histogram coarsens instead, bounded.
    h = Histogram()
    h.update(np.array([1e-6, 5e-7], np.float32))
    h.update(np.array([1e3, 1.0], np.float32))
    assert len(h.counts) <= 64 * DEFAULT_NUM_BINS
    assert h.total == 4 and h.upper >= 1e3
    assert h.counts[-1] == 1 and h.counts[0] == 2  # the tiny values share the first bin now
    assert h.counts[int(1.0 / h.bin_width)] == 1
