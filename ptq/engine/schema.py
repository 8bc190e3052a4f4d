"""Read the engine-layer JSON and per-layer profile JSON that trtexec / TensorRT write.

Layer JSON (`trtexec --exportLayerInfo=F --profilingVerbosity=detailed`, or
`IEngineInspector.get_engine_information(JSON)`) comes in two documented shapes:

    TensorRT 8.x-10.x  {"Layers": [...], "Bindings": ["in", "out"]}; tensors carry one
                       "Format/Datatype" string ("Row major linear FP32"); TensorRT 10 adds
                       per layer "Metadata": "[ONNX Layer: /conv1/Conv]..." (the fused ONNX nodes)
    TensorRT 11.x      "Bindings" replaced by "I/O Tensors" (objects with Name, IOMode,
                       DataType, Dimensions, ProfileInfo); "Format/Datatype" may be split into
                       "Format", "Datatype", "StrideOrder", "Strides" (TensorRT 11 migration
                       guide "tensorrt-10x-to-11x-IEngineInspector")

Both are read into one `Engine`; anything else is refused with a one-line error. Layers
written with `--profilingVerbosity=layer_names_only` are plain strings: they are kept, with
type and precision unknown.
"""
from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

from ptq.errors import DataError, exception_line


class EngineFileError(DataError):
    """An engine-layer or profile JSON that is missing, malformed or of an unknown schema."""


_DTYPE_WORDS = {"fp32": "FP32", "float": "FP32", "fp16": "FP16", "half": "FP16", "bf16": "BF16",
                "int8": "INT8", "fp8": "FP8", "int4": "INT4", "fp4": "FP4", "int32": "INT32",
                "int64": "INT64", "bool": "BOOL", "uint8": "UINT8", "tf32": "FP32"}
_DTYPE_RE = re.compile(r"\b(" + "|".join(_DTYPE_WORDS) + r")\b", re.IGNORECASE)
_ONNX_LAYER_RE = re.compile(r"\[ONNX Layer: ([^\]]+)\]")
_REFORMAT_FOR_RE = re.compile(r"^Reformatting CopyNode for (Input|Output) Tensor (\d+) to (.+)$")


def dtype_of(text: str | None) -> str | None:
    """'Thirty-two wide channel vectorized row major Int8 format' -> 'INT8' (last dtype word)."""
    if not text or not isinstance(text, str):
        return None
    found = _DTYPE_RE.findall(text)
    return _DTYPE_WORDS[found[-1].lower()] if found else None


@dataclass(frozen=True)
class TensorDesc:
    """One input or output of an engine layer."""

    name: str
    dims: tuple[int, ...] | None
    format: str | None
    dtype: str | None            # normalised: FP32, FP16, INT8, ...


