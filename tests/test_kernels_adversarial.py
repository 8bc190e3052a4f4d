"""Adversarial checks of the statistics kernels (written in review): the numba `observe` and
`observe_relu`, their numpy fallbacks and a plain reference (`Histogram.update` of x and of
min(max(x, 0), top)) agree exactly over many batches of edge values: subnormals, bin edges,
values at the Clip's top and its neighbours, -0.0, all-zero then growing batches, tiny and huge
ranges, shapes around the kernels' block and size limits, and bin counts other than 2048
(including non-powers of two, which take the numpy path)."""
from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ptq import kernels
from ptq.histogram import Histogram

pytest.importorskip("numba", reason="the numba kernels need numba (pip install 'ptq[fast]')")


@pytest.fixture(autouse=True, scope="module")
def loaded() -> None:
    if kernels.kernel_name(wait=True) != "numba":
        pytest.skip("PTQ_KERNEL=numpy forces the numpy kernels")


SHAPES = [(4096,), (4097,), (2, 2048), (4097, 1), (1, 5000), (3, 7, 200), (2, 3, 4, 5, 40),
          (1, 1, 16385), (2, 1, 16384), (5000, 1, 1), (1, 2, 3, 700), (16384 * 2 + 1,), (8, 1024),
          (1, 16390), (3, 5461), (17, 3, 97)]


def special(rng: np.random.Generator, n: int, scale_exp: int, top: float) -> np.ndarray:
    """Values at the edges: zeros of both signs, subnormals, powers of two, bin edges, the top
    and its float32 neighbours, on a random scale."""
    kind = rng.integers(0, 10, n)
    base = rng.standard_normal(n) * 2.0 ** scale_exp
    vals = base.copy()
    vals[kind == 0] = 0.0
    vals[kind == 1] = -0.0
    vals[kind == 2] = np.ldexp(rng.integers(1, 2**10, (kind == 2).sum()), rng.integers(-149, -130, (kind == 2).sum()))  # subnormal-ish
    vals[kind == 3] = np.ldexp(1.0, rng.integers(scale_exp - 20, scale_exp + 3, (kind == 3).sum()))  # power-of-two edges
    vals[kind == 4] = np.ldexp(rng.integers(0, 4096, (kind == 4).sum()), scale_exp - 12)  # bin edges
    if math.isfinite(top):
        vals[kind == 5] = top
        vals[kind == 6] = np.nextafter(np.float32(top), np.float32(0))
        with np.errstate(over="ignore"):  # FLT_MAX's neighbour is inf: clipped below
            vals[kind == 7] = np.nextafter(np.float32(top), np.float32(np.inf))
    sign = np.where(rng.random(n) < 0.5, -1.0, 1.0)
    vals[kind >= 2] *= np.where(kind[kind >= 2] >= 5, 1.0, sign[kind >= 2])
    return np.clip(vals, -3.4e38, 3.4e38).astype(np.float32)


def make_batches(seed: int, shape: tuple[int, ...], nbatch: int, mode: str, top: float) -> list:
    rng = np.random.default_rng(seed)
    out = []
    for b in range(nbatch):
        sh = shape if rng.random() < 0.7 else (max(1, shape[0] + int(rng.integers(-1, 3))),) + shape[1:]
        n = int(np.prod(sh))
        if mode == "zeros_first" and b < 2:
            x = np.zeros(n, np.float32)
            x[rng.random(n) < 0.3] = -0.0
        elif mode == "negative":
            x = -np.abs(special(rng, n, int(rng.integers(-130, 120)), top))
        elif mode == "growing":
            x = (rng.standard_normal(n) * 2.0 ** (b * 3 - 10)).astype(np.float32)
        elif mode == "tiny":
            x = special(rng, n, int(rng.integers(-149, -110)), top)
        elif mode == "huge":
            x = special(rng, n, int(rng.integers(100, 127)), top)
        else:
            x = special(rng, n, int(rng.integers(-20, 20)), top)
        out.append(x.reshape(sh))
    return out


