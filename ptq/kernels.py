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
import os
import threading
from typing import Callable

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


def _compile_numba() -> Callable | None:
    """The one-pass kernel, or None without numba. Four interleaved sub-histograms: runs of
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

    return count4


_NUMBA: Callable | None = None
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
    global _NUMBA
    try:
        kernel = _compile_numba()
        if kernel is not None:
            kernel(np.zeros(8, np.float32), np.float32(1.0), np.zeros(2, np.int64))  # load now
        _NUMBA = kernel
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
