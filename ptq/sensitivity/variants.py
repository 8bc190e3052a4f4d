"""Build, run and score variants: the Evaluator, the engine spec and the parallel map.

    pins --ptq.quantization--> ONNX --engine (ORT session | TensorRT engine)--> outputs
         --scorers vs the FP32 reference--> metrics

`--jobs N` evaluates N variants at once. Threads are the default: ONNX Runtime
releases the GIL while it runs, the batches and the reference are shared without
copies, and each session gets cores/N intra-op threads. Processes (`executor=
"process"`, spawned workers that receive the state once) avoid the GIL during
quantize() graph building; bench/sensitivity.py measures both.
"""
from __future__ import annotations

import logging
import multiprocessing
import time
from concurrent.futures import Executor, ProcessPoolExecutor, ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from enum import Enum
from typing import Any, Callable, Sequence

import numpy as np
import onnx

from ptq.backends.ort import OrtRunner, available_memory, default_threads, resolve_providers
from ptq.datasets.base import Batch
from ptq.errors import ConfigError
from ptq.evaluate import run_batches
from ptq.quantization import Pin, QuantizeConfig, quantize
from ptq.sensitivity.hooks import EvalMeta
from ptq.sensitivity.scoring import Scorer, score_all

log = logging.getLogger(__name__)


class Backend(str, Enum):
    ORT = "ort"
    TRT = "trt"


class ExecutorKind(str, Enum):
    THREAD = "thread"
    PROCESS = "process"


@dataclass(frozen=True)
class EngineSpec:
    """How a variant becomes something that runs (picklable, so workers can rebuild it)."""

    backend: Backend = Backend.ORT
    providers: str = "auto"
    optimization: str = "nchwc"
    threads: int | None = None

    def check(self) -> None:
        """Fail before any expensive work when the backend cannot run here."""
        if self.backend is Backend.TRT:
            from ptq.backends.trt import require_tensorrt
            require_tensorrt()

    def factory(self) -> Callable[[onnx.ModelProto], Any]:
        if self.backend is Backend.TRT:
            from ptq.backends.trt import TrtBuilder, TrtRunner
            builder = TrtBuilder()  # one timing cache for every variant
            return lambda model: TrtRunner(model, builder)
        return lambda model: OrtRunner(model, providers=self.providers,
                                       optimization=self.optimization, threads=self.threads)


@dataclass(frozen=True)
class VariantRun:
    """One evaluated model: its metrics and where the time went."""

    pins: tuple[Pin, ...]
    metrics: dict[str, float]
    seconds: float
    build_s: float
    session_s: float
    infer_s: float


class Evaluator:
    """Everything a variant needs, prepared once: model, ranges, batches, reference, scorers."""

    def __init__(self, model: onnx.ModelProto, ranges: Any, qconfig: QuantizeConfig,
                 batches: Sequence[Batch], reference: dict[str, np.ndarray],
                 scorers: Sequence[Scorer], meta: EvalMeta, engine: EngineSpec,
                 source_sha256: str | None = None) -> None:
        self.model, self.ranges, self.qconfig = model, ranges, qconfig
        self.source_sha256 = source_sha256  # of the model file: recorded in every variant
        self.batches, self.reference, self.scorers, self.meta = batches, reference, scorers, meta
        self.engine = engine
        self._factory = engine.factory()

    def with_engine(self, engine: EngineSpec) -> Evaluator:
        """The same prepared state, run by another engine (e.g. fewer threads per session)."""
        return Evaluator(self.model, self.ranges, self.qconfig, self.batches, self.reference,
                         self.scorers, self.meta, engine, self.source_sha256)

    def build(self, pins: Sequence[Pin] = ()) -> onnx.ModelProto:
        return quantize(self.model, self.ranges, pins=tuple(pins), config=self.qconfig,
                        source_sha256=self.source_sha256)

    def evaluate(self, pins: Sequence[Pin] = (), built: tuple[onnx.ModelProto, float] | None = None
                 ) -> VariantRun:
        """Build (unless `built` = (model, build seconds) came from `timed_build`), run, score."""
        t0 = time.perf_counter()
        model, build_s = built if built is not None else self.timed_build(pins)
        t1 = time.perf_counter()
        with self._factory(model) as runner:
            t2 = time.perf_counter()
            outputs = run_batches(runner, self.batches)
        t3 = time.perf_counter()
        metrics = score_all(self.scorers, self.reference, outputs, self.meta)
        wall = time.perf_counter() - t0 + (build_s if built is not None else 0.0)
        return VariantRun(tuple(pins), metrics, wall, build_s, t2 - t1, t3 - t2)

    def timed_build(self, pins: Sequence[Pin] = ()) -> tuple[onnx.ModelProto, float]:
        t0 = time.perf_counter()
        model = self.build(pins)
        return model, time.perf_counter() - t0

    def state(self) -> tuple:
        """What a worker process needs to rebuild this evaluator."""
        return (self.model.SerializeToString(), self.ranges, self.qconfig, list(self.batches),
                self.reference, list(self.scorers), self.meta, self.engine, self.source_sha256)