@dataclass
class EngineLayer:
    """One engine layer: what TensorRT built from one or more ONNX nodes."""

    index: int
    name: str
    type: str                    # LayerType: CaskConvolution, Reformat, NoOp, ...
    inputs: list[TensorDesc] = field(default_factory=list)
    outputs: list[TensorDesc] = field(default_factory=list)
    origin: str | None = None    # QDQ, REFORMAT, ... (what made TensorRT add the layer)
    tactic: str | None = None
    metadata: str | None = None
    onnx_nodes: list[str] = field(default_factory=list)
    time_ms: float | None = None  # average per inference, from the profile
    share: float | None = None    # of the profiled total, 0..1

    @property
    def precision(self) -> str | None:
        """The type the layer computes in: its first input's (a conv with INT8 input and an
        FP32 output is an INT8 kernel), else its first output's."""
        for t in [*self.inputs, *self.outputs]:
            if t.dtype:
                return t.dtype
        return None

    @property
    def out_precision(self) -> str | None:
        return next((t.dtype for t in self.outputs if t.dtype), None)

    @property
    def is_reformat(self) -> bool:
        """A real data conversion (LayerType Reformat); 'Reformatting CopyNode' NoOps that
        TensorRT elided cost nothing and are not counted."""
        return self.type == "Reformat"

    @property
    def kind(self) -> str:
        t = self.type.lower()
        if "conv" in t or "gemm" in t or "matrixmultiply" in t:
            return "conv"
        if "pool" in t:
            return "pool"
        return {"reformat": "reformat", "noop": "noop"}.get(t, t)

    def reformat_source(self) -> str:
        """Why this reformat exists: the Q/DQ node it came from, or the layer whose input or
        output format it adapts."""
        m = _REFORMAT_FOR_RE.match(self.name)
        if m:
            return f"{m.group(1).lower()} {m.group(2)} of {m.group(3)}"
        if self.origin == "QDQ":
            return f"unfused Q/DQ {self.name}"
        return self.name

    def to_dict(self) -> dict:
        return {"index": self.index, "name": self.name, "type": self.type, "origin": self.origin,
                "precision": self.precision, "out_precision": self.out_precision,
                "tactic": self.tactic, "onnx_nodes": self.onnx_nodes,
                "time_ms": self.time_ms, "share": self.share, "reformat": self.is_reformat,
                "inputs": [t.__dict__ | {"dims": list(t.dims) if t.dims else None}
                           for t in self.inputs],
                "outputs": [t.__dict__ | {"dims": list(t.dims) if t.dims else None}
                            for t in self.outputs]}


@dataclass
class Engine:
    """An engine's layers and I/O tensors, with the schema they were read from."""

    path: str
    schema: str                  # "trt8-10" or "trt11"
    layers: list[EngineLayer]
    io_tensors: list[dict]       # {"name", "mode": Input|Output|None, "dtype", "dims"}
    profiled: bool = False

    @property
    def total_ms(self) -> float | None:
        times = [la.time_ms for la in self.layers if la.time_ms is not None]
        return sum(times) if times else None

    def by_name(self) -> dict[str, EngineLayer]:
        return {la.name: la for la in self.layers}


def _read_json(path: str | Path, what: str):
    path = Path(path)
    if path.is_dir():
        raise EngineFileError(f"is a folder, not the {what}", path=path,
                              hint="pass the file trtexec wrote")
    if not path.is_file():
        raise EngineFileError(f"{what} not found", path=path, hint="check the path")
    if path.suffix.lower() in (".onnx", ".plan", ".engine", ".trt"):
        raise EngineFileError(f"a {path.suffix} file, not the {what}", path=path,
                              hint="pass the JSON of trtexec --exportLayerInfo=F "
                                   "(or --exportProfile=F for --profile)")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise EngineFileError("not a text file (not UTF-8)", path=path,
                              hint=f"pass the {what} trtexec wrote") from None
    except OSError as exc:
        raise EngineFileError(f"cannot be read ({exc.strerror or exc})", path=path,
                              hint="check the file's permissions") from None
    if not text.strip():
        raise EngineFileError(f"is empty (the {what} was not written, or was truncated)",
                              path=path, hint="rerun trtexec and let it finish")
    try:
        return json.loads(text, parse_constant=_no_constant)
    except json.JSONDecodeError as exc:
        raise EngineFileError(f"not valid JSON ({exc.msg} at line {exc.lineno}; truncated?)",
                              path=path, hint=f"pass the {what} trtexec wrote, unedited"
                              ) from None
    except (ValueError, RecursionError) as exc:
        raise EngineFileError(f"not valid JSON ({exception_line(exc)})", path=path,
                              hint=f"pass the {what} trtexec wrote, unedited") from None


def _no_constant(name: str):
    """trtexec writes finite numbers only; NaN/Infinity mean an edited or broken file."""
    raise ValueError(f"{name} is not a valid number here")


def _text(value) -> str | None:
    """A free-text field (Origin, TacticName, LayerType) as a string, or None."""
    if value is None or isinstance(value, (dict, list)):
        return None
    return str(value)


