"""`auto`: per tensor, the candidate range whose INT8 quantization loses least on that tensor.

Each published algorithm is right for some tensors and badly wrong for others: entropy clips
SiLU outputs to a few percent of their range, max wastes most of the levels on one outlier
(TensorRT issue 3922, ModelOpt issue 619). `auto` runs them all on the same histogram and
keeps, per tensor, the one with the least expected squared INT8 error

    E(a) = sum_j n_j (q_a(c_j) - c_j)^2 / sum_j n_j,
    q_a(c) = clip(round(c * 127 / a), -127, 127) * a / 127    (c_j: bin centres; values
                                                              past a saturate: clipping error)

which is what a layer fed this tensor sees as input noise; the report shows every
candidate's error relative to the chosen one, so the reason is visible per tensor. Ties
(within 0.1%) go to the larger range: less clipping for the same rounding error. The weight
side of `auto` (the systematic shift weight rounding adds to each output channel) is
corrected in the graph, ptq/graph/bias.py.
"""
from __future__ import annotations

from typing import Mapping

import numpy as np

CANDIDATES = ("mse", "percentile", "minmax", "entropy")
_TIE_RTOL = 1e-3


def expected_sq_error(counts: np.ndarray, bin_width: float, amax: float,
                      num_bits: int = 8) -> float:
    """Mean squared error of symmetric INT8 fake quantization with range `amax`, values at
    the bin centres (0.0 for an empty histogram or a zero width)."""
    counts = np.asarray(counts, np.float64)
    total = counts.sum()
    if total == 0 or bin_width <= 0:
        return 0.0
    bound = float(2 ** (num_bits - 1) - 1)
    nz = counts > 0
    c = (np.flatnonzero(nz) + 0.5) * bin_width
    if amax <= 0:  # a zero range flushes everything to 0
        return float((c ** 2 * counts[nz]).sum() / total)
    q = np.clip(np.round(c * (bound / amax)), -bound, bound) * (amax / bound)
    return float(((q - c) ** 2 * counts[nz]).sum() / total)


def choose(counts: np.ndarray, bin_width: float, candidates: Mapping[str, float]
           ) -> tuple[str, dict[str, float]]:
    """(name of the chosen candidate, each candidate's error relative to the chosen one).

    Least expected error; a candidate within 0.1% of the least counts as tied and the
    largest tied range wins. Relative errors are 1.0 for the chosen one (and for every
    candidate when the histogram is empty)."""
    errors = {name: expected_sq_error(counts, bin_width, amax) for name, amax in candidates.items()}
    best = min(errors.values())
    tied = [n for n, e in errors.items() if e <= best * (1 + _TIE_RTOL)]
    chosen = max(tied, key=lambda n: (candidates[n], -list(candidates).index(n)))
    ref = errors[chosen]
    rel = {n: (e / ref if ref > 0 else 1.0) for n, e in errors.items()}
    return chosen, rel
