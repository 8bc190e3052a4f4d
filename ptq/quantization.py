"""`ptq.quantization`: FP32 ONNX + calibration ranges -> explicitly quantized ONNX for TensorRT.

    load/copy -> opset >= 13 -> pins (FP16/FP32, exclusions) -> plan Q/DQ from the rules
    -> every planned tensor has a range? -> insert Q/DQ -> FP16 Cast islands -> metadata
    -> finalize (ORT-compatible IR version + full onnx.checker)

The sensitivity analyzer builds one variant per layer through this same function, so
a call stays cheap (~80 ms on EfficientNet-Lite0, bench/quantize.py): no shape inference
beyond the final checker's, except when FP16 pins need tensor types. The produced
model records ptq.version, ptq.algo, ptq.pins (JSON) and ptq.source_sha256 in its
metadata_props: the report reads pin reasons from the model itself.
"""
from __future__ import annotations

import difflib
import hashlib
import json
import logging
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import onnx

from ptq.cache import CalibrationCache, read_cache
from ptq.errors import ConfigError, ModelLoadError
from ptq.graph.cast import NOT_PINNABLE, pin_float, pin_fp16
from ptq.graph.edit import copy_model, finalize, save_model
from ptq.graph.model import skeleton, data_dir, infer_types, load_model, model_sha256, name_unnamed_nodes
from ptq.graph.precisions import PLUMBING_OPS, Precision, layer_precisions, precision_counts
from ptq.graph.qdq import (FP16_OPSET, MIN_OPSET, QDQ_OPS, ensure_opset, insert_qdq, low_precision,
                          opset_of, plan_qdq)
from ptq.graph.rules import DEFAULT_OP_TYPES, RULES
from ptq.table import CalibrationTable
from ptq.version import __version__

log = logging.getLogger(__name__)

__all__ = ["Pin", "Precision", "QuantizeConfig", "QuantizeResult", "QuantizeSummary",
           "load_ranges_file", "match_nodes", "quantizable_nodes", "quantize",
           "quantize_with_summary", "save_model"]


@dataclass(frozen=True)
class Pin:
    """A node kept out of INT8, at which precision, and why (the report shows the reason)."""

    node: str
    precision: Precision
    reason: str = "user"

    def __post_init__(self) -> None:
        try:
            p = Precision.parse(self.precision)
        except ValueError as exc:
            raise ConfigError(f"pin for '{self.node}': {exc}") from None
        if p is Precision.INT8:
            raise ConfigError(f"pin for '{self.node}' must be fp16 or fp32, not int8")
        object.__setattr__(self, "precision", p)

    def to_dict(self) -> dict:
        return {"node": self.node, "precision": self.precision.value, "reason": self.reason}

    @classmethod
    def from_dict(cls, d: dict) -> Pin:
        return cls(d["node"], d["precision"], d.get("reason", "user"))


@dataclass(frozen=True)
class QuantizeConfig:
    algo: str = "entropy"                    # which amax of the table to use
    op_types: tuple[str, ...] | None = None  # None = the registry default set
    per_channel_weights: bool = True
    exclude: tuple[str, ...] = ()            # patterns kept FP32 with no Q/DQ (--fp32/--exclude)

    def to_dict(self) -> dict:
        return {"algo": self.algo, "op_types": list(self.op_types or DEFAULT_OP_TYPES),
                "per_channel_weights": self.per_channel_weights, "exclude": list(self.exclude)}


@dataclass(frozen=True)
class QuantizeSummary:
    qdq_pairs: int
    weight_pairs: int
    casts: int
    counts: dict[str, int]           # {"int8": n, "fp16": n, "fp32": n} over the model's layers
    pins: tuple[Pin, ...]
    notes: tuple[str, ...]
    algo: str
    source_sha256: str
    seconds: float

    def to_dict(self) -> dict:
        return {"qdq_pairs": self.qdq_pairs, "weight_pairs": self.weight_pairs,
                "casts": self.casts, "counts": dict(self.counts),
                "pins": [p.to_dict() for p in self.pins], "notes": list(self.notes),
                "algo": self.algo, "source_sha256": self.source_sha256, "seconds": self.seconds}


@dataclass(frozen=True)
class QuantizeResult:
    model: onnx.ModelProto
    summary: QuantizeSummary


