"""Per-batch counting kernels of the |x| histogram: numba when installed, numpy otherwise.

Both compute the same index, floor(float32(|x|) * float32(1 / w)), truncated like a C cast,
so they give the same counts bin for bin (tests/test_kernels.py). The numba kernel does
the whole thing in one pass over the activation (abs, scale, index, count); the numpy
one needs four passes and a temporary index array. Measured on EfficientNet-Lite0-sized
activations (26 M float32 values, half of them zero after ReLU, 2-core CPU):
numpy 5.3 ns a value, numba 1.3 ns. numba comes with `pip install "ptq[fast]"`.

numba loads in the background (`warm_up`, called by the statistics pass); batches counted
before it is ready use numpy. `PTQ_KERNEL=numpy` forces numpy (to compare, or where numba
misbehaves).
"""
from __future__ import annotations

import logging
import math
import os
import threading
from typing import Any, Callable

import numpy as np

log = logging.getLogger(__name__)

_F32_MAX = float(np.finfo(np.float32).max)


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


def numpy_bin_counts(x: np.ndarray, bin_width: float, num_bins: int,
                     scratch: Scratch | None = None) -> np.ndarray:
    """The numpy kernel (see `bin_counts`); bincount is ~5x faster than np.histogram here."""
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


def _compile_numba() -> tuple[Callable, Callable] | None:
    """The one-pass kernels, or None without numba. Four interleaved sub-histograms: runs of
    equal values (the zeros after a ReLU) would otherwise serialise on one counter
    (measured 1.55 -> 1.29 ns a value)."""
    try:
        import numba
    except ImportError:
        return None

    @numba.njit(nogil=True, cache=True, boundscheck=False)
    def count4(x, inv, counts):  # pragma: no cover - compiled
        last = counts.shape[0] - 1
        sub = np.zeros((4, counts.shape[0]), np.int64)
        n = x.shape[0]
        m = n // 4 * 4
        for i in range(0, m, 4):
            sub[0, min(int(abs(x[i]) * inv), last)] += 1
            sub[1, min(int(abs(x[i + 1]) * inv), last)] += 1
            sub[2, min(int(abs(x[i + 2]) * inv), last)] += 1
            sub[3, min(int(abs(x[i + 3]) * inv), last)] += 1
        for i in range(m, n):
            sub[0, min(int(abs(x[i]) * inv), last)] += 1
        for k in range(4):
            for b in range(counts.shape[0]):
                counts[b] += sub[k, b]

    # reassoc lets the per-plane sum vectorise; min/max are taken on order-preserving integer
    # keys of the float bits (exact, NaN-proof, and vectorisable without fast-math).
    @numba.njit(nogil=True, cache=True, boundscheck=False, fastmath={"reassoc", "contract"})
    def observe(x, bits, counts, state, csum, cast_i, cast_f):  # pragma: no cover - compiled
        n_s, n_c, size = x.shape
        nb = counts.shape[0]
        last = nb - 1
        sub = np.zeros((4, nb), np.int64)
        width = state[0]
        pending = 0
        lo_all = np.int32(2147483647)
        hi_all = np.int32(-2147483648)
        sums = csum.shape[0] > 0
        for s in range(n_s):
            for c in range(n_c):
                total = 0.0
                lo = np.int32(2147483647)
                hi = np.int32(-2147483648)
                for i in range(size):
                    total += x[s, c, i]
                    b = bits[s, c, i]
                    k = b ^ ((b >> 31) & np.int32(0x7FFFFFFF))
                    lo = min(lo, k)
                    hi = max(hi, k)
                if sums:
                    csum[c] += total
                lo_all = min(lo_all, lo)
                hi_all = max(hi_all, hi)
                # the plane's max|x| as float bits: the larger of the top key and |bottom|
                top = hi if hi > 0 else np.int32(0)
                bottom = (lo ^ np.int32(0x7FFFFFFF)) & np.int32(0x7FFFFFFF) if lo < 0 else np.int32(0)
                amax_bits = max(top, bottom)
                if amax_bits >= np.int32(0x7F800000):  # NaN or Inf: the caller reports it
                    return 1
                cast_i[0] = amax_bits  # cast_f is the same 4 bytes as float32
                amax = np.float64(cast_f[0])
                if width == 0.0:
                    if amax == 0.0:
                        pending += size
                        continue
                    width = math.ldexp(1.0, math.frexp(amax)[1]) / nb  # grid_top(amax) / nb
                    counts[0] += np.int64(state[1]) + pending
                    state[1] = 0.0
                    pending = 0
                while amax >= nb * width:  # Histogram._coarsen, after flushing the sub-counts
                    for k4 in range(4):
                        for j in range(nb):
                            counts[j] += sub[k4, j]
                            sub[k4, j] = 0
                    half = (nb + 1) // 2
                    for j in range(half):
                        counts[j] = counts[2 * j] + (counts[2 * j + 1] if 2 * j + 1 < nb else 0)
                    for j in range(half, nb):
                        counts[j] = 0
                    width *= 2.0
                inv64 = 1.0 / width
                if inv64 < _F32_MAX:
                    inv = np.float32(inv64)
                    m = size // 4 * 4
                    for i in range(0, m, 4):
                        sub[0, min(int(abs(x[s, c, i]) * inv), last)] += 1
                        sub[1, min(int(abs(x[s, c, i + 1]) * inv), last)] += 1
                        sub[2, min(int(abs(x[s, c, i + 2]) * inv), last)] += 1
                        sub[3, min(int(abs(x[s, c, i + 3]) * inv), last)] += 1
                    for i in range(m, size):
                        sub[0, min(int(abs(x[s, c, i]) * inv), last)] += 1
                else:  # widths below ~3e-39: as numpy_bin_counts, in float64
                    for i in range(size):
                        sub[0, min(int(abs(np.float64(x[s, c, i])) * inv64), last)] += 1
        for k4 in range(4):
            for j in range(nb):
                counts[j] += sub[k4, j]
        state[0] = width
        state[1] += pending
        state[2] = min(state[2], lo_all)
        state[3] = max(state[3], hi_all)
        return 0

    return count4, observe


