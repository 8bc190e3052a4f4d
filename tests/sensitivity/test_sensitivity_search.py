"""The greedy fallback policy and the variant pin sets, driven with hand-written metrics.

GreedyFallback is a pure policy (propose / update): these tests feed it the metrics a
model would have, to pin down its stopping rules exactly; the digits and EfficientNet
tests run it on real models."""
from __future__ import annotations

from ptq.metrics import get_metric
from ptq.quantization import Precision
from ptq.sensitivity import GreedyFallback, LayerResult, Mode, parse_target
from ptq.sensitivity.scoring import BuiltinScorer
from ptq.sensitivity.search import VARIANTS

SCORERS = {n: BuiltinScorer(get_metric(n)) for n in ("cosine", "mse")}
RANKING = [LayerResult(f"n{i}", "Conv", "leave-one-out", {}, {"cosine": 0.1 / i, "mse": 0.0}, rank=i)
           for i in range(1, 5)]


def make(target: str, *, max_pins=None, budget=None, clock=None, estimate=0.0, baseline=None):
    return GreedyFallback(RANKING, parse_target(target), SCORERS, "cosine", Precision.FP16,
                          baseline or {"cosine": 0.90, "mse": 1.0}, max_pins=max_pins,
                          time_budget=budget, step_estimate=estimate,
                          **({"clock": clock} if clock else {}))


def drive(search, results):
    """Feed the metrics of each trial in turn; returns the nodes proposed."""
    tried = []
    for metrics in results:
        pins = search.propose()
        if pins is None:
            break
        tried.append(pins[-1].node)
        search.update(metrics)
    return tried


def test_pins_in_ranking_order_until_the_target_holds():
    s = make("cosine>=0.99")
    tried = drive(s, [{"cosine": 0.95, "mse": 0.5}, {"cosine": 0.995, "mse": 0.1},
                      {"cosine": 1, "mse": 0}])
    assert tried == ["n1", "n2"] and s.stopped_by == "target" and s.met
    assert [p.node for p in s.pins] == ["n1", "n2"]
    assert "leave-one-out rank 2" in s.pins[1].reason and "0.95 -> 0.995" in s.pins[1].reason
    assert [st.pins for st in s.steps] == [1, 2]


def test_a_pin_that_makes_the_target_metric_worse_is_dropped():
    # n1 helps; n2 hurts cosine (rejected, not counted); n3 helps -> pins n1, n3
    s = make("cosine>=0.99", max_pins=2)
    drive(s, [{"cosine": 0.95, "mse": 0.5}, {"cosine": 0.94, "mse": 0.1}, {"cosine": 0.97, "mse": 0.4}])
    assert [p.node for p in s.pins] == ["n1", "n3"]
    assert [st.accepted for st in s.steps] == [True, False, True]
    assert s.stopped_by == "max-pins" and not s.met
    assert s.current["cosine"] == 0.97  # the best model found is the last accepted state


def test_exhausted_and_already_met():
    s = make("mse<0.2")
    drive(s, [{"cosine": 0.91, "mse": 0.9}] * 4)
    assert s.stopped_by == "exhausted" and len(s.steps) == 4
    done = make("cosine>0.5")
    assert done.stopped_by == "target" and done.propose() is None and done.pins == []


def test_time_budget_stops_before_a_step_that_would_overrun():
    now = [0.0]
    s = make("cosine>=0.999", budget=10.0, clock=lambda: now[0], estimate=4.0)
    for expected in ("n1", "n2"):
        pins = s.propose()
        assert pins[-1].node == expected
        now[0] += 4.0
        s.update({"cosine": 0.9 + 0.01 * len(s.steps) + 0.01, "mse": 0.5})
    assert s.stopped_by == "time-budget"  # 8 s used + 4 s for the next step > 10 s
    assert s.propose() is None


def test_variant_pin_sets():
    nodes = ["a", "b", "c"]
    loo = VARIANTS[Mode.LEAVE_ONE_OUT]("b", nodes, Precision.FP16)
    assert [(p.node, p.precision) for p in loo] == [("b", Precision.FP16)]
    one = VARIANTS[Mode.QUANTIZE_ONE]("b", nodes, Precision.FP16)
    assert [(p.node, p.precision) for p in one] == [("a", Precision.FP32), ("c", Precision.FP32)]
    assert Mode.BOTH.single_modes == (Mode.LEAVE_ONE_OUT, Mode.QUANTIZE_ONE)
