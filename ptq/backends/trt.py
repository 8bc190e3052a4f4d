"""TensorRT runner: a strongly typed engine built from a QDQ/Cast ONNX, run on the GPU.

Imported only when `--backend trt` is asked for; `import ptq` never imports tensorrt.

    TrtBuilder   one per analysis: logger, builder and a timing cache whose bytes are
                 carried from build to build (create_timing_cache(previous) ->
                 build_serialized_network -> get_timing_cache().serialize()), so the
                 tactics timed for variant 1 are reused by variants 2..n.
    TrtRunner    the `Runner` protocol: builds (or reuses) a plan in __enter__, then
                 infer(feeds) copies inputs to the device, execute_async_v3 on its own
                 stream, copies outputs back.

The network is created with `1 << int(NetworkDefinitionCreationFlag.STRONGLY_TYPED)`
(never a literal: the enum values changed between TensorRT 10 and 11) and no
precision builder flags: the Q/DQ and Cast nodes in the ONNX decide every layer's
type (TENSORRT.md 4.1-4.5). TF32 is cleared so FP32 layers stay FP32, as in the
ONNX Runtime reference.

Device buffers are torch CUDA tensors: torch is the one CUDA array library users of
TensorRT almost always have, it gives allocation, host<->device copies and streams
in three lines, and it avoids a ctypes wrapper around libcudart (cuda-python would
be an extra dependency with a version-coupled API).

WHAT HAS AND HAS NOT BEEN RUN. TensorRT cannot be installed on the machines ptq is
developed on (no NVIDIA GPU, no NVIDIA package index). Run and tested: the
unavailable paths only (`require_tensorrt()` raising BackendUnavailable with the
install hint when tensorrt is missing, and when torch has no CUDA device), through
the library and the CLI. NOT run, anywhere: engine building, the timing cache,
inference, dtype mapping, optimization profiles (their shapes, `profile_shapes`, and
the trtexec flags, `trtexec_shape_flags`, are pure and tested). That code follows the TensorRT 11 Python API names
verified from source in TENSORRT.md 4.5 and is kept to the minimum.
"""
from __future__ import annotations

import logging
import shlex
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from ptq.errors import BackendUnavailable, ConfigError, InternalError, PtqError
from ptq.graph.edit import compatible_ir_version, copy_model, finalize
from ptq.graph.model import TensorInfo, graph_inputs

log = logging.getLogger(__name__)

INSTALL_HINT = ('pip install "ptq[tensorrt]" on a machine with an NVIDIA GPU and driver '
                '(torch with CUDA is used for device buffers)')


@dataclass(frozen=True)
class ShapeRange:
    """One dynamic input's optimization profile: the shapes TensorRT builds for."""

    name: str
    min: tuple[int, ...]
    opt: tuple[int, ...]
    max: tuple[int, ...]

    @property
    def fixed(self) -> bool:
        return self.min == self.opt == self.max


def _dims(text: str, where: str) -> tuple[int, ...]:
    try:
        dims = tuple(int(d) for d in text.lower().split("x"))
    except ValueError:
        dims = ()
    if not dims or min(dims) <= 0:
        raise ConfigError(f"bad shape {text!r} in {where!r}: expected positive dims like 1x3x640x640",
                          hint="e.g. --shapes x:1x3x640x640 or x:1x3x320x320/4x3x640x640/8x3x960x960")
    return dims


def parse_shapes(text: str | None) -> dict[str, ShapeRange]:
    """'NAME:DIMS[,NAME:DIMS]' (trtexec's --shapes: min = opt = max) or NAME:MIN/OPT/MAX."""
    out: dict[str, ShapeRange] = {}
    for item in (text or "").split(","):
        if not item.strip():
            continue
        name, sep, spec = item.strip().rpartition(":")
        if not sep or not name:
            raise ConfigError(f"bad --shapes entry {item!r}: expected NAME:DIMS",
                              hint="e.g. --shapes x:1x3x640x640")
        parts = [_dims(p, item) for p in spec.split("/")]
        if len(parts) == 1:
            parts *= 3
        if len(parts) != 3 or len({len(p) for p in parts}) != 1:
            raise ConfigError(f"bad --shapes entry {item!r}: give DIMS or MIN/OPT/MAX of one rank",
                              hint="e.g. x:1x3x320x320/4x3x640x640/8x3x960x960")
        if any(a > b for lo, hi in zip(parts, parts[1:]) for a, b in zip(lo, hi)):
            raise ConfigError(f"bad --shapes entry {item!r}: need MIN <= OPT <= MAX in every dim")
        out[name] = ShapeRange(name, *parts)
    return out