Ranges = CalibrationTable | CalibrationCache | dict[str, float] | str | Path
Pins = Iterable[Pin] | dict[str, Precision | str]


def quantize(model: str | Path | onnx.ModelProto, ranges: Ranges, *, pins: Pins = (),
             config: QuantizeConfig = QuantizeConfig(),
             source_sha256: str | None = None) -> onnx.ModelProto:
    """The explicitly quantized model (the input model is never mutated).

    `source_sha256` is the hash of the model FILE, recorded as ptq.source_sha256; give it
    when passing a ModelProto loaded from a file (else the proto's serialization is hashed,
    ~50 ms on every call, and may differ from the file's bytes)."""
    return quantize_with_summary(model, ranges, pins=pins, config=config,
                                 source_sha256=source_sha256).model


def quantize_with_summary(model: str | Path | onnx.ModelProto, ranges: Ranges, *,
                          pins: Pins = (), config: QuantizeConfig = QuantizeConfig(),
                          source_sha256: str | None = None) -> QuantizeResult:
    """`quantize` plus what it did: Q/DQ pairs, layer counts per precision, pins, notes."""
    start = time.perf_counter()
    proto, sha = _source(model, hash_it=source_sha256 is None)
    sha = source_sha256 or sha
    low = low_precision(proto)
    rng = _ranges(ranges, config.algo)
    op_types, notes = _op_types(config)
    for minimum in (MIN_OPSET, FP16_OPSET):       # float16 scales need opset 19: re-plan after
        try:
            proto = ensure_opset(proto, minimum)
        except ModelLoadError as exc:  # name the file the user gave
            exc.path = exc.path or (str(model) if isinstance(model, (str, Path)) else None)
            raise
        pinned = resolve_pins(proto, pins, config.exclude)
        plan = plan_qdq(proto, op_types, set(pinned), per_channel=config.per_channel_weights)
        if not plan.typed_scales or opset_of(proto) >= FP16_OPSET:
            break
    notes += plan.notes
    _check_ranges(plan.activation_tensors(), rng, sha)
    out = insert_qdq(proto, plan, rng.amaxes, check=False)
    fp16 = {n for n, p in pinned.items() if p.precision is Precision.FP16}
    casts = 0
    types = _types(proto) if fp16 or low else {}
    if fp16:
        cast = pin_fp16(out, fp16, types, check=False)
        out, casts = cast.model, cast.casts
        notes += cast.notes
    fp32_islands = _fp32_islands(proto, pinned, types) if low else set()
    if fp32_islands:           # FP32 pins in a float16 model: cast those nodes up to FP32
        cast = pin_float(out, fp32_islands, types, to=onnx.TensorProto.FLOAT, check=False)
        out, casts = cast.model, casts + cast.casts
        notes += cast.notes
    pins_list = tuple(pinned.values())
    _set_metadata(out, {"ptq.version": __version__, "ptq.algo": rng.algo, "ptq.source_sha256": sha,
                        "ptq.pins": json.dumps([p.to_dict() for p in pins_list]),
                        "ptq.notes": json.dumps(notes)})
    finalize(out)
    if low:                    # a float16 model: read what each layer runs in from the graph
        counts = precision_counts(layer_precisions(out))
    else:
        layers = sum(1 for n in proto.graph.node if n.op_type not in PLUMBING_OPS)
        counts = {"int8": len(plan.int8_nodes), "fp16": len(fp16),
                  "fp32": layers - len(plan.int8_nodes) - len(fp16)}
    summary = QuantizeSummary(plan.pairs, len(set(plan.weights.values())), casts, counts,
                              pins_list, tuple(notes), rng.algo, sha, time.perf_counter() - start)
    return QuantizeResult(out, summary)


def quantizable_nodes(model: str | Path | onnx.ModelProto,
                      config: QuantizeConfig = QuantizeConfig()) -> list[str]:
    """Names of the nodes that would get INT8, in graph order (one sensitivity variant each)."""
    proto, _ = _source(model, hash_it=False)
    op_types, _ = _op_types(config)
    skip = set(resolve_pins(proto, (), config.exclude))
    plan = plan_qdq(proto, op_types, skip, per_channel=config.per_channel_weights)
    return [proto.graph.node[i].name for i in plan.int8_nodes]


