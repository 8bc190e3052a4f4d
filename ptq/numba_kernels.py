"""The numba kernels of ptq.kernels, compiled ahead in numba's on-disk cache.

Module-level functions (not closures) so that numba's cache can key them: nested ones were
compiled afresh by every process (3-4 s of CPU on a 2-core machine). Imported only by
ptq.kernels' background loader, and only when numba is installed (`pip install "ptq[fast]"`).
"""
from __future__ import annotations

import math

import numba
import numpy as np

_F32_MAX = float(np.finfo(np.float32).max)
CHUNK = 1024  # values whose bin indices are computed together (a 4 KB buffer in L1)
BLOCK = 16384  # values (whole planes) between grid checks: 64 KB, in L2 for pass B


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


@numba.njit(nogil=True, cache=True, boundscheck=False, inline="always")
def _scatter4(sub, idx, n):  # pragma: no cover - compiled
    """Counts of idx[:n] into four interleaved sub-histograms (see count4)."""
    m = n // 4 * 4
    for j in range(0, m, 4):
        sub[0, idx[j]] += 1
        sub[1, idx[j + 1]] += 1
        sub[2, idx[j + 2]] += 1
        sub[3, idx[j + 3]] += 1
    for j in range(m, n):
        sub[0, idx[j]] += 1


@numba.njit(nogil=True, cache=True, boundscheck=False, inline="always")
def _flush(counts, sub):  # pragma: no cover - compiled
    """The sub-histograms into counts: row r's bin j is column r * nb + j of sub."""
    rows, nb = counts.shape
    for k4 in range(4):
        for r in range(rows):
            for j in range(nb):
                counts[r, j] += sub[k4, r * nb + j]


@numba.njit(nogil=True, cache=True, boundscheck=False, inline="always")
def _grow(counts, sub, r, width, amax):  # pragma: no cover - compiled
    """Histogram.grow on row r of counts (after flushing row r of the sub-counts)."""
    nb = counts.shape[1]
    if width == 0.0:
        width = math.ldexp(1.0, math.frexp(amax)[1]) / nb  # grid_top(amax) / nb
    while amax >= nb * width:
        for k4 in range(4):
            for j in range(nb):
                counts[r, j] += sub[k4, r * nb + j]
                sub[k4, r * nb + j] = 0
        half = (nb + 1) // 2
        for j in range(half):
            counts[r, j] = counts[r, 2 * j] + (counts[r, 2 * j + 1] if 2 * j + 1 < nb else 0)
        for j in range(half, nb):
            counts[r, j] = 0
        width *= 2.0
    return width


@numba.njit(nogil=True, cache=True, boundscheck=False, inline="always")
def _as_float(cast_i, cast_f, key_bits):  # pragma: no cover - compiled
    cast_i[0] = key_bits  # cast_f is the same 4 bytes, as float32
    return np.float64(cast_f[0])


# Pass A of one plane, in functions of their own: inlined into the block loop, these
# reductions stayed scalar (1.5-2.9 ns a value on EfficientNet-Lite0's activations, 2-core
# AVX-512 CPU); on their own they vectorise (0.45-0.9 ns, memory-bound). Keys: the float
# bits made order-preserving integers (exact min/max, NaN-proof, no fast-math needed).
@numba.njit(nogil=True, cache=True, boundscheck=False, fastmath={"reassoc"})
def _plane_pass(xs, bs):  # pragma: no cover - compiled
    """(sum, min key, max key) of one plane."""
    lo = np.int32(2147483647)
    hi = np.int32(-2147483648)
    total = 0.0
    for i in range(xs.shape[0]):
        total += xs[i]
        b = bs[i]
        k = b ^ ((b >> np.int32(31)) & np.int32(0x7FFFFFFF))
        lo = k if k < lo else lo
        hi = k if k > hi else hi
    return total, lo, hi


@numba.njit(nogil=True, cache=True, boundscheck=False, fastmath={"reassoc"})
def _relu_plane_pass(xs, bs, top, top_bits):  # pragma: no cover - compiled
    """(sum of x, sum of min(max(x, 0), top), min key, max key, largest bits below top's)."""
    zero = np.float32(0.0)
    lo = np.int32(2147483647)
    hi = np.int32(-2147483648)
    pmax = np.int32(0)
    tx = 0.0
    ty = 0.0
    for i in range(xs.shape[0]):
        v = xs[i]
        tx += v
        y = v if v > zero else zero
        ty += y if y < top else top
        b = bs[i]
        k = b ^ ((b >> np.int32(31)) & np.int32(0x7FFFFFFF))
        lo = k if k < lo else lo
        hi = k if k > hi else hi
        m = b if b < top_bits else np.int32(0)
        pmax = m if m > pmax else pmax
    return tx, ty, lo, hi, pmax


