"""Percentile threshold: the left edge of the bin where the CDF of |x| crosses p.

Matches pytorch-quantization `_compute_amax_percentile` and ONNX Runtime's
percentile calibrator: `idx = searchsorted(cumsum(h) / sum(h), p / 100)`,
`amax = edges[idx]`.
"""
from __future__ import annotations

import numpy as np

DEFAULT_PERCENTILE = 99.99


def percentile_amax(counts: np.ndarray, bin_width: float,
                    percentile: float = DEFAULT_PERCENTILE) -> float:
    if not 0.0 < percentile <= 100.0:
        raise ValueError(f"percentile must be in (0, 100], got {percentile}")
    counts = np.asarray(counts, np.float64)
    total = counts.sum()
    if bin_width <= 0 or total == 0:
        return 0.0
    cdf = np.cumsum(counts / total)  # this order, as published: it decides ties at the crossing
    idx = int(np.searchsorted(cdf, percentile / 100.0))
    return float(min(idx, len(counts)) * bin_width)
