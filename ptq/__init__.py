"""ptq: post-training INT8 quantization workbench for ONNX vision models on TensorRT.

The Python API mirrors the CLI:

    table = ptq.calibrate("model.onnx", "images/", ptq.CalibrateConfig(algorithms=tuple(ptq.Method)))
    qdq = ptq.quantize("model.onnx", table, pins={"head.conv": "fp16"})   # onnx.ModelProto
    run = ptq.analyze_sensitivity("model.onnx", "images/", ranges=table)
    from ptq.reports import write_report                                  # (imports matplotlib)

The implementations live in ptq.calibration, ptq.quantization, ptq.sensitivity and
ptq.reports; this module only re-exports them, on first use: a command imports what it runs
(`ptq calibrate` never imports the sensitivity or quantization code; 0.1 s of its start).
"""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from ptq.errors import PtqError
from ptq.version import __version__

# name -> (module, attribute)
_EXPORTS = {
    "CalibrationCache": ("ptq.cache", "CalibrationCache"),
    "read_cache": ("ptq.cache", "read_cache"),
    "write_cache": ("ptq.cache", "write_cache"),
    "CalibrateConfig": ("ptq.calibration", "CalibrateConfig"),
    "PreprocessOptions": ("ptq.calibration", "PreprocessOptions"),
    "calibrate": ("ptq.calibration", "calibrate"),
    "write_outputs": ("ptq.calibration", "write_outputs"),
    "AlgorithmSettings": ("ptq.calibrators", "AlgorithmSettings"),
    "Method": ("ptq.calibrators", "Method"),
    "Pin": ("ptq.quantization", "Pin"),
    "Precision": ("ptq.quantization", "Precision"),
    "QuantizeConfig": ("ptq.quantization", "QuantizeConfig"),
    "quantizable_nodes": ("ptq.quantization", "quantizable_nodes"),
    "quantize": ("ptq.quantization", "quantize"),
    "SensitivityConfig": ("ptq.sensitivity", "SensitivityConfig"),
    "analyze_sensitivity": ("ptq.sensitivity", "analyze"),
    "CalibrationTable": ("ptq.table", "CalibrationTable"),
    "TensorRange": ("ptq.table", "TensorRange"),
}

__all__ = sorted([*_EXPORTS, "PtqError", "__version__"])

if TYPE_CHECKING:
    from ptq.cache import CalibrationCache, read_cache, write_cache
    from ptq.calibration import CalibrateConfig, PreprocessOptions, calibrate, write_outputs
    from ptq.calibrators import AlgorithmSettings, Method
    from ptq.quantization import Pin, Precision, QuantizeConfig, quantizable_nodes, quantize
    from ptq.sensitivity import SensitivityConfig
    from ptq.sensitivity import analyze as analyze_sensitivity
    from ptq.table import CalibrationTable, TensorRange


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'ptq' has no attribute {name!r}")
    module, attr = _EXPORTS[name]
    value = getattr(importlib.import_module(module), attr)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_EXPORTS})