def profile_shapes(inputs: list[TensorInfo], observed: dict[str, tuple[int, ...]] | None = None,
                   given: dict[str, ShapeRange] | None = None) -> dict[str, ShapeRange]:
    """Optimization profile of every input with a dynamic dim (static inputs need none).

    `given` (--shapes) wins. Otherwise from the data (`observed`: one batch's shape): opt =
    max = that shape and min = the same with the batch axis 1 when the batch is dynamic, so
    the smaller last batch of an evaluation also fits. A dynamic input with neither is an
    error naming it; a shape that contradicts a static dim is an error too."""
    given, observed = dict(given or {}), dict(observed or {})
    unknown = set(given) - {i.name for i in inputs}
    if unknown:
        raise ConfigError(f"--shapes names {sorted(unknown)}, not inputs of the model",
                          hint=f"inputs: {', '.join(i.name for i in inputs)}")
    out = {}
    for info in inputs:
        dims = info.shape or ()
        dynamic = [k for k, d in enumerate(dims) if not (isinstance(d, int) and d > 0)]
        if not dynamic and info.shape is not None:
            continue
        if info.name in given:
            rng = given[info.name]
        elif info.name in observed:
            shape = tuple(int(d) for d in observed[info.name])
            low = tuple(1 if (k == 0 and 0 in dynamic) else d for k, d in enumerate(shape))
            rng = ShapeRange(info.name, low, shape, shape)
        else:
            raise ConfigError(f"input '{info.name}' has dynamic dims {list(dims)}: TensorRT needs "
                              "an optimization profile",
                              hint=f"pass --shapes {info.name}:" + "x".join(
                                  str(d) if isinstance(d, int) and d > 0 else "N" for d in dims))
        for shape in (rng.min, rng.opt, rng.max):
            bad = [k for k, d in enumerate(dims) if isinstance(d, int) and d > 0 and
                   (len(shape) != len(dims) or shape[k] != d)]
            if len(shape) != len(dims) or bad:
                raise ConfigError(f"shape {'x'.join(map(str, shape))} does not fit input "
                                  f"'{info.name}' {list(dims)}",
                                  hint="keep the static dims and the rank of the model input")
        out[info.name] = rng
    return out


def trtexec_shape_flags(profile: dict[str, ShapeRange]) -> list[str]:
    """--shapes when every range is one shape, else --minShapes/--optShapes/--maxShapes."""
    if not profile:
        return []
    fmt = lambda attr: ",".join(f"{r.name}:{'x'.join(map(str, getattr(r, attr)))}"  # noqa: E731
                                for r in profile.values())
    if all(r.fixed for r in profile.values()):
        return [f"--shapes={shlex.quote(fmt('opt'))}"]
    return [f"--minShapes={shlex.quote(fmt('min'))}", f"--optShapes={shlex.quote(fmt('opt'))}",
            f"--maxShapes={shlex.quote(fmt('max'))}"]


def require_tensorrt() -> tuple[Any, Any]:
    """(tensorrt, torch) when both are importable and a CUDA device is visible."""
    try:
        import tensorrt as trt
    except ImportError as exc:
        raise BackendUnavailable(f"TensorRT is not installed ({exc})", hint=INSTALL_HINT) from None
    try:
        import torch
    except ImportError:
        raise BackendUnavailable("the TensorRT backend needs torch with CUDA for device buffers",
                                 hint=INSTALL_HINT) from None
    if not torch.cuda.is_available():
        raise BackendUnavailable("no CUDA GPU is visible (torch.cuda.is_available() is False)",
                                 hint="run on a machine with an NVIDIA GPU, or use --backend ort")
    return trt, torch


class TrtBuilder:
    """Builds serialized plans, sharing one timing cache across every build."""

    def __init__(self, *, optimization_level: int = 3, timing_cache: bytes = b"") -> None:
        self.trt, self.torch = require_tensorrt()
        self.logger = self.trt.Logger(self.trt.Logger.WARNING)
        self.builder = self.trt.Builder(self.logger)
        self.optimization_level = optimization_level
        self._cache = timing_cache  # serialized timing cache, carried from build to build
        self._lock = threading.Lock()  # one build at a time: the timing cache is shared state

    def build(self, model: onnx.ModelProto, profile: dict[str, ShapeRange] | None = None) -> bytes:
        trt = self.trt
        with self._lock:
            flags = 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)  # never a literal
            network = self.builder.create_network(flags)
            parser = trt.OnnxParser(network, self.logger)
            if not parser.parse(_onnx_bytes(model)):
                errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
                raise PtqError(f"TensorRT cannot parse the model: {errors}",
                               hint="check the ops against the TensorRT ONNX operator support list")
            config = self.builder.create_builder_config()
            config.builder_optimization_level = self.optimization_level
            config.clear_flag(trt.BuilderFlag.TF32)
            cache = config.create_timing_cache(self._cache)
            config.set_timing_cache(cache, ignore_mismatch=False)
            if profile:  # dynamic inputs: one optimization profile (min/opt/max per input)
                opt = self.builder.create_optimization_profile()
                for r in profile.values():
                    opt.set_shape(r.name, r.min, r.opt, r.max)
                config.add_optimization_profile(opt)
            plan = self.builder.build_serialized_network(network, config)
            if plan is None:
                raise PtqError("TensorRT failed to build an engine (see its log above)",
                               hint="rerun with -vv; check the Q/DQ placement and the TensorRT version")
            self._cache = bytes(config.get_timing_cache().serialize())
            return bytes(plan)

    @property
    def timing_cache(self) -> bytes:
        return self._cache


