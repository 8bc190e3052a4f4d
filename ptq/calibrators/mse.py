"""MSE threshold: the bin centre whose INT8 fake-quantization of the histogram has least error.

As pytorch-quantization `_compute_amax_mse`: for each candidate centre c_i
(i from `start_bin`), quantize every bin centre with amax = c_i,

    q(c) = clip(round(c * 127 / amax), -127, 127) * amax / 127     (round half to even)

and take the first i minimising  mean((q(c) - c)^2 * counts).
"""
from __future__ import annotations

import numpy as np

from ptq import kernels

START_BIN = 128
_CHUNK = 64  # candidates per vectorised block: bounds temporaries to 64 x num_bins
_TIE_RTOL = 1e-6


def mse_errors(counts: np.ndarray, bin_width: float, *, start_bin: int = START_BIN,
               stride: int = 1, num_bits: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """(candidate amax values, their weighted MSE)."""
    counts = np.asarray(counts, np.float64)
    centers = (np.arange(len(counts)) + 0.5) * bin_width
    cand_idx = np.arange(start_bin, len(centers), stride)
    amaxes = centers[cand_idx]
    max_bound = float(2 ** (num_bits - 1) - 1)
    errors = np.empty(len(amaxes))
    if len(amaxes) == 0:
        return amaxes, errors
    nz = counts > 0  # empty bins add exactly zero error: skip them in the sweep
    c, w = centers[nz], counts[nz]
    sweep = kernels.mse_sweep() or sweep_numpy  # numba: one loop, without the GIL
    sweep(c, w, amaxes, float(len(centers)), max_bound, errors)
    # Near-ties are common (e.g. one populated bin): recompute those candidates with the
    # published loop's exact arithmetic (mean over every bin) so they break the same way.
    close = np.flatnonzero(errors <= errors.min() * (1 + _TIE_RTOL) + np.finfo(float).tiny)
    for i in close:
        q = np.clip(np.round(centers * max_bound / amaxes[i]), -max_bound, max_bound) \
            * amaxes[i] / max_bound
        errors[i] = np.mean((q - centers) ** 2 * counts)
    return amaxes, errors


def sweep_numpy(c: np.ndarray, w: np.ndarray, amaxes: np.ndarray, num_centers: float,
                max_bound: float, errors: np.ndarray) -> None:
    """Weighted squared error of every candidate, in blocks of candidates."""
    for s in range(0, len(amaxes), _CHUNK):
        a = amaxes[s:s + _CHUNK, None]
        q = np.clip(np.round(c * (max_bound / a)), -max_bound, max_bound) * (a / max_bound)
        errors[s:s + _CHUNK] = ((q - c) ** 2 * w).sum(axis=1) / num_centers


def mse_amax(counts: np.ndarray, bin_width: float, *, start_bin: int = START_BIN,
             stride: int = 1, num_bits: int = 8) -> float:
    counts = np.asarray(counts)
    if bin_width <= 0 or counts.sum() == 0:
        return 0.0
    amaxes, errors = mse_errors(counts, bin_width, start_bin=start_bin, stride=stride,
                                num_bits=num_bits)
    if len(amaxes) == 0:
        return float(len(counts) * bin_width)
    return float(amaxes[int(np.argmin(errors))])
