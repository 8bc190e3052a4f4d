"""A mergeable histogram of |x|, grown the way TensorRT and pytorch-quantization grow it.

The first non-zero batch fixes the bin width (`max|x| / num_bins`); a later batch
with a larger max keeps that width and appends bins, so counts from different
batches always add bin for bin and memory never depends on the number of images.

    edges:  0      w      2w     ...    (n-1)w   n*w
            |------|------|-- ... --|--------|
    bin:       0      1                 n-1        a value v lands in floor(v / w),
                                                   v == n*w lands in the last bin

Growth is bounded: a batch that would need more than MAX_GROWTH * num_bins bins (a
first batch ~1e9 times smaller than a later one would need ~2e12) first merges
groups of adjacent bins, multiplying the width by a whole factor.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from ptq.kernels import Scratch, bin_counts  # noqa: F401  (the counting kernel lives there)

DEFAULT_NUM_BINS = 2048
MAX_GROWTH = 16  # bins may grow to 16 x num_bins before the width is coarsened
_F32_MAX = float(np.finfo(np.float32).max)


@dataclass
class Histogram:
    """Counts of |x| in bins of fixed width `bin_width` starting at 0.

    Before the first non-zero value is seen the width is unknown (`bin_width == 0`)
    and zeros are counted in `pending_zeros`; they join bin 0 once a width exists.
    """

    num_bins: int = DEFAULT_NUM_BINS
    bin_width: float = 0.0
    counts: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    pending_zeros: int = 0

    @property
    def total(self) -> int:
        return int(self.counts.sum()) + self.pending_zeros

    @property
    def edges(self) -> np.ndarray:
        return np.arange(len(self.counts) + 1, dtype=np.float64) * self.bin_width

    @property
    def upper(self) -> float:
        return len(self.counts) * self.bin_width

    def update(self, x: np.ndarray, amax: float | None = None,
               scratch: Scratch | None = None) -> None:
        """Add the values of `x`; `amax` = max|x| if the caller already knows it."""
        if x.size == 0:
            return
        if amax is None:
            amax = float(np.max(np.abs(x)))
        if self.bin_width == 0.0:
            if amax == 0.0:
                self.pending_zeros += int(x.size)
                return
            self.bin_width = amax / self.num_bins
            self.counts = np.zeros(self.num_bins, np.int64)
            self.counts[0] += self.pending_zeros
            self.pending_zeros = 0
        if amax > self.upper:
            grown = max(math.ceil(amax / self.bin_width), len(self.counts))
            if grown > MAX_GROWTH * self.num_bins:
                self._coarsen(math.ceil(grown / (MAX_GROWTH * self.num_bins)))
                grown = max(math.ceil(amax / self.bin_width), len(self.counts))
            self.counts = np.concatenate(
                [self.counts, np.zeros(grown - len(self.counts), np.int64)])
        self.counts += bin_counts(x, self.bin_width, len(self.counts), scratch)

    def _coarsen(self, factor: int) -> None:
        """Sum each run of `factor` bins into one: bin k of width w*f = old bins [k*f, (k+1)*f)."""
        self.counts = np.add.reduceat(self.counts, np.arange(0, len(self.counts), factor))
        self.bin_width *= factor

    def merge(self, other: Histogram) -> Histogram:
        """Sum two histograms that share a bin width (or where one has none yet)."""
        if self.bin_width == 0.0 or other.bin_width == 0.0:
            base, extra = (other, self) if self.bin_width == 0.0 else (self, other)
            out = base.copy()
            if out.bin_width == 0.0:
                out.pending_zeros += extra.pending_zeros
            else:
                out.counts[0] += extra.pending_zeros
            return out
        if not math.isclose(self.bin_width, other.bin_width, rel_tol=1e-12):
            raise ValueError(f"cannot merge histograms with bin widths {self.bin_width} and "
                             f"{other.bin_width}; build both from the same first batch")
        n = max(len(self.counts), len(other.counts))
        counts = np.zeros(n, np.int64)
        counts[: len(self.counts)] += self.counts
        counts[: len(other.counts)] += other.counts
        return Histogram(self.num_bins, self.bin_width, counts, 0)

    def copy(self) -> Histogram:
        return Histogram(self.num_bins, self.bin_width, self.counts.copy(), self.pending_zeros)

    def finalized(self) -> tuple[np.ndarray, float]:
        """(counts, width) ready for the algorithms; an all-zero tensor is one bin of width 0."""
        if self.bin_width == 0.0:
            return np.array([self.pending_zeros], np.int64), 0.0
        return self.counts, self.bin_width
