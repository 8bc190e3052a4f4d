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
from ptq.datasets.preprocess import detect_layout
from ptq.graph.model import graph_inputs, load_model
from ptq.metrics import METRICS, Comparison, Metric, compare_outputs, default_metrics
from ptq.output_kinds import OutputSpec, output_specs


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
    """{metric name: worst score over the outputs it applies to} of `cand` against `ref`."""
    missing = set(ref) - set(cand)
    if missing:
        raise ValueError(f"candidate lacks outputs {sorted(missing)}")
    return {m.name: m.score(ref, cand, labels) for m in metrics}


def input_layout(model: str | Path | onnx.ModelProto) -> str:
    """NCHW/NHWC of the model's first input: 4-D outputs are read in the same layout."""
    proto = model if isinstance(model, onnx.ModelProto) else load_model(model)
    inputs = graph_inputs(proto)
    return detect_layout(inputs[0].shape) if inputs else "NCHW"


def accuracy_report(fp32_model: str | Path | onnx.ModelProto,
                    quant_model: str | Path | onnx.ModelProto, batches: Iterable[Batch],
                    providers: str = "auto", optimization: str = "disable",
                    progress: Callable[[int], None] | None = None,
                    specs: dict[str, OutputSpec] | None = None) -> Comparison:
    """Every output of the quantized model against FP32 in ONNX Runtime, each with the
    metrics that apply to it (ptq.metrics: cosine, max-abs; top-1 on the class axis;
    map IoU and box agreement on maps; + top1-acc with labels). Batches stream through
    both models at once. Level "disable" keeps ORT from rewriting the QDQ graph, so the
    model runs as TensorRT's arithmetic simulated in float (TENSORRT.md §5.1)."""
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
    specs = output_specs(r, input_layout(fp32_model), specs)
    names = [*default_metrics(specs), "max-abs"]
    truth = np.concatenate(labels) if labels else None
    if truth is not None and truth.ndim == 1:
        names.append("top1-acc")
    result = compare_outputs(r, c, names, labels=truth, specs=specs)
    if "top1-acc" in result.worst:
        fp32 = METRICS["top1-acc"].per_output(r, r, truth, specs)
        for out, v in fp32.items():
            result.outputs[out]["top1-acc-fp32"] = v
        result.worst["top1-acc-fp32"] = METRICS["top1-acc"].worst(fp32)
    return result


def measure_accuracy(fp32_model: str | Path | onnx.ModelProto,
                     quant_model: str | Path | onnx.ModelProto, batches: Iterable[Batch],
                     providers: str = "auto", optimization: str = "disable",
                     progress: Callable[[int], None] | None = None) -> dict[str, float]:
    """`accuracy_report` reduced to {metric: worst value over the outputs}: cosine, max-abs,
    top1 (when an output has a class axis), map-iou/box-f1 (when one is a map),
    top1-acc/top1-acc-fp32 (with labels)."""
    return accuracy_report(fp32_model, quant_model, batches, providers, optimization,
                           progress).flat()


_NAMES = {"top1": "top-1 agreement", "top5": "top-5 agreement", "map-iou": "map IoU",
          "box-f1": "box agreement", "top1-acc": "top-1 accuracy"}


def accuracy_lines(report: Comparison, where: str) -> list[str]:
    """What `ptq quantize` prints: the worst figure of each metric (naming its output when
    the model has several), then each output by name and the LOW flags when it matters."""
    flat = report.flat()
    multi = len(report.outputs) > 1
    parts = []
    for k, v in flat.items():
        if k == "top1-acc-fp32":
            continue
        text = f"{_NAMES.get(k, k)} " + (f"{v:.5f}" if k == "cosine" else f"{v:.2%}"
                                          if k in _NAMES else f"{v:.4g}")
        if k == "top1-acc" and "top1-acc-fp32" in flat:
            text += f" (FP32 {flat['top1-acc-fp32']:.2%})"
        if multi:
            text += f" [{report.worst[k][0]}]"
        parts.append(text)
    lines = [f"accuracy vs FP32 on {where} (ONNX Runtime, optimizations off): " + ", ".join(parts)]
    if multi or report.flags or any(s.kind != "classes" for s in report.specs.values()):
        lines += report.lines()
    return lines
