"""Run a model over evaluation batches and compare its outputs with a reference.

Evaluation batches are materialised once (preprocessing is the expensive part of a
small evaluation) and shared by every model that is scored against them.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np
import onnx

from ptq.backends.ort import OrtRunner
from ptq.datasets.base import Batch
from ptq.errors import DataError
from ptq.metrics import METRICS, Metric


def run_model(model: str | Path | onnx.ModelProto, batches: Sequence[Batch], *,
              providers: str | list[str] = "auto", optimization: str = "all",
              progress: Callable[[int], None] | None = None) -> dict[str, np.ndarray]:
    """All outputs of `model` over `batches`, concatenated along the sample axis."""
    with OrtRunner(model, providers=providers, optimization=optimization) as runner:
        return run_batches(runner, batches, progress=progress)


def run_batches(runner, batches: Iterable[Batch], *,
                progress: Callable[[int], None] | None = None) -> dict[str, np.ndarray]:
    parts: dict[str, list[np.ndarray]] = {}
    for batch in batches:
        for name, value in runner.infer(batch.feeds).items():
            parts.setdefault(name, []).append(value)
        if progress:
            progress(batch.size)
    return {name: np.concatenate(vals) for name, vals in parts.items()}


def labels_of(batches: Sequence[Batch]) -> np.ndarray | None:
    if not batches or any(b.labels is None for b in batches):
        return None
    return np.concatenate([b.labels for b in batches])


def compare(ref: dict[str, np.ndarray], cand: dict[str, np.ndarray], metrics: Sequence[Metric],
            labels: np.ndarray | None = None) -> dict[str, float]:
    """{metric name: score} of `cand` against `ref` (worst output for multi-output models)."""
    missing = set(ref) - set(cand)
    if missing:
        raise ValueError(f"candidate lacks outputs {sorted(missing)}")
    return {m.name: m.score(ref, cand, labels) for m in metrics}


def measure_accuracy(fp32_model: str | Path | onnx.ModelProto,
                     quant_model: str | Path | onnx.ModelProto, batches: Iterable[Batch],
                     providers: str = "auto", optimization: str = "disable",
                     progress: Callable[[int], None] | None = None) -> dict[str, float]:
    """cosine, max-abs and top-1 agreement of the quantized outputs against FP32 in ONNX
    Runtime (+ top1-acc/top1-acc-fp32 with labels). Batches stream through both models at
    once. Level "disable" keeps ORT from rewriting the QDQ graph, so the model runs as
    TensorRT's arithmetic simulated in float (TENSORRT.md §5.1)."""
    ref: dict[str, list[np.ndarray]] = {}
    cand: dict[str, list[np.ndarray]] = {}
    labels: list[np.ndarray] | None = []
    with OrtRunner(fp32_model, providers=providers, optimization=optimization) as a, \
            OrtRunner(quant_model, providers=providers, optimization=optimization) as b:
        for batch in batches:
            for store, runner in ((ref, a), (cand, b)):
                for name, value in runner.infer(batch.feeds).items():
                    store.setdefault(name, []).append(value)
            if labels is not None:
                labels = None if batch.labels is None else [*labels, batch.labels]
            if progress:
                progress(batch.size)
    if not ref:
        raise DataError("no evaluation samples", hint="check the --eval data")
    r = {k: np.concatenate(v) for k, v in ref.items()}
    c = {k: np.concatenate(v) for k, v in cand.items()}
    out = compare(r, c, [METRICS["cosine"], METRICS["max-abs"]])
    classes = [n for n, v in r.items() if v.ndim >= 2 and v.shape[1] > 1]
    if classes:
        out["top1"] = METRICS["top1"].score(r, c, outputs=classes)
        if labels:
            truth = np.concatenate(labels)
            out["top1-acc"] = METRICS["top1-acc"].score(r, c, truth, outputs=classes)
            out["top1-acc-fp32"] = METRICS["top1-acc"].score(r, r, truth, outputs=classes)
    return out