def threads_per_job(jobs: int) -> int:
    return max(1, default_threads() // max(1, jobs))


# Variants at once when --jobs is not given, on ONNX Runtime's CPU EP: half the cores, at most
# 8 (2 threads a session), every core below 4. A QDQ variant spends much of its time in ops ORT
# runs on one thread (Cast, DequantizeLinear: half of it on 16 cores) and in building its graph
# and session; concurrent variants fill the idle cores. Measured, EfficientNet-Lite0, 60 variants
# (bench/gpu_sensitivity.py): 16 cores, 256 images: 106 s at 1 job, 63 s at 4, 53 s at 8;
# 2 cores, 20 images: 45.9 s at 1 job, 35.3 s at 2. The results are the same at any count.
# Each session holds a batch's activations (EfficientNet-Lite0 at batch 32: ~0.9 GB more peak
# RSS a job, against 1.7 GB estimated from the exposed-activation size): at most half the
# available memory goes to them, and a model whose activation size is unknown runs 1 job.
MAX_AUTO_JOBS = 8


def auto_jobs(engine: EngineSpec, job_bytes: int | None = None) -> int:
    """--jobs' default: parallel variants on the CPU EP; one at a time on a GPU or TensorRT,
    whose single device the variants would share. `job_bytes`: one session's activations
    (None: unknown, so 1 job)."""
    if engine.backend is not Backend.ORT or resolve_providers(engine.providers)[0] != "CPUExecutionProvider":
        return 1
    cores = default_threads()
    jobs = cores if cores < 4 else min(MAX_AUTO_JOBS, cores // 2)
    free = available_memory()
    if not job_bytes or free is None:
        return 1
    return max(1, min(jobs, free // 2 // job_bytes))


def evaluate_many(evaluator: Evaluator, variants: Sequence[tuple[Pin, ...]], *, jobs: int = 1,
                  executor: ExecutorKind = ExecutorKind.THREAD,
                  progress: Callable[[int], None] | None = None) -> list[VariantRun]:
    """Evaluate every pin set, in parallel with `jobs` > 1; results in input order."""
    if jobs <= 0:
        raise ConfigError(f"--jobs must be positive, got {jobs}")
    results: list[VariantRun | None] = [None] * len(variants)
    if jobs == 1 or len(variants) <= 1:
        # Pipelined: variant k+1's graph is built (Python, holds the GIL) while variant k's
        # session is created and run (ONNX Runtime, releases it). Same models, same runs.
        with ThreadPoolExecutor(1, thread_name_prefix="ptq-build") as builder:
            ahead = builder.submit(evaluator.timed_build, variants[0]) if variants else None
            for i, pins in enumerate(variants):
                built = ahead.result()
                if i + 1 < len(variants):
                    ahead = builder.submit(evaluator.timed_build, variants[i + 1])
                results[i] = evaluator.evaluate(pins, built)
                if progress:
                    progress(1)
        return results  # type: ignore[return-value]
    with _Pool(evaluator, jobs, executor) as (pool, call):
        futures = {pool.submit(call, pins): i for i, pins in enumerate(variants)}
        try:
            for fut in as_completed(futures):
                results[futures[fut]] = fut.result()  # re-raises a worker's PtqError
                if progress:
                    progress(1)
        except BaseException:
            for fut in futures:
                fut.cancel()
            raise
    return results  # type: ignore[return-value]


class _Pool:
    """(executor, callable) for one parallel map; workers hold their own evaluator."""

    def __init__(self, evaluator: Evaluator, jobs: int, kind: ExecutorKind) -> None:
        self.evaluator, self.jobs, self.kind = evaluator, jobs, ExecutorKind(kind)

    def __enter__(self) -> tuple[Executor, Callable[[tuple[Pin, ...]], VariantRun]]:
        if self.kind is ExecutorKind.THREAD:
            self.pool: Executor = ThreadPoolExecutor(self.jobs, thread_name_prefix="ptq-variant")
            return self.pool, self.evaluator.evaluate
        self.pool = ProcessPoolExecutor(self.jobs, mp_context=multiprocessing.get_context("spawn"),
                                        initializer=_init_worker, initargs=(self.evaluator.state(),))
        return self.pool, _worker_evaluate

    def __exit__(self, *exc: object) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)


_WORKER: Evaluator | None = None


def _init_worker(state: tuple) -> None:
    global _WORKER
    model_bytes, *rest = state
    _WORKER = Evaluator(onnx.load_from_string(model_bytes), *rest)


def _worker_evaluate(pins: tuple[Pin, ...]) -> VariantRun:
    if _WORKER is None:
        raise RuntimeError("worker not initialised")
    return _WORKER.evaluate(pins)
