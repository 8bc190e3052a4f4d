"""Metric names -> scorers, and `--target` expressions.

A scorer judges one model's outputs over the evaluation set: built-in metrics
compare against the FP32 reference (or the labels), hooks and detection metrics
judge the outputs themselves. All share `name`, `higher_is_better`,
`needs_labels` and `score(ref, cand, meta) -> float`.

With `labels=True`, `top1`/`top5` mean true accuracy against the labels
(`top1-acc`/`top5-acc`) instead of agreement with the FP32 model.
"""
from __future__ import annotations

import operator
import re
from dataclasses import dataclass
from typing import Callable, Protocol, Sequence

import numpy as np

from ptq.errors import ConfigError
from ptq.metrics import METRICS, Metric, get_metric
from ptq.output_kinds import OutputSpec, output_specs
from ptq.sensitivity.detection import DETECTION_METRICS, DetectionScorer
from ptq.sensitivity.hooks import EvalMeta, HookScorer, checked_score, is_hook_spec

LABEL_ALIASES = {"top1": "top1-acc", "top5": "top5-acc"}


class Scorer(Protocol):
    name: str
    higher_is_better: bool
    needs_labels: bool

    def score(self, ref: dict[str, np.ndarray], cand: dict[str, np.ndarray],
              meta: EvalMeta) -> float: ...


@dataclass(frozen=True)
class BuiltinScorer:
    """A `ptq.metrics` metric: the worst of the outputs it applies to, each output read by
    its `OutputSpec` (from its shape and `layout`, or the user's `overrides` by name)."""

    metric: Metric
    layout: str = "NCHW"
    overrides: tuple[tuple[str, OutputSpec], ...] = ()

    def specs(self, ref: dict[str, np.ndarray]) -> dict[str, OutputSpec]:
        return output_specs(ref, self.layout, dict(self.overrides))

    @property
    def name(self) -> str:
        return self.metric.name

    @property
    def higher_is_better(self) -> bool:
        return self.metric.higher_is_better

    @property
    def needs_labels(self) -> bool:
        return self.metric.needs_labels

    def score(self, ref: dict[str, np.ndarray], cand: dict[str, np.ndarray],
              meta: EvalMeta) -> float:
        return checked_score(self.name, self.metric.score(ref, cand, meta.labels,
                                                          specs=self.specs(ref)))


def canonical_name(name: str, *, labels: bool) -> str:
    return LABEL_ALIASES.get(name, name) if labels else name


def resolve_scorer(name: str, *, labels: bool = False, decoder: str | None = None,
                   layout: str = "NCHW", overrides: dict[str, OutputSpec] | None = None) -> Scorer:
    """One metric name (built-in, detection or PKG.MODULE:FUNCTION hook) -> its scorer."""
    name = canonical_name(name.strip(), labels=labels)
    if name in DETECTION_METRICS:
        return DetectionScorer.from_spec(name, decoder)
    if is_hook_spec(name):
        return HookScorer.from_spec(name)
    if name not in METRICS:
        raise ConfigError(f"unknown metric {name!r}; choose from "
                          f"{', '.join([*METRICS, *DETECTION_METRICS])} or give a hook as "
                          "PKG.MODULE:FUNCTION")
    return BuiltinScorer(get_metric(name), layout, tuple((overrides or {}).items()))


def resolve_scorers(names: Sequence[str | Scorer], *, labels: bool = False,
                    decoder: str | None = None, layout: str = "NCHW",
                    overrides: dict[str, OutputSpec] | None = None) -> list[Scorer]:
    """Scorers in the given order (the first ranks), duplicates dropped."""
    out: list[Scorer] = []
    for item in names:
        scorer = resolve_scorer(item, labels=labels, decoder=decoder, layout=layout,
                                overrides=overrides) if isinstance(item, str) else item
        if scorer.name not in {s.name for s in out}:
            out.append(scorer)
    if not out:
        raise ConfigError("no metric given", hint="e.g. --metric cosine top1")
    return out


def gain(scorer: Scorer, new: float, old: float) -> float:
    """How much `new` improves on `old`; positive = better, whatever the direction."""
    return (new - old) if scorer.higher_is_better else (old - new)


def score_all(scorers: Sequence[Scorer], ref: dict[str, np.ndarray], cand: dict[str, np.ndarray],
              meta: EvalMeta) -> dict[str, float]:
    return {s.name: s.score(ref, cand, meta) for s in scorers}


_OPS: dict[str, Callable[[float, float], bool]] = {
    ">=": operator.ge, "<=": operator.le, ">": operator.gt, "<": operator.lt}
_TARGET = re.compile(r"^\s*(?P<metric>[\w.:\-]+?)\s*(?P<op>>=|<=|>|<)\s*"
                     r"(?P<value>[-+]?[0-9.]+(?:[eE][-+]?\d+)?)\s*$")


@dataclass(frozen=True)
class Target:
    """`<metric><op><value>`, e.g. top1>=0.99 or mse<0.01."""

    metric: str
    op: str
    value: float

    def holds(self, metrics: dict[str, float]) -> bool:
        return _OPS[self.op](metrics[self.metric], self.value)

    def __str__(self) -> str:
        return f"{self.metric}{self.op}{self.value:g}"


def parse_target(text: str, *, labels: bool = False) -> Target:
    m = _TARGET.match(text or "")
    if not m:
        raise ConfigError(f"bad target {text!r}: expected <metric><op><value> with op one of "
                          ">=, <=, >, <", hint='e.g. --target "top1>=0.99"')
    try:
        value = float(m["value"])
    except ValueError:
        raise ConfigError(f"bad target value in {text!r}", hint='e.g. --target "top1>=0.99"') from None
    return Target(canonical_name(m["metric"], labels=labels), m["op"], value)
