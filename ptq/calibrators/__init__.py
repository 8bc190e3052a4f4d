"""Calibration algorithms: pure functions from collected statistics to an INT8 amax.

`ALGORITHMS` maps each `Method` to its function; every function takes the same
`TensorStatistics`-like inputs (a histogram of |x| plus the running min/max) so one
statistics pass serves them all.
"""
from __future__ import annotations

from ptq.calibrators.algorithms import (
    ALGORITHMS,
    AMAX_FLOOR,
    AlgorithmSettings,
    DEFAULT_METHOD,
    Method,
    compute_amax,
    explain_auto,
)
from ptq.calibrators.entropy import entropy_amax, entropy_divergences
from ptq.calibrators.mse import mse_amax
from ptq.calibrators.percentile import percentile_amax

__all__ = [
    "ALGORITHMS", "AMAX_FLOOR", "AlgorithmSettings", "DEFAULT_METHOD", "Method", "compute_amax", "explain_auto",
    "entropy_amax", "entropy_divergences", "mse_amax", "percentile_amax",
]
