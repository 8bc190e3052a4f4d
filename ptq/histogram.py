"""A mergeable histogram of |x| on a power-of-two grid, independent of batch size and order.

The range of the bins is the smallest power of two strictly above max|x| seen so far,
split into `num_bins` bins of width w = 2^k / num_bins. When a later batch goes past the
top, adjacent bins are summed pairwise (the range and the width double) until it fits:

    before:  |  0  |  1  |  2  |  3  | ... | n-2 | n-1 |          width w, top n*w
    after:   |   0+1     |   2+3     | ... |  n-2+n-1  | 0 | ... | 0 |   width 2w, top 2n*w

Each new bin covers exactly two old ones (the edges align), so nothing is lost: a value v
is in bin floor(v / w) of every grid it ever sat on. The final grid therefore depends only
on the largest |x| of the whole data set, and every count only on the values, never on how
they were batched or ordered. With a power-of-two `num_bins` the width is a power of two and
v / w is exact in floating point, so histograms (and every amax computed from them) are
bit-identical across batch sizes and orders. (TensorRT and pytorch-quantization fix the
width from the first batch instead: ranges then move with the batch size, up to 32x on a
DBNet tensor; ModelOpt issue 619.) Memory is num_bins counts whatever the data.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from ptq.kernels import Scratch, bin_counts  # noqa: F401  (the counting kernel lives there)

DEFAULT_NUM_BINS = 2048
MAX_GROWTH = 1  # the number of bins never grows: a larger range doubles the width instead
_F32_MAX = float(np.finfo(np.float32).max)


def grid_top(amax: float) -> float:
    """The smallest power of two strictly greater than `amax` (> 0): no value sits on the top edge."""
    m, e = math.frexp(amax)  # amax = m * 2**e, 0.5 <= m < 1, so 2**e > amax >= 2**(e-1)
    return math.ldexp(1.0, e)


@dataclass
class Histogram:
    """Counts of |x| in `num_bins` bins of width `bin_width` starting at 0 (power-of-two grid).

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
        if self.bin_width == 0.0 and amax == 0.0:
            self.pending_zeros += int(x.size)
            return
        self.grow(amax)
        self.counts += bin_counts(x, self.bin_width, len(self.counts), scratch)

    def grow(self, amax: float) -> None:
        """Make the grid cover |x| <= amax > 0 (the first one sets the width)."""
        if self.bin_width == 0.0:
            self.bin_width = grid_top(amax) / self.num_bins
            self.counts = np.zeros(self.num_bins, np.int64)
            self.counts[0] += self.pending_zeros
            self.pending_zeros = 0
        while amax >= self.upper:
            self._coarsen()

    def add_counts(self, counts: np.ndarray, width: float) -> None:
        """Add counts made on a finer grid of the same family (width / 2^k), or on none
        (width 0: only zeros, all in bin 0). Lossless: fine bin i lies in bin i >> k.
        The caller has grown this grid to cover them."""
        if width == 0.0:
            self.counts[0] += counts[0]
            return
        factor = self.bin_width / width
        k = round(math.log2(factor)) if factor >= 1 else -1
        if k < 0 or not math.isclose(factor, 2.0 ** k, rel_tol=1e-12):
            raise ValueError(f"cannot add counts of width {width} to a grid of width {self.bin_width}")
        n = len(counts)
        if k == 0 and n == len(self.counts):
            self.counts += counts
        elif n % (1 << min(k, 62)) == 0 and (n >> k) <= len(self.counts):  # power-of-two blocks
            self.counts[: n >> k] += counts.reshape(n >> k, 1 << k).sum(axis=1)
        elif (1 << min(k, 62)) >= n:  # every fine bin lies in coarse bin 0
            self.counts[0] += counts.sum()
        else:
            nz = np.flatnonzero(counts)
            if len(nz) and int(nz[-1]) >> k >= len(self.counts):
                raise ValueError("counts beyond the top of the grid")
            np.add.at(self.counts, nz >> k, counts[nz])

    def _coarsen(self) -> None:
        """Double the range: new bin k = old bins 2k + 2k+1; the upper half starts empty."""
        n = len(self.counts)
        padded = np.concatenate([self.counts, np.zeros(n % 2, np.int64)])
        pairs = padded.reshape(-1, 2).sum(axis=1)
        self.counts = np.concatenate([pairs, np.zeros(n - len(pairs), np.int64)])
        self.bin_width *= 2.0

    def merge(self, other: Histogram) -> Histogram:
        """Sum two histograms; the finer one is coarsened to the other's grid first (lossless)."""
        if self.bin_width == 0.0 or other.bin_width == 0.0:
            base, extra = (other, self) if self.bin_width == 0.0 else (self, other)
            out = base.copy()
            if out.bin_width == 0.0:
                out.pending_zeros += extra.pending_zeros
            else:
                out.counts[0] += extra.pending_zeros
            return out
        if len(self.counts) != len(other.counts):
            raise ValueError(f"cannot merge histograms of {len(self.counts)} and "
                             f"{len(other.counts)} bins; use the same num_bins")
        fine, coarse = (self.copy(), other) if self.bin_width <= other.bin_width \
            else (other.copy(), self)
        while fine.bin_width < coarse.bin_width * (1 - 1e-12):
            fine._coarsen()
        if not math.isclose(fine.bin_width, coarse.bin_width, rel_tol=1e-12):
            raise ValueError(f"cannot merge histograms with bin widths {self.bin_width} and "
                             f"{other.bin_width}: not on the same power-of-two grid")
        return Histogram(self.num_bins, coarse.bin_width, fine.counts + coarse.counts, 0)

    def copy(self) -> Histogram:
        return Histogram(self.num_bins, self.bin_width, self.counts.copy(), self.pending_zeros)

    def finalized(self) -> tuple[np.ndarray, float]:
        """(counts, width) ready for the algorithms; an all-zero tensor is one bin of width 0.

        The empty bins above the largest value are dropped: the algorithms then see bins up
        to max|x| only, as with a first-batch grid (entropy's and mse's candidate thresholds
        never pass the max), and the result is still a function of the data alone."""
        if self.bin_width == 0.0:
            return np.array([self.pending_zeros], np.int64), 0.0
        nz = np.flatnonzero(self.counts)
        return self.counts[: int(nz[-1]) + 1 if len(nz) else 1], self.bin_width

