"""The statistics kernels: what one batch of one activation adds to its accumulators.

`observe` (min, max, per-channel sums and the |x| histogram) and `observe_relu` (the same for
x and for y = Relu/ReLU6(x), from x alone; ptq.graph.derived) run the numba kernels of
ptq/numba_kernels.py when numba is installed (`pip install "ptq[fast]"`), and separate numpy
passes otherwise, with identical counts, widths and min/max (tests/test_kernels.py,
tests/test_derived.py). Every bin index is floor(float32(|x|) * float32(1 / w)), truncated
like a C cast. Measured on a 2-core CPU, EfficientNet-Lite0's activations, cold in cache as
they come out of ONNX Runtime: numpy passes 3.1 ns a value, numba 1.4-1.9 ns; a Relu pair
2.4-3.4 ns per x value for both tensors.

numba loads in the background (`warm_up`, called when `calibrate` starts; 0.6 s from numba's
on-disk cache) and the host statistics pass waits for it; other callers use numpy until it is
ready. `PTQ_KERNEL=numpy` forces numpy
(to compare, or where numba misbehaves). `bin_counts` is the histogram-only kernel the
numpy path and the GPU path (ptq/cuda_stats.py) share.
"""
from __future__ import annotations

import logging
import math
import os
import struct
import threading
from dataclasses import dataclass
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


def _compile_numba() -> tuple[Callable, Callable, Callable, Callable] | None:
    """The kernels of ptq/numba_kernels.py, or None without numba."""
    try:
        from ptq import numba_kernels as nk
    except ImportError:
        return None
    return nk.count4, nk.observe, nk.observe_relu, nk.mse_sweep


_NUMBA: Callable | None = None
_OBSERVE: Callable | None = None
_OBSERVE_RELU: Callable | None = None
_MSE: Callable | None = None
_READY = threading.Event()
_STARTED = threading.Lock()
_started = False


def warm_up() -> None:
    """Start loading the numba kernels in the background (0.6-2.5 s even from numba's disk
    cache: LLVM start-up). Until they are ready every kernel here runs its numpy path, with
    identical results; the host statistics pass waits for them (`kernel_name(wait=True)`)."""
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
    global _NUMBA, _OBSERVE, _OBSERVE_RELU, _MSE
    try:
        kernels = _compile_numba()
        if kernels is not None:
            count4, fused, relu, sweep = kernels
            count4(np.zeros(8, np.float32), np.float32(1.0), np.zeros(2, np.int64))  # load now
            x = np.zeros(8, np.float32)
            cast = np.zeros(1, np.int32)
            fused(x, x.view(np.int32), 8, 1, 1, np.zeros((1, 2), np.int64), np.zeros(1),
                  np.zeros(2), np.zeros(1), cast, cast.view(np.float32))
            relu(x, x.view(np.int32), 8, 1, 1, np.float32(6.0), np.zeros((3, 2), np.int64),
                 np.zeros(3), np.zeros(2), np.zeros(1), np.zeros(1), cast, cast.view(np.float32))
            one = np.ones(1)
            sweep(one, one, one, 1.0, 127.0, np.zeros(1))
            _NUMBA, _OBSERVE, _OBSERVE_RELU, _MSE = count4, fused, relu, sweep
    except Exception as exc:  # a broken numba install must not stop calibration
        log.warning("numba histogram kernel unavailable (%s); using numpy", exc)
    finally:
        _READY.set()


def kernel_name(wait: bool = True) -> str:
    """'numba' or 'numpy': the kernels in use now (wait: once loading is over)."""
    if wait:
        warm_up()
        _READY.wait()
    return "numba" if _READY.is_set() and _NUMBA is not None else "numpy"


def mse_sweep() -> Callable | None:
    """The numba MSE candidate sweep once loaded (ptq.calibrators.mse), else None."""
    return _MSE if _READY.is_set() else None


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
    k = int(key)
    if k < 0:
        k ^= 0x7FFFFFFF
    return struct.unpack("<f", struct.pack("<i", k))[0]