def same_h(a: Histogram, b: Histogram, what: str) -> None:
    assert a.bin_width == b.bin_width, (what, a.bin_width, b.bin_width)
    assert a.pending_zeros == b.pending_zeros, (what, a.pending_zeros, b.pending_zeros)
    assert np.array_equal(a.counts, b.counts), (what, np.flatnonzero(a.counts != b.counts)[:10],
                                              a.counts.sum(), b.counts.sum())


def sums_of(x: np.ndarray) -> np.ndarray | None:
    if x.ndim < 2:
        return None
    return x.reshape(x.shape[0], x.shape[1], -1).sum(axis=(0, 2), dtype=np.float64)

TOPS = [math.inf, 6.0, 1.0, 1e-40, 1e-45, 2.0**-126, 3.4e38, float(np.finfo(np.float32).max),
        0.5 + 2**-20, 1e30, 1e-30, 7.0]
NBS = [2048, 8, 16, 4096, 1, 2, 1000, 3]
MODES = ["mixed", "zeros_first", "negative", "growing", "tiny", "huge"]


@settings(max_examples=500, deadline=None, suppress_health_check=list(HealthCheck))
@given(seed=st.integers(0, 2**32 - 1), shape=st.sampled_from(SHAPES), nbatch=st.integers(1, 5),
       mode=st.sampled_from(MODES), top=st.sampled_from(TOPS), nb=st.sampled_from(NBS))
def test_observe_and_relu(seed: int, shape: tuple[int, ...], nbatch: int, mode: str, top: float,
                          nb: int) -> None:
    # channel sums: float64 sums of the same float32 values in another order (rtol 1e-12)
    batches = make_batches(seed, shape, nbatch, mode, top)
    ftop = float(np.float32(top))
    # plain observe
    h_fast, h_np, h_ref = Histogram(nb), Histogram(nb), Histogram(nb)
    # relu pair
    hx_f, hy_f, hx_n, hy_n, hy_ref = (Histogram(nb) for _ in range(5))
    for x in batches:
        c = x.shape[1] if x.ndim >= 2 else 0
        s_f = np.zeros(c) if c else None
        s_n = np.zeros(c) if c else None
        mm_f = kernels.observe(x, h_fast, s_f)
        mm_n = kernels._observe_numpy(x, h_np, s_n, None)
        h_ref.update(x)
        ref_mm = (float(x.min()), float(x.max()))
        assert mm_f == mm_n == ref_mm, (mm_f, mm_n, ref_mm)
        if c:
            np.testing.assert_allclose(s_f, sums_of(x), rtol=1e-12, atol=1e-300)
            np.testing.assert_allclose(s_n, sums_of(x), rtol=1e-12, atol=1e-300)
        # relu
        sx_f, sy_f, sx_n, sy_n = (np.zeros(c) if c else None for _ in range(4))
        r_f = kernels.observe_relu(x, ftop, hx_f, hy_f, sx_f, sy_f)
        r_n = kernels._observe_relu_numpy(x, ftop, hx_n, hy_n, sx_n, sy_n, None)
        y = np.minimum(np.maximum(x, np.float32(0)), np.float32(ftop))
        hy_ref.update(y)
        ry = (float(y.min()), float(y.max()))
        assert r_f[0] == ref_mm and r_n[0] == ref_mm
        assert r_f[1] == ry and r_n[1] == ry, (r_f[1], r_n[1], ry)
        if c:
            np.testing.assert_allclose(sx_f, sums_of(x), rtol=1e-12, atol=1e-300)
            np.testing.assert_allclose(sy_f, sums_of(y), rtol=1e-12, atol=1e-300)
            np.testing.assert_allclose(sy_n, sums_of(y), rtol=1e-12, atol=1e-300)
        same_h(h_fast, h_ref, "observe vs ref")
        same_h(h_np, h_ref, "numpy vs ref")
        same_h(hx_f, h_ref, "relu x vs ref")
        same_h(hx_n, h_ref, "relu-numpy x vs ref")
        same_h(hy_f, hy_ref, "relu y vs ref")
        same_h(hy_n, hy_ref, "relu-numpy y vs ref")
