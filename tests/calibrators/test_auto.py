"""`auto`: the expected INT8 error of a range and the per-tensor choice, on hand-computed cases."""
from __future__ import annotations

import numpy as np
import pytest

from ptq.calibrators import AlgorithmSettings, Method, compute_amax, explain_auto
from ptq.calibrators.auto import choose, expected_sq_error

# Two values at 1.5 and one at 3.5 (bin centres of width-1 bins 1 and 3).
COUNTS = np.array([0, 2, 0, 1])


def test_expected_error_by_hand() -> None:
    # amax 127 -> scale 1: round(1.5) = 2, round(3.5) = 4 (half to even): errors 0.25 each
    assert expected_sq_error(COUNTS, 1.0, 127.0) == pytest.approx(0.25)
    # amax 1.27 -> scale 0.01: both clip to 1.27: (2 * 0.23^2 + 2.23^2) / 3
    assert expected_sq_error(COUNTS, 1.0, 1.27) == pytest.approx((2 * 0.23 ** 2 + 2.23 ** 2) / 3)
    assert expected_sq_error(np.zeros(4), 1.0, 1.0) == 0.0


def test_choice_takes_the_least_error_and_reports_the_others_relative_to_it() -> None:
    chosen, rel = choose(COUNTS, 1.0, {"mse": 1.27, "minmax": 127.0})
    assert chosen == "minmax"
    assert rel == pytest.approx({"mse": (2 * 0.23 ** 2 + 2.23 ** 2) / 3 / 0.25, "minmax": 1.0})


def test_ties_go_to_the_larger_range() -> None:
    # amax 254 -> scale 2: round(0.75) * 2 = 2, round(1.75) * 2 = 4: the same 0.25 as amax 127
    chosen, rel = choose(COUNTS, 1.0, {"a": 127.0, "b": 254.0})
    assert chosen == "b" and rel == pytest.approx({"a": 1.0, "b": 1.0})


def test_auto_is_one_of_the_published_algorithms_per_tensor() -> None:
    rng = np.random.default_rng(0)
    counts = np.bincount(np.minimum((np.abs(rng.standard_t(3, 20000)) * 100).astype(int), 2047),
                         minlength=2048)
    lo, hi = -float(len(counts)) / 100, float(len(counts)) / 100
    settings = AlgorithmSettings()
    every = {m.value: compute_amax(m, counts, 0.01, lo, hi, settings)[0]
             for m in Method if m is not Method.AUTO}
    info = explain_auto(counts, 0.01, lo, hi, settings)
    assert info["amax"] == every[info["method"]]
    assert compute_amax(Method.AUTO, counts, 0.01, lo, hi, settings)[0] == info["amax"]
    errors = {m: expected_sq_error(counts, 0.01, a) for m, a in every.items()}
    assert errors[info["method"]] <= min(errors.values()) * (1 + 1e-3)
    assert info["relative_error"][info["method"]] == 1.0
