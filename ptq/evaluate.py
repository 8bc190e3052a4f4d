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
from ptq.metrics import Metric


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