_NUMBA: Callable | None = None
_OBSERVE: Callable | None = None
_READY = threading.Event()
_STARTED = threading.Lock()
_started = False


def warm_up() -> None:
    """Start loading the numba kernel in the background. Loading costs ~1.5 s of CPU even
    from numba's on-disk cache (LLVM start-up), more than it saves on a small calibration
    set: until it is ready `bin_counts` counts with numpy, whose counts are identical."""
    global _started
    with _STARTED:
        if _started:
            return
        _started = True
    if os.environ.get("PTQ_KERNEL", "").lower() == "numpy":
        _READY.set()
        return
    threading.Thread(target=_load, name="ptq-numba-load", daemon=True).start()


def _load() -> None:
    global _NUMBA, _OBSERVE
    try:
        kernels = _compile_numba()
        if kernels is not None:
            count4, fused = kernels
            count4(np.zeros(8, np.float32), np.float32(1.0), np.zeros(2, np.int64))  # load now
            x = np.zeros((1, 1, 8), np.float32)
            cast = np.zeros(1, np.int32)
            fused(x, x.view(np.int32), np.zeros(2, np.int64), np.zeros(4), np.zeros(1), cast,
                  cast.view(np.float32))
            _NUMBA, _OBSERVE = count4, fused
    except Exception as exc:  # a broken numba install must not stop calibration
        log.warning("numba histogram kernel unavailable (%s); using numpy", exc)
    finally:
        _READY.set()


def kernel_name(wait: bool = True) -> str:
    """'numba' or 'numpy': the kernel `bin_counts` uses now (wait: once loading is over)."""
    if wait:
        warm_up()
        _READY.wait()
    return "numba" if _READY.is_set() and _NUMBA is not None else "numpy"


