"""`SensitivityResult`: what `ptq sensitivity` measured, and its JSON form (sensitivity.json).

The record is the hand-off to `ptq report`: every layer's variant metrics and its
gain over the baseline, the reference and baseline figures, the settings and the
auto-fallback outcome. `to_dict`/`from_dict` round-trip exactly; `load` names the
file on any problem. Schema (format "ptq.sensitivity/1")::

    {format, ptq_version, model: {path, sha256}, ranges: {path, model_sha256, algo},
     settings: {mode, pin, metrics, rank_metric, higher_is_better, eval_images, batch_size,
                backend, jobs, data, ...},
     reference: {metrics}, baseline: {metrics},
     layers: [{node, op_type, mode, metrics, delta, rank, seconds}, ...],   # sorted by mode, rank
     auto: null | {target, met, model_path, pins: [Pin.to_dict()], metrics, steps, stopped_by},
     timing: {reference_s, baseline_s, variants_s, per_variant_s, total_s}}

`delta` is always the gain of pinning (positive = keeping the node out of INT8
helps), whatever the metric's direction.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from ptq.atomic import write_json
from ptq.errors import PtqError
from ptq.quantization import Pin

FORMAT = "ptq.sensitivity/1"
STOP_REASONS = ("target", "max-pins", "time-budget", "exhausted")


@dataclass(frozen=True)
class LayerResult:
    """One variant: the node it is about, its metrics and their gain over the baseline."""

    node: str
    op_type: str
    mode: str
    metrics: dict[str, float]
    delta: dict[str, float]
    rank: int = 0
    seconds: float = 0.0

    def to_dict(self) -> dict:
        return {"node": self.node, "op_type": self.op_type, "mode": self.mode,
                "metrics": dict(self.metrics), "delta": dict(self.delta), "rank": self.rank,
                "seconds": self.seconds}

    @classmethod
    def from_dict(cls, d: dict) -> LayerResult:
        return cls(node=d["node"], op_type=d["op_type"], mode=d["mode"],
                   metrics={k: float(v) for k, v in d["metrics"].items()},
                   delta={k: float(v) for k, v in d["delta"].items()},
                   rank=int(d["rank"]), seconds=float(d["seconds"]))


@dataclass(frozen=True)
class AutoStep:
    """One greedy trial: the node tried, whether its pin was kept, the metrics after it."""

    pins: int
    metrics: dict[str, float]
    node: str | None = None
    accepted: bool = True
    seconds: float = 0.0

    def to_dict(self) -> dict:
        return {"pins": self.pins, "metrics": dict(self.metrics), "node": self.node,
                "accepted": self.accepted, "seconds": self.seconds}

    @classmethod
    def from_dict(cls, d: dict) -> AutoStep:
        return cls(pins=int(d["pins"]), metrics={k: float(v) for k, v in d["metrics"].items()},
                   node=d.get("node"), accepted=bool(d.get("accepted", True)),
                   seconds=float(d.get("seconds", 0.0)))


@dataclass(frozen=True)
class AutoResult:
    """The greedy fallback's outcome: the best model found and why each node was pinned."""

    target: str
    met: bool
    pins: tuple[Pin, ...]
    metrics: dict[str, float]
    steps: tuple[AutoStep, ...]
    stopped_by: str
    model_path: str | None = None

    def to_dict(self) -> dict:
        return {"target": self.target, "met": self.met, "model_path": self.model_path,
                "pins": [p.to_dict() for p in self.pins], "metrics": dict(self.metrics),
                "steps": [s.to_dict() for s in self.steps], "stopped_by": self.stopped_by}

    @classmethod
    def from_dict(cls, d: dict) -> AutoResult:
        if d["stopped_by"] not in STOP_REASONS:
            raise ValueError(f"unknown stopped_by {d['stopped_by']!r}")
        return cls(target=d["target"], met=bool(d["met"]), model_path=d.get("model_path"),
                   pins=tuple(Pin.from_dict(p) for p in d["pins"]),
                   metrics={k: float(v) for k, v in d["metrics"].items()},
                   steps=tuple(AutoStep.from_dict(s) for s in d["steps"]),
                   stopped_by=d["stopped_by"])


@dataclass(frozen=True)
class SensitivityResult:
    """Everything sensitivity.json holds (see the module docstring for the schema)."""

    model: dict
    ranges: dict
    settings: dict
    reference: dict
    baseline: dict
    layers: tuple[LayerResult, ...]
    auto: AutoResult | None = None
    timing: dict = field(default_factory=dict)
    ptq_version: str = ""

    def ranking(self, mode: str | None = None) -> list[LayerResult]:
        """Layers of one mode (default: the first mode measured), most sensitive first."""
        mode = mode or (self.layers[0].mode if self.layers else None)
        return sorted((r for r in self.layers if r.mode == mode), key=lambda r: r.rank)

    def to_dict(self) -> dict:
        return {"format": FORMAT, "ptq_version": self.ptq_version, "model": self.model,
                "ranges": self.ranges, "settings": self.settings, "reference": self.reference,
                "baseline": self.baseline, "layers": [r.to_dict() for r in self.layers],
                "auto": None if self.auto is None else self.auto.to_dict(), "timing": self.timing}

    @classmethod
    def from_dict(cls, d: dict) -> SensitivityResult:
        if d.get("format") != FORMAT:
            raise ValueError(f"not a ptq sensitivity record (format {d.get('format')!r}, "
                             f"expected {FORMAT!r})")
        return cls(model=d["model"], ranges=d["ranges"], settings=d["settings"],
                   reference=d["reference"], baseline=d["baseline"],
                   layers=tuple(LayerResult.from_dict(r) for r in d["layers"]),
                   auto=None if d.get("auto") is None else AutoResult.from_dict(d["auto"]),
                   timing=dict(d.get("timing", {})), ptq_version=d.get("ptq_version", ""))

    def save(self, path: str | Path) -> Path:
        return write_json(path, self.to_dict())

    @classmethod
    def load(cls, path: str | Path) -> SensitivityResult:
        path = Path(path)
        try:
            return cls.from_dict(json.loads(path.read_text()))
        except FileNotFoundError:
            raise PtqError("sensitivity file not found", path=path,
                           hint="run `ptq sensitivity` first; it writes sensitivity.json") from None
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            raise PtqError(f"not a valid ptq sensitivity file ({type(exc).__name__}: {exc})",
                           path=path, hint="regenerate it with `ptq sensitivity`") from None
