"""The mergeable |x| histogram: merge = concatenation, growth keeps the width, zeros, edges."""
from __future__ import annotations

import math  # noqa: F401

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from ptq.histogram import DEFAULT_NUM_BINS, Histogram, Scratch, bin_counts, grid_top

finite32 = st.floats(-1e6, 1e6, allow_nan=False, width=32)
batches = hnp.arrays(np.float32, st.integers(1, 300), elements=finite32)


def same(a: Histogram, b: Histogram) -> bool:
    return (a.bin_width == b.bin_width and a.pending_zeros == b.pending_zeros
            and np.array_equal(a.counts, b.counts))


def of(x: np.ndarray, num_bins: int = DEFAULT_NUM_BINS) -> Histogram:
    h = Histogram(num_bins)
    h.update(x)
    return h


@settings(max_examples=150, deadline=None)
@given(a=batches, b=batches)
def test_merge_equals_histogram_of_the_concatenation(a: np.ndarray, b: np.ndarray) -> None:
    # Power-of-two widths make |x| / w exact, so equality is exact, whichever batch is larger.
    whole = of(np.concatenate([a, b]))
    assert same(of(a).merge(of(b)), whole)
    assert same(of(b).merge(of(a)), whole)
    assert of(a).merge(of(b)).total == a.size + b.size


@settings(max_examples=100, deadline=None)
@given(parts=st.lists(batches, min_size=2, max_size=5), seed=st.integers(0, 2**31))
def test_any_batching_and_order_gives_the_same_histogram(parts: list[np.ndarray], seed: int) -> None:
    whole = np.concatenate(parts)
    order = np.random.default_rng(seed).permutation(len(whole))
    stream = Histogram(256)
    for x in parts:
        stream.update(x)
    shuffled = Histogram(256)
    for chunk in np.array_split(whole[order], 3):
        shuffled.update(chunk)
    assert same(stream, of(whole, 256))
    assert same(shuffled, of(whole, 256))
    assert stream.total == whole.size


def test_the_grid_is_the_next_power_of_two_above_the_max() -> None:
    # max 1.0 -> range [0, 2) (strictly above the max: no value ever sits on the top edge)
    h = of(np.array([0.25, 1.0], np.float32))
    assert h.bin_width == 2.0 / 2048 and len(h.counts) == 2048
    assert h.counts[256] == 1 and h.counts[1024] == 1
    assert grid_top(1.0) == 2.0 and grid_top(0.75) == 1.0 and grid_top(3.0) == 4.0


def test_growth_merges_bins_pairwise() -> None:
    h = of(np.array([0.0, 1.0, 2.0, 3.0], np.float32), 4)   # top 4, width 1
    np.testing.assert_array_equal(h.counts, [1, 1, 1, 1])
    h.update(np.array([5.0, 7.9], np.float32))             # top 8, width 2: pairs summed
    assert h.bin_width == 2.0
    np.testing.assert_array_equal(h.counts, [2, 2, 1, 1])
    h.update(np.array([8.0], np.float32))                  # 8 is the top: top 16, width 4
    np.testing.assert_array_equal(h.counts, [4, 2, 1, 0])
    assert h.upper == 16.0
    np.testing.assert_allclose(h.edges, [0, 4, 8, 12, 16])


def test_odd_bin_counts_still_merge_losslessly() -> None:
    h = of(np.array([0.5, 1.5, 2.5], np.float32), 3)        # top 4, width 4/3: [1, 2, 0]
    h.update(np.array([-6.0], np.float32))                 # top 8, width 8/3: [1+2, 0+0, 0] + 6 in bin 2
    assert h.total == 4 and len(h.counts) == 3
    np.testing.assert_array_equal(h.counts, [3, 0, 1])


def test_all_zero_batches_wait_then_join_bin_zero() -> None:
    h = Histogram(16)
    h.update(np.zeros((2, 3), np.float32))
    h.update(np.zeros(4, np.float32))
    assert (h.bin_width, h.pending_zeros, h.total, len(h.counts)) == (0.0, 10, 10, 0)
    assert [c.tolist() for c in h.finalized()[:1]] == [[10]] and h.finalized()[1] == 0.0
    h.update(np.array([0.0, -8.0, 3.0], np.float32))       # top 16, width 1
    assert h.bin_width == 1.0 and h.pending_zeros == 0
    assert h.counts[0] == 11 and h.counts[3] == 1 and h.counts[8] == 1 and h.total == 13
    zeros_only = Histogram(16)
    zeros_only.update(np.zeros(5, np.float32))
    assert same(zeros_only.merge(h), h.merge(zeros_only))
    assert zeros_only.merge(h).counts[0] == 16


def test_merging_different_grids_is_refused() -> None:
    with pytest.raises(ValueError, match="num_bins"):
        of(np.ones(2, np.float32), 8).merge(of(np.ones(2, np.float32), 16))
    with pytest.raises(ValueError, match="power-of-two grid"):
        Histogram(4, 0.75, np.ones(4, np.int64)).merge(Histogram(4, 1.0, np.ones(4, np.int64)))


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
    h.update(np.array([-1.0, 0.5, 2.0], dtype))  # top 4, width 0.5
    assert h.bin_width == 0.5 and h.counts.tolist() == [0, 1, 1, 0, 1, 0, 0, 0]


def test_tiny_activations_do_not_break_the_bin_index() -> None:
    # max|x| = 1e-37 gives a width whose float32 reciprocal overflows to inf.
    x = np.array([1e-37, 0.0, 5e-38, -2.5e-38], np.float32)
    h = of(x)
    expected = np.floor(np.abs(x.astype(np.float64)) / h.bin_width).astype(int)
    assert h.total == 4 and h.counts[expected].tolist() == [1, 1, 1, 1]


def test_a_near_zero_first_batch_cannot_make_the_bins_explode() -> None:
    # A later batch 1e9 times larger doubles the width ~30 times; the bins stay num_bins.
    h = of(np.array([1e-6, 5e-7], np.float32))
    h.update(np.array([1e3, 1.0], np.float32))
    assert len(h.counts) == DEFAULT_NUM_BINS and h.total == 4 and h.upper > 1e3
    assert h.counts[0] == 2  # the tiny values share the first bin now
    assert h.counts[int(1.0 / h.bin_width)] == 1 and h.counts[int(1e3 / h.bin_width)] == 1