def match_nodes(model: onnx.ModelProto, patterns: Iterable[str]) -> list[str]:
    """Node names matching any pattern, in graph order. A pattern is an exact name or a
    regular expression that must match the WHOLE name ("conv1" never matches "conv10");
    a pattern that matches nothing is a ConfigError listing the nearest names."""
    names = [n.name for n in model.graph.node]
    hits: set[str] = set()
    for pattern in patterns:
        if pattern in names:
            hits.add(pattern)
            continue
        try:
            regex = re.compile(pattern)
        except re.error as exc:
            raise ConfigError(f"node pattern {pattern!r} is not a valid regular expression ({exc})",
                              hint="escape special characters, e.g. 'blocks\\.1\\..*'") from None
        found = {n for n in names if regex.fullmatch(n)}
        if not found:
            raise ConfigError(f"node pattern {pattern!r} matches no node{_nearest(pattern, names)}",
                              hint="patterns match the whole node name (exact or full regex, "
                                   "e.g. 'blocks\\.4\\..*')")
        hits |= found
    return [n for n in names if n in hits]


def _nearest(text: str, names: list[str]) -> str:
    near = difflib.get_close_matches(text, names, n=5, cutoff=0.5) or \
        [n for n in names if n.startswith(text)][:5]
    return f"; nearest: {', '.join(near)}" if near else ""


def resolve_pins(model: onnx.ModelProto, pins: Pins, exclude: Sequence[str] = ()) -> dict[str, Pin]:
    """{node: Pin} in graph order: explicit pins, then FP32 pins for the exclude patterns."""
    items = [Pin(n, p) for n, p in pins.items()] if isinstance(pins, dict) else \
        [p if isinstance(p, Pin) else Pin.from_dict(p) for p in pins]
    names = [n.name for n in model.graph.node]
    known = set(names)
    out: dict[str, Pin] = {}
    for pin in items:
        if pin.node not in known:
            raise ConfigError(f"cannot pin {pin.node!r}: no node has that name"
                              f"{_nearest(pin.node, names)}", hint="pin nodes by ONNX node name")
        _add_pin(out, pin)
    for pattern in exclude:
        for node in match_nodes(model, [pattern]):
            _add_pin(out, Pin(node, Precision.FP32, f"excluded by pattern {pattern!r}"))
    order = {n: i for i, n in enumerate(names)}
    return dict(sorted(out.items(), key=lambda kv: order[kv[0]]))


def _add_pin(out: dict[str, Pin], pin: Pin) -> None:
    old = out.get(pin.node)
    if old is not None and old.precision is not pin.precision:
        raise ConfigError(f"node '{pin.node}' is pinned to both {old.precision.value} and "
                          f"{pin.precision.value}", hint="make the --fp16 and --fp32 patterns disjoint")
    out.setdefault(pin.node, pin)


def _source(model: str | Path | onnx.ModelProto, *, hash_it: bool = True
            ) -> tuple[onnx.ModelProto, str]:
    """(proto with every node named, sha256 of the source) without mutating the caller's proto."""
    if isinstance(model, (str, Path)):
        proto = load_model(model)
        sha = model_sha256(model) if hash_it else ""
    else:
        external = [t.name for t in model.graph.initializer
                    if t.data_location == onnx.TensorProto.EXTERNAL and not t.raw_data]
        if external and data_dir(model) is None:
            raise ModelLoadError(f"initializer '{external[0]}' is external data that was not loaded",
                                 hint="pass the model path, load it with ptq.graph.model.load_model, "
                                      "or onnx.load() it with its data files")
        sha = _proto_sha256(model) if hash_it else ""
        proto = model
        if any(not n.name for n in model.graph.node):
            proto = copy_model(model)
            name_unnamed_nodes(proto)
    qdq = next((n.name for n in proto.graph.node if n.op_type in QDQ_OPS), None)
    if qdq is not None:
        raise ModelLoadError(f"the model is already quantized (node '{qdq}' is a Q/DQ node)",
                             path=model if isinstance(model, (str, Path)) else None,
                             hint="quantize the FP32 model")
    return proto, sha


