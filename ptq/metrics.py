"""Comparison metrics: pure functions of (reference outputs, candidate outputs), per output.

Every metric scores one output tensor (sample axis first). A model with several
outputs is scored output by output (`per_output`), and a single figure is the
WORST applicable output, named (`Comparison.worst`). A metric that does not
apply to an output (top-1 on a probability map) is left out for that output,
never faked: a DBNet map has no top-1.

| name      | definition                                                      | better |
|-----------|-----------------------------------------------------------------|--------|
| cosine    | cos(ref, cand) of the WHOLE output flattened (pooled over the   | higher |
|           | samples: a per-image mean lets many near-empty images hide the  |        |
|           | ones that break)                                                 |        |
| max-abs   | max |ref - cand|                                                | lower  |
| mean-abs  | mean |ref - cand|                                               | lower  |
| mse       | mean (ref - cand)^2                                             | lower  |
| snr       | 10 log10(sum ref^2 / sum (ref - cand)^2) dB, capped at 300      | higher |
| top1      | share of positions whose argmax over the class axis matches the | higher |
|           | reference's (a classifier: per sample; a CTC recognizer [N,T,C]:|        |
|           | per frame; a segmenter [N,C,H,W]: per pixel)                    |        |
| top5      | share whose reference argmax is in the candidate's top 5        | higher |
| top1-acc  | share whose candidate argmax equals the label (needs labels)    | higher |
| top5-acc  | share whose label is in the candidate's top 5 (needs labels)    | higher |
| map-iou   | IoU of the maps binarized at the threshold (0.3, DBNet's),      | higher |
|           | pooled: sum of intersections / sum of unions over all samples   |        |
| box-f1    | agreement of the boxes of the binarized maps' connected         | higher |
|           | components: 2 * matched / (#ref + #cand), matched one-to-one at |        |
|           | IoU >= 0.5, pooled over samples                                 |        |

Which axis is the class axis: `OutputSpec` per output, from its shape and the
model's input layout (`infer_spec`, rules in its docstring), overridable by name
(`parse_spec_override`, the CLI's `--output-kind NAME=KIND[:AXIS]`).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Mapping, Sequence

import numpy as np

from ptq.errors import ConfigError
from ptq.maps import box_f1, map_iou
from ptq.output_kinds import OutputSpec, infer_spec, output_specs

SNR_CAP_DB = 300.0      # identical outputs: a finite number JSON can hold
# Below these a metric is flagged LOW in every summary: a model is never called good
# while one of its outputs is this far from FP32.
LOW = {"cosine": 0.98, "top1": 0.95, "top5": 0.98, "map-iou": 0.9, "box-f1": 0.9, "snr": 20.0}


# ---------------------------------------------------------------- elementwise metrics

def cosine(ref: np.ndarray, cand: np.ndarray) -> float:
    """Cosine of the whole output, all samples pooled (see the module docstring)."""
    r = np.asarray(ref, np.float64).ravel()
    c = np.asarray(cand, np.float64).ravel()
    nr, nc = float(np.linalg.norm(r)), float(np.linalg.norm(c))
    if nr == 0.0 and nc == 0.0:
        return 1.0
    if nr == 0.0 or nc == 0.0:
        return 0.0
    return float(np.clip(np.dot(r, c) / (nr * nc), -1.0, 1.0))


def max_abs(ref: np.ndarray, cand: np.ndarray) -> float:
    return float(np.max(np.abs(ref.astype(np.float64) - cand))) if ref.size else 0.0


def mean_abs(ref: np.ndarray, cand: np.ndarray) -> float:
    return float(np.mean(np.abs(ref.astype(np.float64) - cand))) if ref.size else 0.0


def mse(ref: np.ndarray, cand: np.ndarray) -> float:
    return float(np.mean((ref.astype(np.float64) - cand) ** 2)) if ref.size else 0.0


def snr_db(ref: np.ndarray, cand: np.ndarray) -> float:
    signal = float(np.sum(ref.astype(np.float64) ** 2))
    noise = float(np.sum((ref.astype(np.float64) - cand) ** 2))
    if noise == 0.0:
        return SNR_CAP_DB
    if signal == 0.0:
        return -SNR_CAP_DB
    return float(min(SNR_CAP_DB, 10.0 * np.log10(signal / noise)))


# ---------------------------------------------------------------- class metrics

def _classes_last(x: np.ndarray, axis: int = 1) -> np.ndarray:
    if x.ndim < 2:
        raise ConfigError(f"top-k metrics need a class axis; output has shape {x.shape}")
    return np.moveaxis(x, axis, -1)


def _topk(x: np.ndarray, k: int) -> np.ndarray:
    k = min(k, x.shape[-1])
    return np.argpartition(-x, k - 1, axis=-1)[..., :k]


def top1_agreement(ref: np.ndarray, cand: np.ndarray, axis: int = 1) -> float:
    return float(np.mean(_classes_last(ref, axis).argmax(-1) == _classes_last(cand, axis).argmax(-1)))


def top5_agreement(ref: np.ndarray, cand: np.ndarray, axis: int = 1) -> float:
    truth = _classes_last(ref, axis).argmax(-1)
    return float(np.mean((_topk(_classes_last(cand, axis), 5) == truth[..., None]).any(-1)))


def top1_accuracy(cand: np.ndarray, labels: np.ndarray, axis: int = 1) -> float:
    return float(np.mean(_classes_last(cand, axis).argmax(-1) == labels))


def top5_accuracy(cand: np.ndarray, labels: np.ndarray, axis: int = 1) -> float:
    return float(np.mean((_topk(_classes_last(cand, axis), 5) ==
                          np.asarray(labels)[..., None]).any(-1)))


# ---------------------------------------------------------------- the registry

@dataclass(frozen=True)
class Metric:
    """A named metric. `applies(spec)` says whether it means anything for an output."""

    name: str
    fn: Callable[..., float]
    higher_is_better: bool
    needs_labels: bool = False
    kinds: tuple[str, ...] | None = None   # output kinds it applies to (None: all)

    def applies(self, spec: OutputSpec) -> bool:
        return self.kinds is None or spec.kind in self.kinds

    def score_tensor(self, ref: np.ndarray, cand: np.ndarray, labels: np.ndarray | None,
                     spec: OutputSpec | None = None) -> float:
        spec = spec or infer_spec(ref.shape, sample=ref[:4] if ref.ndim else None)
        if self.needs_labels:
            if labels is None:
                raise ConfigError(f"metric '{self.name}' needs labels",
                                  hint="use an image folder with class sub-folders, or an npz "
                                       "with a 'labels' array")
            return self.fn(cand, labels, spec.class_axis if spec.class_axis is not None else 1)
        if self.kinds is not None and "map" in self.kinds:
            return self.fn(ref, cand, spec.threshold)
        if self.name == "cosine" and spec.groups:  # a detection head: its worst group counts
            return min([cosine(ref, cand), *group_cosines(ref, cand, spec).values()])
        if self.kinds is not None:
            return self.fn(ref, cand, spec.class_axis)
        return self.fn(ref, cand)

    def per_output(self, ref: Mapping[str, np.ndarray], cand: Mapping[str, np.ndarray],
                   labels: np.ndarray | None = None,
                   specs: Mapping[str, OutputSpec] | None = None,
                   outputs: Sequence[str] | None = None) -> dict[str, float]:
        """{output: score} over the outputs this metric applies to (labels: the first one)."""
        specs = specs or output_specs(ref)
        names = [n for n in (outputs or list(ref)) if self.applies(specs[n])]
        if self.needs_labels:
            names = names[:1]
        return {n: self.score_tensor(ref[n], cand[n], labels, specs[n]) for n in names}

    def score(self, ref: Mapping[str, np.ndarray], cand: Mapping[str, np.ndarray],
              labels: np.ndarray | None = None, outputs: Sequence[str] | None = None,
              specs: Mapping[str, OutputSpec] | None = None) -> float:
        """Worst score over the outputs it applies to; ConfigError when it applies to none."""
        scores = self.per_output(ref, cand, labels, specs, outputs)
        if not scores:
            raise NotApplicable(self.name, specs or output_specs(ref), ref)
        return self.worst(scores)[1]

    def worst(self, scores: Mapping[str, float]) -> tuple[str, float]:
        pick = min if self.higher_is_better else max
        name = pick(scores, key=lambda n: scores[n])
        return name, scores[name]

    def better(self, a: float, b: float) -> bool:
        return a > b if self.higher_is_better else a < b

    def gain(self, new: float, old: float) -> float:
        """How much `new` improves on `old`, positive = better, whatever the direction."""
        return (new - old) if self.higher_is_better else (old - new)


class NotApplicable(ConfigError):
    """A metric that applies to none of the model's outputs (top1 on a DBNet map)."""

    def __init__(self, metric: str, specs: Mapping[str, OutputSpec], ref: Mapping[str, np.ndarray]):
        kinds = ", ".join(f"{n} {list(ref[n].shape)} = {s.describe()}" for n, s in specs.items())
        suggest = [m.name for m in METRICS.values() if not m.needs_labels and m.kinds is not None
                   and any(m.applies(s) for s in specs.values())]
        super().__init__(f"metric '{metric}' does not apply to any output ({kinds})",
                         hint=f"use cosine{''.join(', ' + s for s in suggest)}, or declare the "
                              "output's kind with --output-kind NAME=KIND[:AXIS]")
        self.metric = metric