def _layout(x: np.ndarray, lanes: int = 1) -> tuple[np.ndarray, int, int]:
    """The flat array, values per plane, planes per sample: (n, c) planes, or with lanes > 1
    (ONNX Runtime's NCHWc blocks, ptq.graph.nchwc) planes of `lanes` interleaved channels."""
    if x.ndim < 2:
        return x.reshape(-1), x.size, 1
    n_c = x.shape[1] // lanes
    return x.reshape(-1), x.size // (x.shape[0] * n_c), n_c


def _channel_sums(x: np.ndarray, lanes: int = 1) -> np.ndarray:
    """numpy's float64 per-channel sums, in either layout."""
    if lanes == 1:
        return x.reshape(x.shape[0], x.shape[1], -1).sum(axis=(0, 2), dtype=np.float64)
    return x.reshape(x.shape[0], x.shape[1] // lanes, -1, lanes).sum(
        axis=(0, 2), dtype=np.float64).reshape(-1)


def _fast(x: np.ndarray, *hists: Any) -> bool:
    """The numba kernels take float32 C-contiguous batches and power-of-two bin counts (their
    local grids must nest in the histogram's); small tensors are not worth a call."""
    nb = hists[0].num_bins
    return (_READY.is_set() and _OBSERVE is not None and x.dtype == np.float32
            and x.flags.c_contiguous and 4096 <= x.size < 2**31 and not nb & (nb - 1)
            and all(h.num_bins == nb for h in hists))


@dataclass
class _Local:
    """What the numba kernel counted over one batch, not yet added: counts on the kernel's
    own power-of-two grids (1 row, or 3 for a Relu pair: P, N, A), their widths, the min/max
    keys and the per-channel sums (of x, and of y for a pair)."""

    counts: np.ndarray
    widths: np.ndarray
    keys: np.ndarray
    sums: np.ndarray | None
    sums_y: np.ndarray | None = None


def _run_kernel(x: np.ndarray, num_bins: int, sums: bool, lanes: int,
                top: float | None = None) -> _Local | None:
    """The numba kernel over x (which `_fast` accepted); None when the numpy path must take
    the batch instead (a NaN/Inf, a grid finer than float32 can scale to). `top`: a Relu pair."""
    flat, plane, n_c = _layout(x, lanes)
    rows = 1 if top is None else 3
    counts, widths, keys, cast = np.zeros((rows, num_bins), np.int64), np.zeros(rows), \
        np.zeros(2), np.zeros(1, np.int32)
    csx = np.zeros(n_c * lanes if sums else 0)
    csy = None
    if top is None:
        code = _OBSERVE(flat, flat.view(np.int32), plane, n_c, lanes, counts, widths, keys, csx,
                        cast, cast.view(np.float32))
    else:
        csy = np.zeros_like(csx)
        code = _OBSERVE_RELU(flat, flat.view(np.int32), plane, n_c, lanes, np.float32(top),
                             counts, widths, keys, csx, csy, cast, cast.view(np.float32))
    if code != 0:
        return None
    return _Local(counts, widths, keys, csx if sums else None, csy if sums else None)


def observe(x: np.ndarray, hist: Any, channel_sum: np.ndarray | None,
            scratch: Scratch | None = None, lanes: int = 1) -> tuple[float, float]:
    """One batch of one activation into its accumulators; returns the batch's (min, max).

    Adds |x| to `hist` (a ptq.histogram.Histogram, whose grid grows as `Histogram.update`
    grows it) and the per-channel (axis 1) sums of x, in float64, to `channel_sum` (None:
    no sums). With numba this is one pass over the activation, block by block: sums and
    min/max, then the counts while the block is still in cache (on a 2-core AVX-512 CPU,
    over EfficientNet-Lite0's activations: ~2 ns a value, against 3.1 ns for the four
    numpy/numba passes it replaces). A NaN or Inf makes the returned min or max non-finite,
    and nothing is added. `lanes` > 1: x is [N, C, H, W] in NCHWc blocks of `lanes` channels
    (ptq.graph.nchwc); only the sums depend on the layout.
    """
    part = _run_kernel(x, hist.num_bins, channel_sum is not None, lanes) if _fast(x, hist) else None
    if part is None:
        return _observe_numpy(x, hist, channel_sum, scratch, lanes)
    lo, hi = _key_value(part.keys[0]), _key_value(part.keys[1])
    if channel_sum is not None:
        channel_sum += part.sums
    if max(-lo, hi) > 0:
        hist.grow(max(-lo, hi))
    _add(hist, [(part.counts[0], part.widths[0])])
    return lo, hi


