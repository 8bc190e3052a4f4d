"""ONNX Runtime timed the way trtexec times an engine: warm up for `warmup_ms`, then run
queries until both `duration_s` and `iterations` are reached.

CPU: inputs already sit in host memory, so H2D/D2H are 0 and a query's compute time is
the `session.run` call (synchronous, so it is also the enqueue time). CUDA: IOBinding
makes the three phases separate calls: inputs copied to the device (H2D), `run_with_iobinding`
with outputs left on the device (compute), outputs copied back (D2H).
Inputs are seeded random data of the model's dtypes, as trtexec uses.
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from ptq.backends.ort import OrtRunner
from ptq.errors import BackendUnavailable, ConfigError, exception_line
from ptq.graph.model import TensorInfo
from ptq.perf.stats import BenchConfig, BenchResult, time_queries


# Random inputs larger than this are refused before allocation: a typo in --shapes
# (100000x3x224x224 = 60 GB) must be a one-line error, not a MemoryError or a swapping box.
MAX_INPUT_BYTES = 4 << 30


def resolve_shapes(inputs: list[TensorInfo], shapes: dict[str, tuple[int, ...]],
                   path) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
    """Each input's concrete shape and dtype: --shapes where given (rank and fixed dims must
    agree with the model), else the model's static shape; refused before any allocation."""
    known = {i.name for i in inputs}
    unknown = sorted(set(shapes) - known)
    if unknown:
        raise ConfigError(f"--shapes names unknown input(s) {', '.join(unknown)} (model inputs: "
                          f"{', '.join(sorted(known))})", path=path,
                          hint="use the input names of this model")
    out, total = {}, 0
    for info in inputs:
        spec = _spec(info)
        shape = shapes.get(info.name)
        if shape is None:
            if info.shape is None or any(not isinstance(d, int) or d <= 0 for d in info.shape):
                raise ConfigError(f"input {info.name!r} has a dynamic shape {spec}", path=path,
                                  hint=f"give it, as trtexec does: --shapes {info.name}:"
                                       + "x".join(str(d) if isinstance(d, int) and d > 0
                                                  else "1" for d in (info.shape or (1,))))
            shape = tuple(info.shape)
        elif info.shape is not None:
            fixed = [(k, d) for k, d in enumerate(info.shape) if isinstance(d, int) and d > 0]
            if len(shape) != len(info.shape) or any(shape[k] != d for k, d in fixed):
                raise ConfigError(f"--shapes gives {info.name!r} shape "
                                  f"{'x'.join(map(str, shape))}; the model's is {spec}",
                                  path=path, hint="keep the rank and the fixed dimensions")
        dtype = info.dtype if info.elem_type else np.dtype(np.float32)
        total += int(np.prod(shape, dtype=object)) * dtype.itemsize
        out[info.name] = (shape, dtype)
    if total > MAX_INPUT_BYTES:
        raise ConfigError(f"the inputs would take {total / 2**30:.3g} GiB "
                          f"(limit {MAX_INPUT_BYTES >> 30} GiB)", path=path,
                          hint="use a smaller batch in --shapes")
    return out


def _spec(info: TensorInfo) -> str:
    if info.shape is None:
        return "of unknown rank"
    return "x".join(str(d) if isinstance(d, int) and d > 0 else (d or "?") for d in info.shape)


def input_arrays(runner: OrtRunner, shapes: dict[str, tuple[int, ...]], path) -> dict:
    rng = np.random.default_rng(0)
    feeds = {}
    for name, (shape, dtype) in resolve_shapes(runner.input_metadata(), shapes, path).items():
        if np.issubdtype(dtype, np.floating):
            feeds[name] = rng.uniform(-1, 1, shape).astype(dtype)
        else:
            feeds[name] = rng.integers(0, 2, shape).astype(dtype)
    return feeds


def bench_ort(model: str | Path, config: BenchConfig = BenchConfig(), *, device: str = "cpu",
              optimization: str = "all", threads: int | None = None,
              label: str | None = None) -> BenchResult:
    if device == "cuda":
        import onnxruntime as ort
        if "CUDAExecutionProvider" not in ort.get_available_providers():
            raise BackendUnavailable("ONNX Runtime has no CUDA execution provider here",
                                     path=model, hint="pip install onnxruntime-gpu on a machine "
                                                      "with an NVIDIA GPU, or use --backend cpu")
    providers = "cpu" if device == "cpu" else "cuda"
    with OrtRunner(model, providers=providers, optimization=optimization,
                   threads=threads) as runner:
        feeds = input_arrays(runner, config.shapes, model)
        batch = int(next(iter(feeds.values())).shape[0]) if feeds and \
            next(iter(feeds.values())).ndim else None
        step = _cpu_query(runner, feeds) if device == "cpu" else _cuda_query(runner, feeds)
        try:
            step()                             # one query first: a model ORT cannot run fails
        except Exception as exc:                # here with its own message, not mid-timing
            raise ConfigError(f"ONNX Runtime cannot run the model with inputs "
                              f"{_shape_text(feeds)}: {exception_line(exc, last=True)}",
                              path=model, hint="check --shapes against the model's inputs"
                              ) from None
        enq, h2d, comp, d2h, wall = time_queries(step, config)
    res = BenchResult.from_queries(label or Path(model).stem, f"ort-{device}", enqueue=enq,
                                   h2d=h2d, compute=comp, d2h=d2h, walltime_s=wall, batch=batch,
                                   source=str(model))
    res.notes.append(f"ONNX Runtime {device.upper()}, graph optimization level '{optimization}'"
                     + (f", {threads} threads" if threads else ""))
    return res


def _shape_text(feeds: dict) -> str:
    return ", ".join(f"{k}:{'x'.join(map(str, v.shape))} {v.dtype}" for k, v in feeds.items())


def _cpu_query(runner: OrtRunner, feeds: dict):
    sess = runner.session

    def step():
        t0 = time.perf_counter()
        sess.run(None, feeds)
        ms = (time.perf_counter() - t0) * 1000.0
        return 0.0, ms, 0.0, ms
    return step


def _cuda_query(runner: OrtRunner, feeds: dict):  # pragma: no cover - needs a GPU
    import onnxruntime as ort

    sess = runner.session
    outputs = [o.name for o in sess.get_outputs()]

    def step():
        binding = sess.io_binding()
        t0 = time.perf_counter()
        for name, arr in feeds.items():
            binding.bind_ortvalue_input(name, ort.OrtValue.ortvalue_from_numpy(arr, "cuda", 0))
        t1 = time.perf_counter()
        for name in outputs:
            binding.bind_output(name, "cuda")
        sess.run_with_iobinding(binding)
        t2 = time.perf_counter()
        binding.copy_outputs_to_cpu()
        t3 = time.perf_counter()
        return (t1 - t0) * 1e3, (t2 - t1) * 1e3, (t3 - t2) * 1e3, (t2 - t1) * 1e3
    return step
