"""What an analysis starts from: evaluation batches (preprocessed once) and ranges.

Evaluation data goes through the same loaders and preprocessing as `ptq calibrate`;
the batches are materialised in memory once and shared by the reference, the
baseline and every variant. Ranges come from ranges.json, a TensorRT calibration
cache, or an on-the-fly calibration on the same data.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from ptq.cache import CalibrationCache
from ptq.calibration import CalibrateConfig, calibrate, open_model_data
from ptq.calibrators import Method
from ptq.datasets.base import Batch, fixed_batch
from ptq.errors import ConfigError, DataError
from ptq.graph.model import graph_inputs
from ptq.metrics import METRICS
from ptq.quantization import load_ranges_file
from ptq.sensitivity.hooks import EvalMeta
from ptq.table import CalibrationTable

log = logging.getLogger(__name__)

DEFAULT_EVAL_BATCH = 32  # outputs only are kept, so batches can be larger than for calibration


@dataclass(frozen=True)
class EvalData:
    batches: tuple[Batch, ...]
    meta: EvalMeta
    description: dict
    batch_size: int

    @property
    def num_samples(self) -> int:
        return sum(b.size for b in self.batches)


def load_eval_data(model_path: Path, model: onnx.ModelProto, data: Any, config: CalibrateConfig,
                   batch_size: int | None) -> EvalData:
    """Read, preprocess and batch the evaluation samples once (`config.max_images` caps them)."""
    source = open_model_data(model_path, model, data, config)
    fixed = fixed_batch(graph_inputs(model))
    size = fixed or batch_size or DEFAULT_EVAL_BATCH
    if fixed and batch_size and batch_size != fixed:
        log.warning("model has a fixed batch of %d; ignoring --batch-size %d", fixed, batch_size)
    batches = []
    for batch in source.batches(size):
        if fixed and batch.size != fixed:
            log.warning("dropping a final partial batch of %d (model batch is fixed at %d)",
                        batch.size, fixed)
            continue
        batches.append(batch)
    origin = str(data) if isinstance(data, (str, Path)) else None
    if not batches:
        raise DataError(f"no usable evaluation samples ({len(source.skipped)} skipped"
                        + (f", model batch fixed at {fixed}" if fixed else "") + ")", path=origin,
                        hint="provide readable images" + (f" (at least {fixed})" if fixed else ""))
    if source.skipped:
        log.warning("%d input(s) skipped as unreadable", len(source.skipped))
    meta = EvalMeta(files=tuple(f for b in batches for f in b.files), labels=_labels(batches))
    return EvalData(tuple(batches), meta, source.describe(), size)


def _labels(batches: list[Batch]) -> np.ndarray | None:
    if any(b.labels is None for b in batches):
        return None
    return np.concatenate([np.asarray(b.labels) for b in batches])


def require_labels(meta: EvalMeta, needed_by: list[str], data: Any) -> None:
    """Labels are there when a metric needs them, and class metrics get one integer per sample
    (an npz may carry box arrays for detection metrics instead)."""
    classes = [n for n in needed_by if n in METRICS and "classes" in (METRICS[n].kinds or ())]
    labels = None if meta.labels is None else np.asarray(meta.labels)
    if classes and labels is not None and (labels.ndim != 1
                                           or not np.issubdtype(labels.dtype, np.integer)):
        raise DataError(f"metric(s) {', '.join(classes)} need one integer class per sample, but the "
                        f"labels have shape {tuple(labels.shape)} dtype {labels.dtype}",
                        path=str(data) if isinstance(data, (str, Path)) else None,
                        hint="store class indices as 'labels' (e.g. onehot.argmax(1))")
    if needed_by and meta.labels is None:
        raise ConfigError(f"metric(s) {', '.join(needed_by)} need labels, but the evaluation "
                          "data has none",
                          path=str(data) if isinstance(data, (str, Path)) else None,
                          hint="put the images in class sub-folders (<class>/<image>), give an npz "
                               "with a 'labels' array, or drop --labels")


@dataclass(frozen=True)
class Ranges:
    """The ranges handed to ptq.quantization, and where they came from."""

    value: CalibrationTable | CalibrationCache | dict[str, float]
    path: str | None
    model_sha256: str | None
    calibrated: bool = False  # True: computed on the fly here (the CLI saves it)

    @property
    def table(self) -> CalibrationTable | None:
        return self.value if isinstance(self.value, CalibrationTable) else None


def load_ranges(ranges: Any, model_path: Path, model_sha256: str, data: Any, algo: str,
                config: CalibrateConfig) -> Ranges:
    """ranges.json / a .cache / a table, cache or {tensor: amax} dict, or None = calibrate now."""
    if ranges is None:
        try:
            method = Method(algo)
        except ValueError:
            raise ConfigError(f"unknown calibration algorithm {algo!r} "
                              f"({', '.join(m.value for m in Method)})") from None
        log.info("no ranges given: calibrating %s on the evaluation data", algo)
        table = calibrate(model_path, data, CalibrateConfig(
            algorithms=(method,), max_images=config.max_images, providers=config.providers,
            seed=config.seed, strict=config.strict, preprocess=config.preprocess))
        return Ranges(table, None, table.model.get("sha256"), calibrated=True)
    if isinstance(ranges, (CalibrationTable, CalibrationCache, dict)):
        value, path = ranges, None
    elif isinstance(ranges, (str, Path)):
        path = str(ranges)
        value = load_ranges_file(ranges)
    else:
        raise ConfigError(f"ranges must be a path, CalibrationTable, CalibrationCache or "
                          f"{{tensor: amax}} dict, not {type(ranges).__name__}")
    sha = value.model.get("sha256") if isinstance(value, CalibrationTable) else None
    if sha and sha != model_sha256:
        log.warning("the ranges were computed for another model file (sha256 %s..., this model "
                    "%s...); tensor names must still match", sha[:12], model_sha256[:12])
    return Ranges(value, path, sha)
