"""ptq: post-training INT8 quantization workbench for ONNX vision models on TensorRT.

The Python API mirrors the CLI:

    table = ptq.calibrate("model.onnx", "images/", ptq.CalibrateConfig(algorithms=tuple(ptq.Method)))
    qdq = ptq.quantize("model.onnx", table, pins={"head.conv": "fp16"})   # onnx.ModelProto
    run = ptq.analyze_sensitivity("model.onnx", "images/", ranges=table)
    from ptq.reports import write_report                                  # (imports matplotlib)

The implementations live in ptq.calibration, ptq.quantization, ptq.sensitivity and
ptq.reports; this module only re-exports them.
"""
from __future__ import annotations

from ptq.cache import CalibrationCache, read_cache, write_cache
from ptq.calibration import CalibrateConfig, PreprocessOptions, calibrate, write_outputs
from ptq.calibrators import AlgorithmSettings, Method
from ptq.errors import PtqError
from ptq.quantization import Pin, Precision, QuantizeConfig, quantizable_nodes, quantize
from ptq.sensitivity import SensitivityConfig
from ptq.sensitivity import analyze as analyze_sensitivity
from ptq.table import CalibrationTable, TensorRange
from ptq.version import __version__

__all__ = [
    "AlgorithmSettings", "CalibrateConfig", "CalibrationCache", "CalibrationTable", "Method", "Pin",
    "Precision", "PreprocessOptions", "PtqError", "QuantizeConfig", "SensitivityConfig",
    "TensorRange", "__version__", "analyze_sensitivity", "calibrate", "quantizable_nodes",
    "quantize", "read_cache", "write_cache", "write_outputs",
]
