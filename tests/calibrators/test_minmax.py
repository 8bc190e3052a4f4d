"""MinMax, the algorithm registry, and the floor that keeps every amax positive and finite."""
from __future__ import annotations

import math

import numpy as np
import pytest

from ptq.calibrators import ALGORITHMS, AMAX_FLOOR, AlgorithmSettings, Method, compute_amax
from ptq.table import CalibrationTable


def test_minmax_is_the_largest_magnitude_seen() -> None:
    counts = np.ones(2048, np.int64)
    assert compute_amax(Method.MINMAX, counts, 0.001, -3.0, 2.0) == (3.0, False)
    assert compute_amax(Method.MINMAX, counts, 0.001, 0.5, 4.0) == (4.0, False)
    assert compute_amax(Method.MINMAX, counts, 0.001, -7.25, -1.0) == (7.25, False)


def test_registry_covers_every_method_and_parsing_lists_the_choices() -> None:
    assert set(ALGORITHMS) == set(Method)
    assert Method.parse("Entropy") is Method.ENTROPY
    with pytest.raises(ValueError, match="entropy, minmax, percentile, mse"):
        Method.parse("kl")
    s = AlgorithmSettings(percentile=99.9, start_bin=64, stride=2)
    assert AlgorithmSettings.from_dict(s.to_dict()) == s


@pytest.mark.parametrize("method", list(Method))
def test_an_all_zero_tensor_gets_the_floor_never_zero(method: Method) -> None:
    # What build_table passes for an all-zero tensor: one bin of width 0 holding every zero.
    amax, floored = compute_amax(method, np.array([4096]), 0.0, 0.0, 0.0)
    assert (amax, floored) == (AMAX_FLOOR, True)
    assert AMAX_FLOOR == 2.0 ** -14 and AMAX_FLOOR / 127 > 0


@pytest.mark.parametrize("method", list(Method))
def test_tiny_but_nonzero_ranges_are_floored_too(method: Method) -> None:
    counts = np.zeros(2048, np.int64)
    counts[-1], counts[5] = 1, 100
    amax, floored = compute_amax(method, counts, 1e-9, -2.048e-6, 2.048e-6)
    assert floored and amax == AMAX_FLOOR


def test_non_finite_results_are_refused() -> None:
    with pytest.raises(ValueError, match="non-finite"):
        compute_amax(Method.MINMAX, np.ones(4), 1.0, -math.inf, 1.0)


def test_digits_minmax_and_every_amax_is_positive_and_within_the_histogram(digits_ranges) -> None:
    table = CalibrationTable.load(digits_ranges)
    assert table.methods == [m.value for m in Method]
    for t in table.tensors.values():
        assert t.amax["minmax"] == max(abs(t.min), abs(t.max))
        counts, width = t.histogram.finalized()
        for method, amax in t.amax.items():
            assert AMAX_FLOOR <= amax <= len(counts) * width * (1 + 1e-12), (t.name, method)
