"""The algorithm registry: one `Method`, one pure function, one place for defaults.

Each function maps (histogram of |x|, bin width, running min/max) to an amax; the
INT8 scale is amax / 127. A result that is zero or below `AMAX_FLOOR` (an all-zero
tensor, or a percentile that lands in the zero bin) is raised to the floor and
flagged, so no zero scale is ever written.
"""
from __future__ import annotations

import enum
import math
from dataclasses import dataclass
from typing import Callable

import numpy as np

from ptq.calibrators.auto import CANDIDATES, choose
from ptq.calibrators.entropy import START_BIN, entropy_amax
from ptq.calibrators.mse import mse_amax
from ptq.calibrators.percentile import DEFAULT_PERCENTILE, percentile_amax

# Smallest normal float16: a floored scale (AMAX_FLOOR / 127) stays representable
# when the surrounding layers run in FP16, and it never divides by zero.
AMAX_FLOOR = 2.0 ** -14


class Method(str, enum.Enum):
    ENTROPY = "entropy"
    MINMAX = "minmax"
    PERCENTILE = "percentile"
    MSE = "mse"
    AUTO = "auto"

    @classmethod
    def parse(cls, name: str) -> Method:
        try:
            return cls(name.lower())
        except ValueError:
            valid = ", ".join(m.value for m in cls)
            raise ValueError(f"unknown calibration algorithm {name!r}; choose from {valid}") from None


# The one place the default lives: `ptq calibrate`, `ptq quantize`, the Python API and the
# demo all read it.
DEFAULT_METHOD = Method.AUTO


@dataclass(frozen=True)
class AlgorithmSettings:
    """Parameters of the histogram algorithms (defaults as published)."""

    percentile: float = DEFAULT_PERCENTILE
    start_bin: int = START_BIN
    stride: int = 1

    def to_dict(self) -> dict:
        return {"percentile": self.percentile, "start_bin": self.start_bin, "stride": self.stride}

    @classmethod
    def from_dict(cls, d: dict) -> AlgorithmSettings:
        return cls(**{k: d[k] for k in ("percentile", "start_bin", "stride") if k in d})


AmaxFn = Callable[[np.ndarray, float, float, float, AlgorithmSettings], float]

ALGORITHMS: dict[Method, AmaxFn] = {
    Method.MINMAX: lambda counts, width, lo, hi, s: max(abs(lo), abs(hi)),
    Method.ENTROPY: lambda counts, width, lo, hi, s: entropy_amax(
        counts, width, start_bin=s.start_bin, stride=s.stride),
    Method.PERCENTILE: lambda counts, width, lo, hi, s: percentile_amax(
        counts, width, s.percentile),
    Method.MSE: lambda counts, width, lo, hi, s: mse_amax(
        counts, width, start_bin=s.start_bin, stride=s.stride),
}


def explain_auto(counts: np.ndarray, width: float, lo: float, hi: float,
                 settings: AlgorithmSettings = AlgorithmSettings(),
                 known: dict[str, float] | None = None) -> dict:
    """`auto` for one tensor: every candidate's amax (reusing `known` ones), the chosen one and
    each candidate's expected INT8 error relative to it (ptq/calibrators/auto.py)."""
    known = known or {}
    cands = {name: float(known[name]) if name in known else
             float(ALGORITHMS[Method(name)](counts, width, lo, hi, settings))
             for name in CANDIDATES}
    chosen, rel = choose(counts, width, cands)
    return {"method": chosen, "amax": cands[chosen],
            "relative_error": {n: round(r, 4) for n, r in rel.items()}}


ALGORITHMS[Method.AUTO] = lambda counts, width, lo, hi, s: explain_auto(
    counts, width, lo, hi, s)["amax"]


def compute_amax(method: Method, counts: np.ndarray, bin_width: float, lo: float, hi: float,
                 settings: AlgorithmSettings = AlgorithmSettings()) -> tuple[float, bool]:
    """(amax, floored): amax is finite and >= AMAX_FLOOR; `floored` says the floor applied."""
    amax = float(ALGORITHMS[method](counts, bin_width, lo, hi, settings))
    if not math.isfinite(amax):
        raise ValueError(f"{method.value} produced a non-finite amax ({amax})")
    if amax < AMAX_FLOOR:
        return AMAX_FLOOR, True
    return amax, False