@numba.njit(nogil=True, cache=True, boundscheck=False, fastmath={"reassoc"})
def _lane_sums(xs, lanes, csum, base):  # pragma: no cover - compiled
    """Per-channel sums of one plane of NCHWc blocks ([H, W, lanes]), added to
    csum[base:base + lanes]."""
    rows = xs.reshape(xs.shape[0] // lanes, lanes)  # row by row: 0.23 ns a value, 0.57 strided
    acc = np.zeros(lanes)
    for h in range(rows.shape[0]):
        row = rows[h]
        for j in range(lanes):
            acc[j] += row[j]
    for j in range(lanes):
        csum[base + j] += acc[j]


@numba.njit(nogil=True, cache=True, boundscheck=False, fastmath={"reassoc"})
def _relu_lane_sums(xs, lanes, top, csx, csy, base):  # pragma: no cover - compiled
    """_lane_sums of x and of min(max(x, 0), top)."""
    zero = np.float32(0.0)
    rows = xs.reshape(xs.shape[0] // lanes, lanes)
    acc_x = np.zeros(lanes)
    acc_y = np.zeros(lanes)
    for h in range(rows.shape[0]):
        row = rows[h]
        for j in range(lanes):
            v = row[j]
            acc_x[j] += v
            y = v if v > zero else zero
            acc_y[j] += y if y < top else top
    for j in range(lanes):
        csx[base + j] += acc_x[j]
        csy[base + j] += acc_y[j]


# Blocks of whole (n, c) planes of >= BLOCK values: pass A (per-plane sums, min/max on
# order-preserving integer keys of the float bits: exact, NaN-proof and vectorisable
# without fast-math; reassoc vectorises the sums), one grid check, then pass B (bin
# indices of a chunk, vectorised, then the counts) while the block is still in cache.
@numba.njit(nogil=True, cache=True, boundscheck=False, fastmath={"reassoc"})
def observe(x, bits, plane, n_c, lanes, counts, widths, state, csum, cast_i,
            cast_f):  # pragma: no cover - compiled
    """x, bits: the flat float32 activation and its int32 view, in (n, c) planes of `plane`
    values (lanes > 1: planes of NCHWc blocks, `lanes` channels each, csum per channel);
    counts (1, nb) and widths[0]: local, returned; state: [lo, hi] keys."""
    planes = x.shape[0] // plane
    nb = counts.shape[1]
    last = np.int32(nb - 1)
    sub = np.zeros((4, nb), np.int32)  # int32: 32 KB, in L1 (callers send < 2^31 values)
    idx = np.empty(CHUNK, np.int32)
    lo_all = np.int32(2147483647)
    hi_all = np.int32(-2147483648)
    sums = csum.shape[0] > 0
    step = max(1, BLOCK // max(1, plane))
    for p0 in range(0, planes, step):
        p1 = min(planes, p0 + step)
        lo = np.int32(2147483647)
        hi = np.int32(-2147483648)
        for p in range(p0, p1):
            xs = x[p * plane:(p + 1) * plane]  # slices: zero-based loops, which vectorise
            bs = bits[p * plane:(p + 1) * plane]
            total, plane_lo, plane_hi = _plane_pass(xs, bs)
            lo = min(lo, plane_lo)
            hi = max(hi, plane_hi)
            if sums and lanes == 1:
                csum[p % n_c] += total
            elif sums:
                _lane_sums(xs, lanes, csum, (p % n_c) * lanes)
        lo_all = min(lo_all, lo)
        hi_all = max(hi_all, hi)
        bottom = (lo ^ np.int32(0x7FFFFFFF)) & np.int32(0x7FFFFFFF) if lo < 0 else np.int32(0)
        amax_bits = max(hi if hi > 0 else np.int32(0), bottom)
        if amax_bits >= np.int32(0x7F800000):
            return 1  # NaN or Inf: the caller reports it
        amax = _as_float(cast_i, cast_f, amax_bits)
        if amax == 0.0:  # zeros only: bin 0 of any grid
            sub[0, 0] += (p1 - p0) * plane
            continue
        widths[0] = _grow(counts, sub, 0, widths[0], amax)
        inv64 = 1.0 / widths[0]
        if inv64 >= _F32_MAX:
            return 2  # widths below ~3e-39: the caller counts in float64
        inv = np.float32(inv64)
        end = p1 * plane
        for start in range(p0 * plane, end, CHUNK):
            xs = x[start:min(end, start + CHUNK)]
            n = xs.shape[0]
            for i in range(n):
                idx[i] = min(np.int32(abs(xs[i]) * inv), last)
            _scatter4(sub, idx, n)
    _flush(counts, sub)
    state[0] = lo_all
    state[1] = hi_all
    return 0


# y = min(max(x, 0), top) from x's pass: one scatter per value into one of three local
# histograms, each on its own power-of-two grid: P = 0 <= v < top (x's and y's values
# alike), N = v < 0 (|v|, x only; y gets 0), A = v >= top (x only; y gets top).
@numba.njit(nogil=True, cache=True, boundscheck=False, fastmath={"reassoc"})
def observe_relu(x, bits, plane, n_c, lanes, top, counts, widths, state, csx, csy, cast_i,
                 cast_f):  # pragma: no cover - compiled
    planes = x.shape[0] // plane
    nb = counts.shape[1]
    last = np.int32(nb - 1)
    sub = np.zeros((4, 3 * nb), np.int32)
    idx = np.empty(CHUNK, np.int32)
    inv = np.zeros(3, np.float32)
    amax = np.zeros(3)
    cast_f[0] = top
    top_bits = cast_i[0]
    zero = np.float32(0.0)
    lo_all = np.int32(2147483647)
    hi_all = np.int32(-2147483648)
    sums = csx.shape[0] > 0
    step = max(1, BLOCK // max(1, plane))
    for p0 in range(0, planes, step):
        p1 = min(planes, p0 + step)
        lo = np.int32(2147483647)
        hi = np.int32(-2147483648)
        pmax = np.int32(0)
        for p in range(p0, p1):
            xs = x[p * plane:(p + 1) * plane]
            bs = bits[p * plane:(p + 1) * plane]
            tx, ty, plane_lo, plane_hi, plane_pmax = _relu_plane_pass(xs, bs, top, top_bits)
            lo = min(lo, plane_lo)
            hi = max(hi, plane_hi)
            pmax = max(pmax, plane_pmax)
            if sums and lanes == 1:
                csx[p % n_c] += tx
                csy[p % n_c] += ty
            elif sums:
                _relu_lane_sums(xs, lanes, top, csx, csy, (p % n_c) * lanes)
        lo_all = min(lo_all, lo)
        hi_all = max(hi_all, hi)
        bottom = (lo ^ np.int32(0x7FFFFFFF)) & np.int32(0x7FFFFFFF) if lo < 0 else np.int32(0)
        if max(hi, bottom) >= np.int32(0x7F800000):
            return 1  # NaN or Inf
        amax[0] = _as_float(cast_i, cast_f, pmax)
        amax[1] = _as_float(cast_i, cast_f, bottom)
        amax[2] = _as_float(cast_i, cast_f, hi if hi >= top_bits else np.int32(0))
        for r in range(3):
            if amax[r] > 0.0:
                widths[r] = _grow(counts, sub, r, widths[r], amax[r])
                inv64 = 1.0 / widths[r]
                if inv64 >= _F32_MAX:
                    return 2
                inv[r] = np.float32(inv64)
        ip, inn, ia = inv[0], inv[1], inv[2]
        end = p1 * plane
        for start in range(p0 * plane, end, CHUNK):
            xs = x[start:min(end, start + CHUNK)]
            n = xs.shape[0]
            for i in range(n):  # region and index first (vectorised), then the counts
                v = xs[i]
                scale = ip if v >= zero else inn
                scale = ia if v >= top else scale
                off = (np.int32(0) if v >= zero else np.int32(nb)) + \
                    (np.int32(2 * nb) if v >= top else np.int32(0))
                idx[i] = off + min(np.int32(abs(v) * scale), last)
            _scatter4(sub, idx, n)
    _flush(counts, sub)
    state[0] = lo_all
    state[1] = hi_all
    return 0


@numba.njit(nogil=True, cache=True, boundscheck=False)  # no fast-math: q must round as published
def mse_sweep(centers, weights, amaxes, num_centers, max_bound, errors):  # pragma: no cover
    """ptq.calibrators.mse's candidate sweep in one loop: the same float64 arithmetic per bin
    (round half to even, clip, rescale), summed in four partial sums (near-ties are then
    recomputed by the caller with the published arithmetic)."""
    n = centers.shape[0]
    m = n // 4 * 4
    for j in range(amaxes.shape[0]):
        a = amaxes[j]
        up = max_bound / a
        down = a / max_bound
        part = np.zeros(4)
        for i in range(0, m, 4):
            for k in range(4):
                c = centers[i + k]
                d = min(max(np.rint(c * up), -max_bound), max_bound) * down - c
                part[k] += d * d * weights[i + k]
        total = part[0] + part[1] + part[2] + part[3]
        for i in range(m, n):
            c = centers[i]
            d = min(max(np.rint(c * up), -max_bound), max_bound) * down - c
            total += d * d * weights[i]
        errors[j] = total / num_centers