class TrtRunner:
    """`Runner` over a TensorRT engine built from an ONNX model (lazily, in __enter__)."""

    def __init__(self, model: onnx.ModelProto | str | Path, builder: TrtBuilder | None = None,
                 shapes: dict[str, ShapeRange] | None = None) -> None:
        self._model = model
        self._builder = builder
        self._shapes = shapes
        self._engine = self._context = self._stream = None

    def __enter__(self) -> TrtRunner:
        """Builds now when every input is static or --shapes covers it; otherwise the
        first infer() builds with a profile taken from its feeds (profile_shapes)."""
        self._builder = self._builder or TrtBuilder()
        self._proto = self._model if isinstance(self._model, onnx.ModelProto) else \
            onnx.load(str(self._model))
        self._inputs = graph_inputs(self._proto)
        try:
            profile = profile_shapes(self._inputs, None, self._shapes)
        except ConfigError:
            return self  # dynamic without --shapes: wait for the data
        self._build(profile)
        return self

    def _build(self, profile: dict[str, ShapeRange]) -> None:
        builder = self._builder
        trt, self._torch = builder.trt, builder.torch
        plan = builder.build(self._proto, profile)
        self._engine = trt.Runtime(builder.logger).deserialize_cuda_engine(plan)
        if self._engine is None:
            raise PtqError("TensorRT could not deserialize the engine it built",
                           hint="check that the TensorRT runtime and builder versions match")
        self._context = self._engine.create_execution_context()
        self._stream = self._torch.cuda.Stream()
        self._trt = trt

    def __exit__(self, *exc: object) -> None:
        self._context = self._engine = self._stream = None

    def _io(self, mode_name: str) -> list[str]:
        if self._engine is None:
            raise InternalError("TrtRunner used outside its 'with' block")
        mode = getattr(self._trt.TensorIOMode, mode_name)
        names = [self._engine.get_tensor_name(i) for i in range(self._engine.num_io_tensors)]
        return [n for n in names if self._engine.get_tensor_mode(n) == mode]

    def input_metadata(self) -> list[TensorInfo]:
        if self._engine is None and getattr(self, "_inputs", None) is not None:
            return list(self._inputs)  # not built yet (dynamic shapes): the ONNX inputs
        out = []
        for name in self._io("INPUT"):
            dtype = np.dtype(self._trt.nptype(self._engine.get_tensor_dtype(name)))
            shape = tuple(d if d >= 0 else None for d in self._engine.get_tensor_shape(name))
            out.append(TensorInfo(name, onnx.helper.np_dtype_to_tensor_dtype(dtype), shape))
        return out

    def infer(self, feeds: dict[str, np.ndarray],
              outputs: list[str] | None = None) -> dict[str, np.ndarray]:
        if self._engine is None and getattr(self, "_proto", None) is not None:
            self._build(profile_shapes(self._inputs, {k: v.shape for k, v in feeds.items()},
                                       self._shapes))
        torch, ctx = self._torch, self._context
        keep = []  # device tensors must outlive the launch
        for name in self._io("INPUT"):
            want = np.dtype(self._trt.nptype(self._engine.get_tensor_dtype(name)))
            host = np.ascontiguousarray(feeds[name], dtype=want)
            dev = torch.from_numpy(host).to("cuda", non_blocking=False)
            ctx.set_input_shape(name, tuple(host.shape))
            ctx.set_tensor_address(name, int(dev.data_ptr()))
            keep.append(dev)
        results = {}
        for name in self._io("OUTPUT"):
            dtype = np.dtype(self._trt.nptype(self._engine.get_tensor_dtype(name)))
            dev = torch.empty(tuple(ctx.get_tensor_shape(name)), dtype=_torch_dtype(torch, dtype),
                              device="cuda")
            ctx.set_tensor_address(name, int(dev.data_ptr()))
            results[name] = dev
        if not ctx.execute_async_v3(self._stream.cuda_stream):
            raise PtqError("TensorRT inference failed", hint="rerun with -vv for TensorRT's log")
        self._stream.synchronize()
        names = outputs or list(results)
        return {n: results[n].cpu().numpy() for n in names}


def _torch_dtype(torch: Any, dtype: np.dtype) -> Any:
    return {np.dtype(np.float32): torch.float32, np.dtype(np.float16): torch.float16,
            np.dtype(np.int32): torch.int32, np.dtype(np.int64): torch.int64,
            np.dtype(np.int8): torch.int8, np.dtype(np.uint8): torch.uint8,
            np.dtype(np.bool_): torch.bool}[np.dtype(dtype)]


def _onnx_bytes(model: onnx.ModelProto) -> bytes:
    if model.ir_version != compatible_ir_version(model):
        model = finalize(copy_model(model), check=False)
    return model.SerializeToString()
