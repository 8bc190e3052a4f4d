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
inference, dtype mapping. That code follows the TensorRT 11 Python API names
verified from source in TENSORRT.md 4.5 and is kept to the minimum.
"""
from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from ptq.errors import BackendUnavailable, InternalError, PtqError
from ptq.graph.edit import compatible_ir_version, copy_model, finalize
from ptq.graph.model import TensorInfo

log = logging.getLogger(__name__)

INSTALL_HINT = ('pip install "ptq[tensorrt]" on a machine with an NVIDIA GPU and driver '
                '(torch with CUDA is used for device buffers)')


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

    def build(self, model: onnx.ModelProto) -> bytes:
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

    def __init__(self, model: onnx.ModelProto | str | Path, builder: TrtBuilder | None = None) -> None:
        self._model = model
        self._builder = builder
        self._engine = self._context = self._stream = None

    def __enter__(self) -> TrtRunner:
        builder = self._builder or TrtBuilder()
        trt, self._torch = builder.trt, builder.torch
        model = self._model if isinstance(self._model, onnx.ModelProto) else onnx.load(str(self._model))
        plan = builder.build(model)
        self._engine = trt.Runtime(builder.logger).deserialize_cuda_engine(plan)
        if self._engine is None:
            raise PtqError("TensorRT could not deserialize the engine it built",
                           hint="check that the TensorRT runtime and builder versions match")
        self._context = self._engine.create_execution_context()
        self._stream = self._torch.cuda.Stream()
        self._trt = trt
        return self

    def __exit__(self, *exc: object) -> None:
        self._context = self._engine = self._stream = None

    def _io(self, mode_name: str) -> list[str]:
        if self._engine is None:
            raise InternalError("TrtRunner used outside its 'with' block")
        mode = getattr(self._trt.TensorIOMode, mode_name)
        names = [self._engine.get_tensor_name(i) for i in range(self._engine.num_io_tensors)]
        return [n for n in names if self._engine.get_tensor_mode(n) == mode]

    def input_metadata(self) -> list[TensorInfo]:
        out = []
        for name in self._io("INPUT"):
            dtype = np.dtype(self._trt.nptype(self._engine.get_tensor_dtype(name)))
            shape = tuple(d if d >= 0 else None for d in self._engine.get_tensor_shape(name))
            out.append(TensorInfo(name, onnx.helper.np_dtype_to_tensor_dtype(dtype), shape))
        return out

    def infer(self, feeds: dict[str, np.ndarray],
              outputs: list[str] | None = None) -> dict[str, np.ndarray]:
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
