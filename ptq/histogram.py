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


class Scratch:
    """Reusable work buffers: fresh multi-MB temporaries per tensor cost more in page
    faults than the arithmetic itself (measured ~2.5x on activation-sized arrays)."""

    def __init__(self) -> None:
        self._f = np.empty(0, np.float32)
        self._i = np.empty(0, np.intp)

    def get(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        if n > self._f.size:
            self._f = np.empty(n, np.float32)
            self._i = np.empty(n, np.intp)
        return self._f[:n], self._i[:n]


def bin_counts(x: np.ndarray, bin_width: float, num_bins: int,
               scratch: Scratch | None = None) -> np.ndarray:
    """Histogram of |x| over [0, num_bins * bin_width]; values at the top go to the last bin.

    The index is floor(|x| / w) computed in float32 (as the activations are); bincount
    is ~5x faster than np.histogram here. Callers grow the bins first so |x| <= top:
    an index past the end can only be the top edge itself (or float rounding at it),
    so it is folded into the last bin instead of clipping every element.
    """
    flat, idx = (scratch or Scratch()).get(x.size)
    inv = 1.0 / bin_width
    if inv < _F32_MAX:
        np.abs(x.reshape(-1), out=flat, casting="same_kind" if x.dtype == np.float32 else "unsafe")
        np.multiply(flat, np.float32(inv), out=flat)
        np.copyto(idx, flat, casting="unsafe")
    else:  # widths below ~3e-39 (tiny activations): the float32 product would overflow
        np.copyto(idx, np.abs(x.reshape(-1).astype(np.float64)) * inv, casting="unsafe")
    counts = np.bincount(idx, minlength=num_bins)
    if len(counts) > num_bins:
        counts[num_bins - 1] += counts[num_bins:].sum()
    return counts[:num_bins]
