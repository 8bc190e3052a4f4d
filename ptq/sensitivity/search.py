"""Search policies: which pins each variant gets, and the greedy auto fallback.

    leave-one-out  all INT8 except the node, pinned to --pin (fp16 or fp32):
                   "how much does keeping this node out of INT8 help?"
    quantize-one   all FP32 except the node in INT8:
                   "how much does INT8 on this node alone hurt?"

Both are expressed as `Pin`s handed to `ptq.quantization`, so a variant is built by
exactly the code that builds the deployed model. The greedy fallback is a
policy object (`propose()` / `update(metrics)`), separate from evaluation:

    pins = {}; for node in ranking:                       # most sensitive first
        stop if target holds | len(pins) == max_pins | the next step would pass the time budget
        try pins + {node}; keep it if the target metric does not get worse and
        the target metric or the ranking metric improves
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from enum import Enum
from typing import Callable, Sequence

from ptq.errors import ConfigError
from ptq.quantization import Pin, Precision
from ptq.sensitivity.record import AutoStep, LayerResult
from ptq.sensitivity.scoring import Scorer, Target, gain


class Mode(str, Enum):
    LEAVE_ONE_OUT = "leave-one-out"
    QUANTIZE_ONE = "quantize-one"
    BOTH = "both"

    @property
    def single_modes(self) -> tuple[Mode, ...]:
        return (Mode.LEAVE_ONE_OUT, Mode.QUANTIZE_ONE) if self is Mode.BOTH else (self,)

    @classmethod
    def parse(cls, value: str | Mode) -> Mode:
        try:
            return cls(value)
        except ValueError:
            raise ConfigError(f"unknown mode {value!r} ({', '.join(m.value for m in cls)})") from None


def leave_one_out(node: str, nodes: Sequence[str], pin: Precision) -> tuple[Pin, ...]:
    return (Pin(node, pin, reason=f"sensitivity leave-one-out ({pin.value})"),)


def quantize_one(node: str, nodes: Sequence[str], pin: Precision) -> tuple[Pin, ...]:
    return tuple(Pin(n, Precision.FP32, reason="sensitivity quantize-one") for n in nodes if n != node)


VARIANTS: dict[Mode, Callable[[str, Sequence[str], Precision], tuple[Pin, ...]]] = {
    Mode.LEAVE_ONE_OUT: leave_one_out,
    Mode.QUANTIZE_ONE: quantize_one,
}


def parse_precision(value: str | Precision) -> Precision:
    try:
        precision = Precision(value)
    except ValueError:
        precision = None
    if precision not in (Precision.FP16, Precision.FP32):
        raise ConfigError(f"--pin must be fp16 or fp32, got {value!r}")
    return precision


def pin_reason(layer: LayerResult, rank_metric: str, step: int, target: Target,
               before: float, after: float) -> str:
    return (f"{layer.mode} rank {layer.rank}: pinning alone gains {layer.delta[rank_metric]:+.4g} "
            f"{rank_metric}; auto step {step}: {target.metric} {before:.4g} -> {after:.4g}")


@dataclass
class GreedyFallback:
    """Pins the most sensitive layers, in ranking order, until the target holds or a budget ends."""

    ranking: Sequence[LayerResult]
    target: Target
    scorers: dict[str, Scorer]
    rank_metric: str
    precision: Precision
    baseline: dict[str, float]
    max_pins: int | None = None
    time_budget: float | None = None
    step_estimate: float = 0.0   # seconds one trial takes (a ranking variant's cost), until measured
    clock: Callable[[], float] = time.perf_counter
    pins: list[Pin] = field(default_factory=list)
    steps: list[AutoStep] = field(default_factory=list)
    stopped_by: str | None = None

    def __post_init__(self) -> None:
        self.current = dict(self.baseline)
        self._queue = list(self.ranking)
        self._start = self.clock()
        self._last_step = self.step_estimate
        self._trial: LayerResult | None = None
        self._check_stop()

    @property
    def met(self) -> bool:
        return self.target.holds(self.current)

    def propose(self) -> tuple[Pin, ...] | None:
        """The pins to evaluate next, or None when the search is over."""
        if self.stopped_by:
            return None
        self._trial = self._queue.pop(0)
        self._trial_start = self.clock()
        return (*self.pins, Pin(self._trial.node, self.precision, reason="auto fallback"))

    def update(self, metrics: dict[str, float]) -> bool:
        """Record the trial's metrics; keep its pin if it helps. Returns whether it was kept."""
        layer, t = self._trial, self.scorers[self.target.metric]
        if layer is None:
            raise RuntimeError("update() without propose()")
        target_gain = gain(t, metrics[t.name], self.current[t.name])
        rank = self.scorers[self.rank_metric]
        rank_gain = gain(rank, metrics[rank.name], self.current[rank.name])
        keep = target_gain >= 0 and (target_gain > 0 or rank_gain > 0)
        if keep:
            reason = pin_reason(layer, self.rank_metric, len(self.pins) + 1, self.target,
                                self.current[t.name], metrics[t.name])
            self.pins.append(Pin(layer.node, self.precision, reason=reason))
            self.current = dict(metrics)
        self._last_step = self.clock() - self._trial_start
        self.steps.append(AutoStep(pins=len(self.pins), metrics=dict(metrics), node=layer.node,
                                   accepted=keep, seconds=self._last_step))
        self._trial = None
        self._check_stop()
        return keep

    def _check_stop(self) -> None:
        if self.met:
            self.stopped_by = "target"
        elif self.max_pins is not None and len(self.pins) >= self.max_pins:
            self.stopped_by = "max-pins"
        elif not self._queue:
            self.stopped_by = "exhausted"
        elif self.time_budget is not None and (
                self.clock() - self._start + self._last_step > self.time_budget):
            self.stopped_by = "time-budget"
