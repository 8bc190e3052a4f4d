"""Slow, literal transcriptions of the published algorithms, used as test oracles.

Written from the pseudocode in ../shared/TENSORRT.md §2.2 (pytorch-quantization's
HistogramCalibrator), loop for loop, with scipy's KL divergence: no vectorisation,
no prefix sums, nothing shared with ptq's implementation.
"""
from __future__ import annotations

import numpy as np
from scipy.stats import entropy as scipy_entropy


def entropy_divergences_reference(counts, num_levels=128, start_bin=128, stride=1):
    bins = np.array(counts, dtype=np.int64)
    bins[0] = bins[1]
    divs, cands = [], []
    for i in range(start_bin, len(bins) + 1, stride):
        space = np.linspace(0, i, num=num_levels + 1)
        level = np.digitize(range(i), space) - 1
        level[bins[:i] == 0] = -1
        level_sum = np.zeros(num_levels)
        level_nz = np.zeros(num_levels)
        for j in range(i):
            if level[j] != -1:
                level_sum[level[j]] += bins[j]
                level_nz[level[j]] += 1
        q = np.zeros(i)
        for j in range(i):
            if level[j] != -1:
                q[j] = level_sum[level[j]] / level_nz[level[j]]
        p = bins[:i].astype(np.float64)
        p[-1] += bins[i:].sum()
        divs.append(scipy_entropy(p, q))
        cands.append(i)
    return np.array(cands), np.array(divs)


def entropy_amax_reference(counts, width, num_levels=128, start_bin=128, stride=1):
    cands, divs = entropy_divergences_reference(counts, num_levels, start_bin, stride)
    last_argmin = len(divs) - 1 - np.argmin(divs[::-1])
    return cands[last_argmin] * width


def mse_amax_reference(counts, width, start_bin=128, stride=1):
    centers = (np.arange(len(counts)) + 0.5) * width
    best, best_amax = None, None
    for i in range(start_bin, len(centers), stride):
        amax = centers[i]
        q = np.clip(np.round(centers * 127 / amax), -127, 127) * amax / 127
        mse = np.mean((q - centers) ** 2 * counts)
        if best is None or mse < best:
            best, best_amax = mse, amax
    return best_amax


def percentile_amax_reference(counts, width, percentile):
    cdf = np.cumsum(counts / np.sum(counts))
    idx = np.searchsorted(cdf, percentile / 100)
    return idx * width