@dataclass(frozen=True)
class _Ranges:
    amaxes: dict[str, float]
    algo: str                 # recorded as ptq.algo
    origin: str | None        # the file they came from, for error messages
    sha256: str | None        # of the model they were calibrated on (tables only)


def load_ranges_file(path: str | Path) -> CalibrationTable | CalibrationCache:
    """ranges.json (or any ptq table) or a TensorRT calibration cache, told apart by content."""
    return CalibrationTable.load(path) if _is_json(Path(path)) else read_cache(path)


def _ranges(ranges: Ranges, algo: str) -> _Ranges:
    origin = None
    if isinstance(ranges, (str, Path)):
        origin = str(ranges)
        ranges = load_ranges_file(ranges)
    if isinstance(ranges, CalibrationTable):
        return _Ranges(ranges.amaxes(algo), algo, origin, ranges.model.get("sha256"))
    if isinstance(ranges, CalibrationCache):
        return _Ranges(ranges.amaxes, f"cache:{ranges.algorithm}", origin, None)
    if isinstance(ranges, dict):
        return _Ranges(dict(ranges), "custom", origin, None)
    raise ConfigError(f"ranges must be a CalibrationTable, CalibrationCache, dict or path, "
                      f"not {type(ranges).__name__}")


def _is_json(path: Path) -> bool:
    if path.suffix.lower() == ".json":
        return True
    try:
        with open(path, "rb") as fh:
            return fh.read(64).lstrip().startswith(b"{")
    except OSError:
        return False


def _op_types(config: QuantizeConfig) -> tuple[tuple[str, ...], list[str]]:
    if config.op_types is None:
        return DEFAULT_OP_TYPES, []
    unknown = [op for op in config.op_types if op not in RULES]
    notes = [f"op type {op!r} has no Q/DQ rule; its nodes stay FP32 (rules: {', '.join(RULES)})"
             for op in unknown]
    return tuple(op for op in config.op_types if op in RULES), notes


def _check_ranges(needed: list[str], rng: _Ranges, sha: str) -> None:
    missing = [t for t in needed if t not in rng.amaxes]
    other = bool(rng.sha256 and sha and rng.sha256 != sha)
    if missing:
        shown = ", ".join(repr(t) for t in missing[:5]) + (" ..." if len(missing) > 5 else "")
        raise ConfigError(f"the ranges have no entry for {len(missing)} of the {len(needed)} "
                          f"tensors to quantize ({shown}); ranges are from another model?"
                          + (" (they were computed on a file with another sha256)" if other else ""),
                          path=rng.origin, hint="calibrate this model with `ptq calibrate`, or keep "
                                            "the consumers of those tensors FP32 with --fp32")
    if other:
        log.warning("the ranges were computed on another file (sha256 %s..., model %s...); every "
                    "tensor name matches, so quantizing anyway", rng.sha256[:12], sha[:12])


def _fp32_islands(model: onnx.ModelProto, pinned: dict[str, Pin], types: dict[str, int]) -> set[str]:
    """FP32-pinned nodes of a float16 model that read a float16 tensor (pinnable ones)."""
    half = onnx.TensorProto.FLOAT16
    inits = {t.name: t.data_type for t in model.graph.initializer}
    return {n.name for n in model.graph.node
            if n.name in pinned and pinned[n.name].precision is Precision.FP32
            and n.op_type not in NOT_PINNABLE
            and any(types.get(x, inits.get(x)) == half for x in n.input if x)}


def _types(model: onnx.ModelProto) -> dict[str, int]:
    return {name: info.elem_type for name, info in infer_types(model).items()}


def _set_metadata(model: onnx.ModelProto, props: dict[str, str]) -> None:
    keep = [p for p in model.metadata_props if p.key not in props]
    del model.metadata_props[:]
    model.metadata_props.extend(keep)
    onnx.helper.set_model_props(model, {**{p.key: p.value for p in keep}, **props})


def _proto_sha256(model: onnx.ModelProto) -> str:
    """Hash of an in-memory model; one over protobuf's limit is hashed tensor by tensor."""
    if model.ByteSize() < 1_800_000_000:
        return hashlib.sha256(model.SerializeToString()).hexdigest()
    h = hashlib.sha256()
    for t in model.graph.initializer:
        h.update(t.SerializeToString())
    h.update(skeleton(model).SerializeToString())
    return h.hexdigest()
