"""Known-answer tests for what the report computes: clipped fractions and display histograms."""
from __future__ import annotations

import numpy as np
import pytest

from ptq.histogram import Histogram
from ptq.reports.analysis import HALF_STEP, clipped_fraction, display_histogram
from ptq.table import TensorRange


def _tensor(counts: list[int] | np.ndarray, width: float, lo: float, hi: float) -> TensorRange:
    counts = np.asarray(counts, np.int64)
    hist = Histogram(len(counts), width, counts) if width else \
        Histogram(2048, 0.0, np.zeros(0, np.int64), int(counts.sum()))
    return TensorRange("t", "n", "Conv", None, "float32", lo, hi, int(counts.sum()), hist)


def test_clipped_fraction_known_answer() -> None:
    # 4 bins of width 1 on [0, 4), 10 values each. amax = 2: the cut is 2 * (1 + 1/254)
    # = 2.007874, inside bin 2 at fraction 0.007874, so bin 2 loses 10 * (1 - 0.007874)
    # and bin 3 all 10: (9.92126 + 10) / 40 = 0.4980315.
    t = _tensor([10, 10, 10, 10], 1.0, -4.0, 4.0)
    assert clipped_fraction(t, 2.0) == pytest.approx((10 * (1 - 2 / 254) + 10) / 40, rel=1e-12)
    assert clipped_fraction(t, 4.0) == 0.0                  # amax at max|x|: nothing clipped
    assert clipped_fraction(t, 4.0 / (1 + HALF_STEP)) == 0.0  # within half a step of max|x|
    assert clipped_fraction(t, 0.5) == pytest.approx((10 * (1 - 0.5 * (1 + HALF_STEP)) + 30) / 40)


def test_clipped_fraction_of_an_all_zero_tensor_is_zero() -> None:
    assert clipped_fraction(_tensor([5], 0.0, 0.0, 0.0), 2.0 ** -14) == 0.0


@pytest.mark.parametrize("q", [90.0, 99.0, 99.9])
def test_clipped_fraction_matches_the_raw_values(q: float) -> None:
    """Against counting the raw values directly; the histogram can only be off by the share
    of the one bin the cut falls in."""
    rng = np.random.default_rng(3)
    x = np.concatenate([rng.laplace(0, 1.0, 200_000), rng.normal(0, 8.0, 2_000)]).astype(np.float32)
    hist = Histogram(2048)
    for part in np.array_split(x, 7):
        hist.update(part)
    t = TensorRange("t", "n", "Conv", None, "float32", float(x.min()), float(x.max()), x.size, hist)
    amax = float(np.percentile(np.abs(x), q))
    truth = float(np.mean(np.abs(x) > amax * (1 + HALF_STEP)))
    counts, width = hist.finalized()
    one_bin = counts[int(amax * (1 + HALF_STEP) / width)] / counts.sum()
    assert abs(clipped_fraction(t, amax) - truth) <= one_bin + 1e-12
    assert truth > 0


def test_display_histogram_keeps_every_count() -> None:
    counts = np.arange(2867)   # a grown histogram: more bins than the 2048 it started with
    t = _tensor(counts, 0.5, -10.0, 1433.0)
    merged, width = display_histogram(t, 400)
    assert len(merged) <= 400 and merged.sum() == counts.sum()
    assert width == 0.5 * int(np.ceil(2867 / 400))
    assert merged[0] == counts[:8].sum()
