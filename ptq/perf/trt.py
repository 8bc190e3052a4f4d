"""TensorRT's Python API, timed per query with CUDA events (H2D / compute / D2H).

Written to the documented TensorRT 10/11 API (TENSORRT.md §4.5: `Runtime.deserialize_cuda_engine`,
`num_io_tensors`, `get_tensor_name/mode/shape/dtype`, `set_input_shape`, `set_tensor_address`,
`execute_async_v3`) and cuda-python's `cuda.bindings.runtime`. TensorRT cannot be installed
on ptq's CI machines (no GPU): only the "not installed" path is tested there.
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from ptq.errors import BackendUnavailable, ConfigError
from ptq.perf.stats import BenchConfig, BenchResult, time_queries


def _modules():
    try:
        import tensorrt as trt
        from cuda.bindings import runtime as cudart
    except ImportError as exc:
        raise BackendUnavailable(f"the TensorRT Python API is not installed ({exc.name})",
                                 hint="pip install tensorrt cuda-python on a machine with an "
                                      "NVIDIA GPU, or pass a trtexec log with --parse") from None
    return trt, cudart


def _ok(result):
    err, *rest = result if isinstance(result, tuple) else (result,)
    if int(err) != 0:
        raise BackendUnavailable(f"CUDA call failed with error {int(err)}")
    return rest[0] if len(rest) == 1 else rest


def bench_tensorrt(plan: str | Path, config: BenchConfig = BenchConfig(),
                   label: str | None = None) -> BenchResult:  # pragma: no cover - needs a GPU
    trt, cudart = _modules()
    logger = trt.Logger(trt.Logger.WARNING)
    engine = trt.Runtime(logger).deserialize_cuda_engine(Path(plan).read_bytes())
    if engine is None:
        raise BackendUnavailable("TensorRT could not deserialize the engine", path=plan,
                                 hint="build it with the same TensorRT version and GPU")
    ctx = engine.create_execution_context()
    stream = _ok(cudart.cudaStreamCreate())
    rng = np.random.default_rng(0)
    host, dev, inputs, outputs = {}, {}, [], []
    for i in range(engine.num_io_tensors):
        name = engine.get_tensor_name(i)
        is_input = engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT
        shape = tuple(engine.get_tensor_shape(name))
        if is_input:
            if any(d < 0 for d in shape):
                if name not in config.shapes:
                    raise ConfigError(f"input {name!r} is dynamic {shape}", path=plan,
                                      hint=f"--shapes {name}:1x3x224x224")
                shape = config.shapes[name]
                ctx.set_input_shape(name, shape)
    for i in range(engine.num_io_tensors):
        name = engine.get_tensor_name(i)
        is_input = engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT
        shape = tuple(ctx.get_tensor_shape(name))
        dtype = np.dtype(trt.nptype(engine.get_tensor_dtype(name)))
        arr = rng.uniform(-1, 1, shape).astype(dtype) if is_input else np.empty(shape, dtype)
        host[name] = np.ascontiguousarray(arr)
        dev[name] = _ok(cudart.cudaMalloc(max(arr.nbytes, 1)))
        ctx.set_tensor_address(name, int(dev[name]))
        (inputs if is_input else outputs).append(name)
    events = [_ok(cudart.cudaEventCreate()) for _ in range(4)]
    h2d_kind = cudart.cudaMemcpyKind.cudaMemcpyHostToDevice
    d2h_kind = cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost

    def query():
        t0 = time.perf_counter()
        _ok(cudart.cudaEventRecord(events[0], stream))
        for n in inputs:
            _ok(cudart.cudaMemcpyAsync(dev[n], host[n].ctypes.data, host[n].nbytes, h2d_kind,
                                       stream))
        _ok(cudart.cudaEventRecord(events[1], stream))
        ctx.execute_async_v3(stream)
        _ok(cudart.cudaEventRecord(events[2], stream))
        enq = (time.perf_counter() - t0) * 1e3
        for n in outputs:
            _ok(cudart.cudaMemcpyAsync(host[n].ctypes.data, dev[n], host[n].nbytes, d2h_kind,
                                       stream))
        _ok(cudart.cudaEventRecord(events[3], stream))
        _ok(cudart.cudaStreamSynchronize(stream))
        ms = [_ok(cudart.cudaEventElapsedTime(events[k], events[k + 1])) for k in range(3)]
        return ms[0], ms[1], ms[2], enq

    enq, h2d, comp, d2h, wall = time_queries(query, config)
    for ptr in dev.values():
        cudart.cudaFree(ptr)
    batch = host[inputs[0]].shape[0] if inputs and host[inputs[0]].ndim else None
    return BenchResult.from_queries(label or Path(plan).stem, "tensorrt", enqueue=enq, h2d=h2d,
                                    compute=comp, d2h=d2h, walltime_s=wall, batch=batch,
                                    source=str(plan))