CLASS_KINDS = ("classes", "sequence", "dense")
MAP_KINDS = ("map",)

METRICS: dict[str, Metric] = {m.name: m for m in [
    Metric("cosine", cosine, True),
    Metric("max-abs", max_abs, False),
    Metric("mean-abs", mean_abs, False),
    Metric("mse", mse, False),
    Metric("snr", snr_db, True),
    Metric("top1", top1_agreement, True, kinds=CLASS_KINDS),
    Metric("top5", top5_agreement, True, kinds=CLASS_KINDS),
    Metric("top1-acc", top1_accuracy, True, needs_labels=True, kinds=("classes",)),
    Metric("top5-acc", top5_accuracy, True, needs_labels=True, kinds=("classes",)),
    Metric("map-iou", map_iou, True, kinds=MAP_KINDS),
    Metric("box-f1", box_f1, True, kinds=MAP_KINDS),
]}


def get_metric(name: str) -> Metric:
    try:
        return METRICS[name]
    except KeyError:
        raise ConfigError(f"unknown metric {name!r}; choose from {', '.join(METRICS)} "
                          "or give a hook as package.module:function") from None


def default_metrics(specs: Mapping[str, OutputSpec]) -> list[str]:
    """What to report when the user names nothing: cosine everywhere, top-1 where there
    is a class axis, map IoU and box agreement where there is a map."""
    kinds = {s.kind for s in specs.values()}
    out = ["cosine"]
    if kinds & set(CLASS_KINDS):
        out.append("top1")
    if kinds & set(MAP_KINDS):
        out += ["map-iou", "box-f1"]
    return out