def observe_relu(x: np.ndarray, top: float, hx: Any, hy: Any, sums_x: np.ndarray | None,
                 sums_y: np.ndarray | None, scratch: Scratch | None = None, lanes: int = 1
                 ) -> tuple[tuple[float, float], tuple[float, float]]:
    """`observe` of x and of y = min(max(x, 0), top) (Relu, ReLU6) from one pass over x.

    Returns both (min, max). Both histograms and sums come out as `observe` of x and of y
    would make them (tests/test_derived.py): every local count is on a power-of-two grid
    at least as fine as the one it is added to (`Histogram.add_counts`). The numpy fallback
    computes y and observes both."""
    part = None
    if _fast(x, hx, hy) and (sums_x is None) == (sums_y is None):
        part = _run_kernel(x, hx.num_bins, sums_x is not None, lanes, top=top)
    if part is None:
        return _observe_relu_numpy(x, top, hx, hy, sums_x, sums_y, scratch, lanes)
    lo, hi = _key_value(part.keys[0]), _key_value(part.keys[1])
    if sums_x is not None and sums_y is not None:
        sums_x += part.sums
        sums_y += part.sums_y
    p, n, a = part.counts
    if max(-lo, hi) > 0:
        hx.grow(max(-lo, hi))
    _add(hx, [(p, part.widths[0]), (n, part.widths[1]), (a, part.widths[2])])
    f32_top, f32_zero = np.float32(top), np.float32(0)
    y_lo = float(min(max(np.float32(lo), f32_zero), f32_top))
    y_hi = float(min(max(np.float32(hi), f32_zero), f32_top))
    if y_hi > 0:
        hy.grow(y_hi)
    _add(hy, [(p, part.widths[0])])
    if hy.bin_width:  # y's zeros from x's negatives, y's tops from x's values >= top
        hy.counts[0] += int(n.sum())
        if a.any():
            hy.counts[_bin_of(f32_top, hy.bin_width, len(hy.counts))] += int(a.sum())
    else:
        hy.pending_zeros += int(n.sum())
    return (lo, hi), (y_lo, y_hi)


def _bin_of(value: np.float32, width: float, num_bins: int) -> int:
    """The bin `numpy_bin_counts` puts one value in (float64 below float32's reach)."""
    inv = 1.0 / width
    if inv < _F32_MAX:
        return min(int(np.float32(abs(value)) * np.float32(inv)), num_bins - 1)
    return min(int(abs(float(value)) * inv), num_bins - 1)


def _add(hist: Any, parts: list[tuple[np.ndarray, float]]) -> None:
    """Local counts into a histogram grown to cover them; all zeros while it has no width."""
    if hist.bin_width == 0.0:
        hist.pending_zeros += int(sum(c[0] for c, _ in parts))
        return
    for counts, width in parts:
        hist.add_counts(counts, width)


def _observe_numpy(x: np.ndarray, hist: Any, channel_sum: np.ndarray | None,
                   scratch: Scratch | None, lanes: int = 1) -> tuple[float, float]:
    lo, hi = float(x.min()), float(x.max())
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return lo, hi
    hist.update(x, max(-lo, hi), scratch)
    if channel_sum is not None:
        channel_sum += _channel_sums(x, lanes)
    return lo, hi



def _observe_relu_numpy(x: np.ndarray, top: float, hx: Any, hy: Any, sums_x: np.ndarray | None,
                        sums_y: np.ndarray | None, scratch: Scratch | None, lanes: int = 1
                        ) -> tuple[tuple[float, float], tuple[float, float]]:
    first = _observe_numpy(x, hx, sums_x, scratch, lanes)
    if not all(math.isfinite(v) for v in first):
        return first, (0.0, 0.0)
    y = np.minimum(np.maximum(x, x.dtype.type(0)), x.dtype.type(top))
    return first, _observe_numpy(y, hy, sums_y, scratch, lanes)
