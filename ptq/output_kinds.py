"""How each model output is read: its kind and class axis, from its shape and the input layout.

`infer_spec` decides (rules in its docstring); `parse_spec_override` reads the CLI's
`--output-kind NAME=KIND[:AXIS]`. ptq.metrics uses the spec to pick the metrics that mean
something for an output (no top-1 on a probability map; per-frame top-1 on a CTC sequence).
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Mapping, Sequence

import numpy as np

from ptq.errors import ConfigError
from ptq.maps import MAP_THRESHOLD

DETECTION_ASPECT = 8    # 3-D output with one axis >= 8x the other: a detection head
KINDS = ("classes", "sequence", "dense", "map", "detection", "tensor")


@dataclass(frozen=True)
class OutputSpec:
    """How one output is read: its kind, its class axis (None: no top-k) and, for
    detection heads, named channel groups along `group_axis` scored separately."""

    kind: str = "tensor"
    class_axis: int | None = None
    threshold: float = MAP_THRESHOLD
    groups: tuple[tuple[str, int, int | None], ...] = ()  # (name, start, stop) along group_axis
    group_axis: int | None = None

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ConfigError(f"unknown output kind {self.kind!r}; choose from {', '.join(KINDS)}")

    def describe(self) -> str:
        axis = "" if self.class_axis is None else f", class axis {self.class_axis}"
        groups = "" if not self.groups else \
            f", groups {' '.join(g[0] for g in self.groups)} on axis {self.group_axis}"
        return f"{self.kind}{axis}{groups}"


def infer_spec(shape: Sequence[int], input_layout: str = "NCHW",
               sample: np.ndarray | None = None) -> OutputSpec:
    """The reading of an output from its shape (sample axis first), documented rules:

    - [N] or [N,1]: a score per sample: `tensor` (no top-k).
    - [N,C], C > 1: `classes`, class axis 1.
    - [N,A,B]: `sequence` with the class axis LAST (CTC recognizers [N,T,C], token
      logits), unless the values are not class scores and one axis is >= 8x the other:
      then a `detection` head whose attributes lie on the short axis (YOLOv5 [N,25200,85],
      YOLOv8 [N,84,8400]), scored as groups "box" (attributes 0-3) and "scores" (the rest:
      objectness and class scores) so the box coordinates cannot hide broken scores.
      "Class scores" = probabilities along the last axis (non-negative, summing to 1), as
      a CTC head's Softmax gives; without a sample to look at, `sequence`.
    - [N,C,H,W] (or [N,H,W,C] when the model's image input is NHWC): C == 1 is a `map`
      (DBNet probability, heat map): no top-1, map IoU and box agreement instead; C > 1 is
      `dense` per-pixel classes on the channel axis.
    - anything else: `tensor` (cosine and errors only).
    """
    shape = tuple(int(d) for d in shape)
    nd = len(shape)
    if nd <= 1 or (nd == 2 and shape[1] == 1):
        return OutputSpec("tensor")
    if nd == 2:
        return OutputSpec("classes", 1)
    if nd == 3:
        a, b = shape[1], shape[2]
        if sample is not None and not _is_distribution(sample) and \
                max(a, b) >= DETECTION_ASPECT * min(a, b) and min(a, b) > 4:
            axis = 1 if a < b else 2
            return OutputSpec("detection", None, groups=(("box", 0, 4), ("scores", 4, None)),
                              group_axis=axis)
        return OutputSpec("sequence", 2)
    if nd == 4:
        axis = 3 if input_layout.upper() == "NHWC" else 1
        return OutputSpec("map") if shape[axis] == 1 else OutputSpec("dense", axis)
    return OutputSpec("tensor")


def _is_distribution(x: np.ndarray) -> bool:
    x = np.asarray(x, np.float64)
    return bool(x.size and x.min() >= -1e-6 and np.allclose(x.sum(-1), 1.0, atol=1e-3))


def parse_spec_override(text: str) -> tuple[str, OutputSpec]:
    """'NAME=KIND[:AXIS]' (e.g. 'softmax_2.tmp_0=sequence:2', 'maps=map', 'out=classes:-1',
    'heads=detection:1') -> (name, spec). AXIS is the class axis, or for `detection` the
    attribute axis; for `map` it is a threshold ('maps=map:0.5')."""
    name, sep, rest = text.rpartition("=")
    kind, _, arg = rest.partition(":")
    if not sep or not name or kind not in KINDS:
        raise ConfigError(f"bad output spec {text!r}: expected NAME=KIND[:AXIS] with KIND one of "
                          f"{', '.join(KINDS)}", hint="e.g. --output-kind probs=sequence:2 maps=map:0.3")
    try:
        if kind == "map":
            return name, OutputSpec("map", threshold=float(arg) if arg else MAP_THRESHOLD)
        axis = int(arg) if arg else None
    except ValueError:
        raise ConfigError(f"bad output spec {text!r}: {arg!r} is not a number",
                          hint="e.g. --output-kind probs=sequence:2") from None
    if kind == "detection":
        return name, OutputSpec("detection", groups=(("box", 0, 4), ("scores", 4, None)),
                                group_axis=1 if axis is None else axis)
    if kind in ("classes", "sequence", "dense"):
        default = {"classes": 1, "sequence": -1, "dense": 1}[kind]
        return name, OutputSpec(kind, default if axis is None else axis)
    return name, OutputSpec("tensor")


def output_specs(outputs: Mapping[str, np.ndarray], input_layout: str = "NCHW",
                 overrides: Mapping[str, OutputSpec] | None = None) -> dict[str, OutputSpec]:
    """A spec for every output (overrides by name win; an unknown name is an error)."""
    overrides = dict(overrides or {})
    unknown = set(overrides) - set(outputs)
    if unknown:
        raise ConfigError(f"--output-kind names {sorted(unknown)} are not outputs of the model",
                          hint=f"outputs: {', '.join(outputs)}")
    out = {}
    for name, value in outputs.items():
        spec = overrides.get(name)
        if spec is None:
            spec = infer_spec(value.shape, input_layout, value[:4] if value.ndim else None)
        elif spec.class_axis is not None and value.ndim:
            spec = replace(spec, class_axis=spec.class_axis % value.ndim)
        out[name] = spec
    return out
