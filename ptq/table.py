"""`CalibrationTable`: every tensor's statistics and ranges, and its JSON form (ranges.json).

The table is the hand-off between stages: calibrate writes it, quantize reads
amaxes from it, the report plots its histograms. `to_dict`/`from_dict` round-trip
exactly; `load` validates and names the file on any problem.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ptq.atomic import finish_interrupted, write_text
from ptq.calibrators import Method
from ptq.errors import ConfigError, PtqError
from ptq.histogram import Histogram

FORMAT = "ptq.ranges/1"


@dataclass
class TensorRange:
    """One activation: where it comes from, what was seen, and each algorithm's amax."""

    name: str
    producer: str | None
    op_type: str
    shape: list | None
    dtype: str
    min: float
    max: float
    count: int
    histogram: Histogram
    amax: dict[str, float] = field(default_factory=dict)
    flags: list[str] = field(default_factory=list)
    # `auto` only: {"method": chosen algorithm, "relative_error": {algorithm: error / chosen's}}
    choice: dict | None = None
    # mean per channel (axis 1) over the calibration data: the bias correction of its consumers
    channel_mean: list[float] | None = None

    def to_dict(self) -> dict:
        counts, width = self.histogram.finalized()
        d = {
            "name": self.name, "producer": self.producer, "op_type": self.op_type,
            "shape": self.shape, "dtype": self.dtype, "min": self.min, "max": self.max,
            "count": self.count, "amax": dict(self.amax), "flags": list(self.flags),
            "histogram": {"num_bins": self.histogram.num_bins, "bin_width": width,
                          "counts": counts.tolist(),
                          "edges": (np.arange(len(counts) + 1) * width).tolist()},
        }
        if self.choice is not None:
            d["choice"] = self.choice
        if self.channel_mean is not None:
            d["channel_mean"] = [float(v) for v in self.channel_mean]
        return d

    @classmethod
    def from_dict(cls, d: dict) -> TensorRange:
        h = d["histogram"]
        counts = np.asarray(h["counts"], np.int64)
        if h["bin_width"] and len(counts) < h["num_bins"]:  # saved without the empty top bins
            counts = np.concatenate([counts, np.zeros(h["num_bins"] - len(counts), np.int64)])
        hist = (Histogram(h["num_bins"], 0.0, np.zeros(0, np.int64), int(counts.sum()))
                if h["bin_width"] == 0 else Histogram(h["num_bins"], float(h["bin_width"]), counts))
        return cls(name=d["name"], producer=d["producer"], op_type=d["op_type"], shape=d["shape"],
                   dtype=d["dtype"], min=float(d["min"]), max=float(d["max"]), count=int(d["count"]),
                   histogram=hist, amax={k: float(v) for k, v in d["amax"].items()},
                   flags=list(d.get("flags", [])), choice=d.get("choice"),
                   channel_mean=d.get("channel_mean"))


@dataclass
class CalibrationTable:
    """Ranges for every activation of one model, plus how they were obtained."""

    tensors: dict[str, TensorRange]
    model: dict            # path, sha256, inputs, opset
    data: dict             # source, images used, skipped, preprocessing, batch size, seed
    settings: dict         # num_bins, algorithms and their parameters, providers
    ptq_version: str = ""

    @property
    def methods(self) -> list[str]:
        return list(self.settings.get("algorithms", []))

    def amax(self, name: str, method: str | Method) -> float:
        key = method.value if isinstance(method, Method) else method
        try:
            return self.tensors[name].amax[key]
        except KeyError:
            raise ConfigError(f"no '{key}' range for tensor '{name}' "
                              f"(table has {', '.join(self.methods)})") from None

    def amaxes(self, method: str | Method) -> dict[str, float]:
        key = method.value if isinstance(method, Method) else method
        if key not in self.methods:
            raise ConfigError(f"the ranges have no '{key}' algorithm (available: "
                              f"{', '.join(self.methods)})",
                              hint=f"re-run ptq calibrate with --algo {key} or --algo all")
        return {n: t.amax[key] for n, t in self.tensors.items()}

    def channel_means(self) -> dict[str, np.ndarray]:
        """Per-channel means of every tensor that has them (`auto` tables), converted once:
        the sensitivity analyzer quantizes hundreds of variants from one table."""
        key = tuple((n, id(t.channel_mean)) for n, t in self.tensors.items())
        if getattr(self, "_means_key", None) != key:
            self._means = {n: np.asarray(t.channel_mean, np.float64)
                           for n, t in self.tensors.items() if t.channel_mean is not None}
            self._means_key = key
        return self._means

    def to_dict(self) -> dict:
        return {"format": FORMAT, "ptq_version": self.ptq_version, "model": self.model,
                "data": self.data, "settings": self.settings,
                "tensors": [t.to_dict() for t in self.tensors.values()]}

    @classmethod
    def from_dict(cls, d: dict) -> CalibrationTable:
        if d.get("format") != FORMAT:
            raise ValueError(f"not a ptq ranges table (format {d.get('format')!r}, expected {FORMAT!r})")
        tensors = [TensorRange.from_dict(t) for t in d["tensors"]]
        for t in tensors:
            bad = {k: v for k, v in t.amax.items() if not (math.isfinite(v) and v > 0)}
            if bad:
                raise ValueError(f"tensor '{t.name}' has invalid amax {bad}")
            if not (math.isfinite(t.min) and math.isfinite(t.max) and t.min <= t.max):
                raise ValueError(f"tensor '{t.name}' has invalid min/max {t.min}/{t.max}")
        return cls(tensors={t.name: t for t in tensors}, model=d["model"], data=d["data"],
                   settings=d["settings"], ptq_version=d.get("ptq_version", ""))

    def to_json(self) -> str:
        """Indented header, one line per tensor: readable in an editor and diff-friendly,
        at ~40% of the size of fully indented JSON (histograms are thousands of numbers)."""
        d = self.to_dict()
        tensors = d.pop("tensors")
        head = json.dumps(d, indent=1, allow_nan=False)[:-2]
        rows = ",\n".join("  " + json.dumps(t, allow_nan=False, separators=(",", ":"))
                           for t in tensors)
        return f'{head},\n "tensors": [\n{rows}\n ]\n}}\n'

    def save(self, path: str | Path) -> Path:
        return write_text(path, self.to_json())

    @classmethod
    def load(cls, path: str | Path) -> CalibrationTable:
        path = Path(path)
        finish_interrupted(path.parent)  # a set switch killed half-way is completed first
        try:
            return cls.from_dict(json.loads(path.read_text()))
        except FileNotFoundError:
            raise PtqError("ranges file not found", path=path,
                           hint="run `ptq calibrate` first; it writes ranges.json") from None
        except (json.JSONDecodeError, AttributeError, KeyError, TypeError, ValueError) as exc:
            raise PtqError(f"not a valid ptq ranges file ({type(exc).__name__}: {exc})",
                           path=path, hint="regenerate it with `ptq calibrate`") from None