def _list(raw: dict, key: str, path, what: str) -> list:
    value = raw.get(key, [])
    if value is None:
        return []
    if not isinstance(value, list):
        raise EngineFileError(f"{what} '{key}' is a {type(value).__name__}, not a list",
                              path=path, hint="pass the JSON of --exportLayerInfo, unedited")
    return value


def _tensor(raw, path) -> TensorDesc:
    if isinstance(raw, str):
        return TensorDesc(raw, None, None, None)
    if not isinstance(raw, dict):
        raise EngineFileError(f"a layer input/output is a {type(raw).__name__}, not an object",
                              path=path, hint="pass the JSON of --exportLayerInfo")
    fmt = raw.get("Format/Datatype")
    dtype_text = raw.get("Datatype", raw.get("DataType"))
    if fmt is None:                                    # TensorRT 11 split form
        fmt = raw.get("Format")
    dims = raw.get("Dimensions")
    if not isinstance(dims, list) or not all(isinstance(d, int) for d in dims):
        dims = None
    return TensorDesc(str(raw.get("Name", "")), tuple(dims) if dims is not None else None,
                      _text(fmt), dtype_of(dtype_text) or dtype_of(fmt))


def onnx_nodes_of(name: str, metadata: str | None) -> list[str]:
    """The ONNX nodes a layer fused: TensorRT 10's `[ONNX Layer: X]` metadata when present,
    else the '+'-joined parts of the layer name (TensorRT 8 names layers after their nodes;
    weight names and TensorRT-made parts are kept, `int8_intent` matches against the model)."""
    if metadata:
        found = _ONNX_LAYER_RE.findall(metadata)
        if found:
            return list(dict.fromkeys(found))
    m = _REFORMAT_FOR_RE.match(name)
    if m:
        return []
    parts = []
    for part in name.split(" + "):
        part = part.strip()
        if part.startswith("PWN(") and part.endswith(")"):
            parts += [p.strip() for p in part[4:-1].split(",")]
        elif part:
            parts.append(part)
    return list(dict.fromkeys(parts))


def load_engine(path: str | Path, profile: str | Path | None = None) -> Engine:
    """Read a layer-information JSON (either schema), with an optional profile JSON."""
    data = _read_json(path, "engine layer JSON")
    if not isinstance(data, dict) or not isinstance(data.get("Layers"), list):
        keys = ", ".join(list(data)[:5]) if isinstance(data, dict) else type(data).__name__
        raise EngineFileError(f"not a TensorRT engine-layer JSON (expected a top-level "
                              f"'Layers' list; found {keys or 'nothing'})", path=path,
                              hint="write it with trtexec --exportLayerInfo=F "
                                   "--profilingVerbosity=detailed")
    if not data["Layers"]:
        raise EngineFileError("the engine JSON lists no layers", path=path,
                              hint="rebuild with trtexec --exportLayerInfo=F "
                                   "--profilingVerbosity=detailed")
    if "I/O Tensors" in data:
        schema = "trt11"
        io = []
        for t in _list(data, "I/O Tensors", path, "the engine's"):
            if not isinstance(t, dict) or "Name" not in t:
                raise EngineFileError("an 'I/O Tensors' entry has no Name", path=path,
                                      hint="pass the JSON TensorRT 11 wrote, unedited")
            dims = t.get("Dimensions")
            io.append({"name": str(t["Name"]), "mode": _text(t.get("IOMode")),
                       "dtype": dtype_of(t.get("DataType")),
                       "dims": dims if isinstance(dims, list) and
                       all(isinstance(d, int) for d in dims) else None})
    else:
        schema = "trt8-10"
        io = [{"name": b, "mode": None, "dtype": None, "dims": None}
              for b in _list(data, "Bindings", path, "the engine's") if isinstance(b, str)]
    layers = []
    for i, raw in enumerate(data["Layers"]):
        if isinstance(raw, str):                       # layer_names_only verbosity
            layers.append(EngineLayer(i, raw, "Unknown", onnx_nodes=onnx_nodes_of(raw, None)))
            continue
        if not isinstance(raw, dict) or "Name" not in raw:
            raise EngineFileError(f"layer {i} has no Name", path=path,
                                  hint="pass the JSON of --exportLayerInfo, unedited")
        if not isinstance(raw["Name"], str) or not raw["Name"]:
            raise EngineFileError(f"layer {i} has an empty or non-text Name", path=path,
                                  hint="pass the JSON of --exportLayerInfo, unedited")
        name = raw["Name"]
        meta = raw.get("Metadata")
        layers.append(EngineLayer(
            index=i, name=name, type=_text(raw.get("LayerType")) or "Unknown",
            inputs=[_tensor(t, path) for t in _list(raw, "Inputs", path, f"layer {i}'s")],
            outputs=[_tensor(t, path) for t in _list(raw, "Outputs", path, f"layer {i}'s")],
            origin=_text(raw.get("Origin")),
            tactic=_text(raw.get("TacticName")) or _text(raw.get("TacticValue")),
            metadata=meta if isinstance(meta, str) else None,
            onnx_nodes=onnx_nodes_of(name, meta if isinstance(meta, str) else None)))
    produced = {t.name for la in layers for t in la.outputs}
    if io and io[0]["mode"] is None and produced:      # TRT 8-10: modes from the layer graph
        for t in io:
            t["mode"] = "Output" if t["name"] in produced else "Input"
    engine = Engine(str(path), schema, layers, io)
    if profile is not None:
        attach_profile(engine, load_profile(profile), source=profile)
    return engine