# ---------------------------------------------------------------- per-output comparison

def group_cosines(ref: np.ndarray, cand: np.ndarray, spec: OutputSpec) -> dict[str, float]:
    """Cosine of each channel group of a detection head ({"box": .., "scores": ..})."""
    out = {}
    for name, start, stop in spec.groups:
        sl = [slice(None)] * ref.ndim
        sl[spec.group_axis] = slice(start, stop)
        r, c = ref[tuple(sl)], cand[tuple(sl)]
        if r.size:
            out[name] = cosine(r, c)
    return out


@dataclass(frozen=True)
class Comparison:
    """Every output's metrics, the worst output per metric, and the LOW flags."""

    outputs: dict[str, dict[str, float]]   # {output: {metric: value}}
    specs: dict[str, OutputSpec]
    worst: dict[str, tuple[str, float]] = field(default_factory=dict)  # {metric: (output, value)}

    @property
    def flags(self) -> list[str]:
        """'<output> <metric> <value> < <limit>' for every value below its LOW limit."""
        out = []
        for name, metrics in self.outputs.items():
            for metric, value in metrics.items():
                base = metric.split("[")[0]
                if base in LOW and value < LOW[base]:
                    out.append(f"{name} {metric} {value:.4g} < {LOW[base]:g}")
        return out

    def flat(self) -> dict[str, float]:
        """{metric: worst value over the outputs} (what a single-figure summary shows)."""
        return {m: v for m, (_, v) in self.worst.items()}

    def lines(self) -> list[str]:
        """Human summary: one line per output, then the worst output and the flags."""
        multi = len(self.outputs) > 1
        out = []
        for name, metrics in self.outputs.items():
            vals = ", ".join(f"{k} {_fmt(k, v)}" for k, v in metrics.items())
            out.append(f"  {name} [{self.specs[name].describe()}]: {vals}")
        if multi:
            worst = ", ".join(f"{m} {_fmt(m, v)} ({o})" for m, (o, v) in self.worst.items())
            out.append(f"  worst output per metric: {worst}")
        flags = self.flags
        if flags:
            out.append("  LOW (far from FP32; check before deploying): " + "; ".join(flags))
        return out

    def to_dict(self) -> dict:
        return {"outputs": self.outputs,
                "specs": {n: s.describe() for n, s in self.specs.items()},
                "worst": {m: {"output": o, "value": v} for m, (o, v) in self.worst.items()},
                "flags": self.flags}


def _fmt(metric: str, value: float) -> str:
    if metric.startswith(("top", "map-iou", "box-f1")):
        return f"{value:.2%}"
    return f"{value:.5f}" if metric.startswith("cosine") else f"{value:.4g}"


def compare_outputs(ref: Mapping[str, np.ndarray], cand: Mapping[str, np.ndarray],
                    metrics: Sequence[str] | None = None, *, labels: np.ndarray | None = None,
                    specs: Mapping[str, OutputSpec] | None = None,
                    input_layout: str = "NCHW") -> Comparison:
    """Each output scored with each metric that applies to it (default: `default_metrics`
    + max-abs), detection heads also per channel group ("cosine[scores]")."""
    missing = set(ref) - set(cand)
    if missing:
        raise ValueError(f"candidate lacks outputs {sorted(missing)}")
    specs = dict(specs or output_specs(ref, input_layout))
    names = list(metrics) if metrics is not None else [*default_metrics(specs), "max-abs"]
    per: dict[str, dict[str, float]] = {n: {} for n in ref}
    worst: dict[str, tuple[str, float]] = {}
    for mname in names:
        m = get_metric(mname)
        if m.needs_labels and labels is None:
            continue
        scores = m.per_output(ref, cand, labels, specs)
        for out, v in scores.items():
            per[out][mname] = v
        if scores:
            worst[mname] = m.worst(scores)
    for out, spec in specs.items():
        if spec.groups:
            for g, v in group_cosines(ref[out], cand[out], spec).items():
                per[out][f"cosine[{g}]"] = v
    return Comparison(per, specs, worst)