def bin_counts(x: np.ndarray, bin_width: float, num_bins: int,
               scratch: Scratch | None = None) -> np.ndarray:
    """Histogram of |x| over [0, num_bins * bin_width]; values at the top go to the last bin.

    The index is floor(|x| / w) computed in float32 (as the activations are). Callers grow
    the bins first so |x| <= top: an index past the end can only be the top edge itself
    (or float rounding at it), so it is folded into the last bin.
    """
    if not isinstance(x, np.ndarray):  # a ptq.cuda_stats.DeviceTensor: counted on its device
        return x.bin_counts(bin_width, num_bins)
    kernel = _NUMBA if _READY.is_set() else None
    inv = 1.0 / bin_width
    if kernel is None or inv >= _F32_MAX or x.size < 4096:
        return numpy_bin_counts(x, bin_width, num_bins, scratch)
    flat = x.reshape(-1)
    if flat.dtype != np.float32 or not flat.flags.c_contiguous:
        flat = np.ascontiguousarray(flat, np.float32)  # float16/64: rounded as numpy's path does
    counts = np.zeros(num_bins, np.int64)
    kernel(flat, np.float32(inv), counts)
    return counts


def _key_value(key: float) -> float:
    """The float32 whose order-preserving integer key (see the numba `observe`) is `key`."""
    k = np.array([int(key)], np.int32)
    k ^= (k >> 31) & np.int32(0x7FFFFFFF)
    return float(k.view(np.float32)[0])


def observe(x: np.ndarray, hist: Any, channel_sum: np.ndarray | None,
            scratch: Scratch | None = None) -> tuple[float, float]:
    """One batch of one activation into its accumulators; returns the batch's (min, max).

    Adds |x| to `hist` (a ptq.histogram.Histogram, its grid grown first as `Histogram.update`
    grows it) and the per-channel (axis 1) sums of x, in float64, to `channel_sum` (None:
    no sums). With numba this is one pass over the activation, plane by plane: the sum and
    the min/max of an (n, c) plane, then its counts while the plane is still in cache (on a
    2-core CPU, EfficientNet-Lite0's activations: 2.05 ns a value, against 3.1 ns for the
    four numpy/numba passes it replaces). A NaN or Inf makes the returned min or max
    non-finite (the accumulators are then partly updated: the caller stops).
    """
    kernel = _OBSERVE if _READY.is_set() else None
    if kernel is None or x.dtype != np.float32 or not x.flags.c_contiguous or x.size < 4096:
        return _observe_numpy(x, hist, channel_sum, scratch)
    x3 = x.reshape(x.shape[0], x.shape[1], -1) if x.ndim >= 2 else x.reshape(1, 1, -1)
    if len(hist.counts) != hist.num_bins:
        hist.counts = np.zeros(hist.num_bins, np.int64)  # an empty histogram: zeros until a width
    state = np.array([hist.bin_width, hist.pending_zeros, 2147483647.0, -2147483648.0])
    cast = np.zeros(1, np.int32)
    sums = channel_sum if channel_sum is not None else np.zeros(0)
    if kernel(x3, x3.view(np.int32), hist.counts, state, sums, cast, cast.view(np.float32)):
        return float(x.min()), float(x.max())  # non-finite: numpy says which (NaN or Inf)
    hist.bin_width, hist.pending_zeros = float(state[0]), int(state[1])
    return _key_value(state[2]), _key_value(state[3])


def _observe_numpy(x: np.ndarray, hist: Any, channel_sum: np.ndarray | None,
                   scratch: Scratch | None) -> tuple[float, float]:
    lo, hi = float(x.min()), float(x.max())
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return lo, hi
    hist.update(x, max(-lo, hi), scratch)
    if channel_sum is not None:
        channel_sum += x.reshape(x.shape[0], x.shape[1], -1).sum(axis=(0, 2), dtype=np.float64)
    return lo, hi