def load_profile(path: str | Path) -> dict[str, float]:
    """`--exportProfile` JSON -> {layer name: average ms per inference}.

    The file is `[{"count": N}, {"name", "timeMs", "averageMs", "medianMs", "percentage"}, ...]`;
    trtexec writes one such list per profile when there are several; the first is used."""
    data = _read_json(path, "profile JSON")
    if isinstance(data, list) and data and isinstance(data[0], list):
        data = data[0]
    if not isinstance(data, list) or not data:
        raise EngineFileError("not a trtexec profile (expected a JSON list)", path=path,
                              hint="write it with trtexec --exportProfile=F")
    out: dict[str, float] = {}
    for rec in data:
        if isinstance(rec, dict) and "count" in rec and "name" not in rec:
            continue
        ms = rec.get("averageMs", rec.get("timeMs")) if isinstance(rec, dict) else None
        if not isinstance(rec, dict) or "name" not in rec or isinstance(ms, bool) or \
                not isinstance(ms, (int, float)):
            raise EngineFileError(f"a profile record lacks name/averageMs: {str(rec)[:60]}",
                                  path=path, hint="write it with trtexec --exportProfile=F")
        if not math.isfinite(ms) or ms < 0:
            raise EngineFileError(f"layer {str(rec['name'])[:60]!r} has a time of {ms} ms "
                                  "(times are finite and >= 0)", path=path,
                                  hint="pass the profile trtexec wrote, unedited")
        out[str(rec["name"])] = out.get(str(rec["name"]), 0.0) + float(ms)
    if not out:
        raise EngineFileError("the profile has no layer records (only a count)", path=path,
                              hint="write it with trtexec --exportProfile=F after a run that "
                                   "timed inference")
    return out


def attach_profile(engine: Engine, times: dict[str, float],
                   source: str | Path | None = None) -> None:
    """Per-layer time and share; a profile from another engine is refused (the error names
    `source`, the profile file, when given)."""
    names = {la.name for la in engine.layers}
    unknown = [n for n in times if n not in names]
    if unknown and len(unknown) * 2 > len(times):
        raise EngineFileError(f"the profile does not belong to {engine.path} ({len(unknown)} "
                              f"of {len(times)} profiled layers are not in it, e.g. "
                              f"{unknown[0]!r})", path=source or engine.path,
                              hint="pass the profile of the same trtexec run")
    total = sum(times.values())
    for la in engine.layers:
        if la.name in times:
            la.time_ms = times[la.name]
            la.share = times[la.name] / total if total > 0 else 0.0
    engine.profiled = True
