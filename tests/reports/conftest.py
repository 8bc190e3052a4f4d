"""Artifacts the report tests read, each produced once per session by the real ptq steps.

digits (fast): ranges.json (session fixture `digits_ranges`), a QDQ model with one FP32 and
one FP16 pin (`ptq.quantization`), a sensitivity run with labels and an auto fallback
(`ptq.sensitivity`), and
ranges.json of a re-exported copy of the same network (same node names, different bytes)
for the mismatch tests.
"""
from __future__ import annotations

from pathlib import Path

import onnx
import pytest

import ptq.sensitivity as sens
from ptq import quantization
from ptq.calibration import CalibrateConfig, PreprocessOptions, calibrate, write_outputs

DIGITS_PRE = PreprocessOptions(preset="raw", mean=(0.0,), std=(255.0,))
FP32_PIN_REASON = "kept FP32 for the report test: stem conv"
FP16_PIN_REASON = "FP16 island for the report test"


@pytest.fixture(scope="session")
def digits_qdq(tmp_path_factory: pytest.TempPathFactory, digits_model_path: Path,
               digits_ranges: Path) -> Path:
    """The digits CNN quantized with entropy ranges; conv1 pinned FP32, conv3 pinned FP16."""
    model = quantization.quantize(digits_model_path, digits_ranges, pins=[
        quantization.Pin("conv1", quantization.Precision.FP32, FP32_PIN_REASON),
        quantization.Pin("conv3", quantization.Precision.FP16, FP16_PIN_REASON)])
    return quantization.save_model(model, tmp_path_factory.mktemp("digits_qdq") / "digits.int8.onnx")


@pytest.fixture(scope="session")
def digits_sensitivity(tmp_path_factory: pytest.TempPathFactory, digits_model_path: Path,
                       digits_images: Path, digits_ranges: Path) -> dict[str, Path]:
    """sensitivity.json (top-1 accuracy with labels, cosine, max-abs; leave-one-out, FP16 pins)
    plus the auto-fallback model, from a real run of `ptq.sensitivity`."""
    config = sens.SensitivityConfig(metrics=("top1", "cosine", "max-abs"), labels=True,
                                    preprocess=DIGITS_PRE,
                                    auto=sens.AutoConfig(target="cosine>=0.99999", max_pins=2))
    run = sens.analyze(digits_model_path, digits_images, config, ranges=digits_ranges)
    result, files = sens.write_outputs(run, tmp_path_factory.mktemp("digits_sensitivity"))
    return {"sensitivity": files["sensitivity.json"],
            "auto_model": Path(result.auto.model_path)}


@pytest.fixture(scope="session")
def reexported_ranges(tmp_path_factory: pytest.TempPathFactory, digits_model_path: Path,
                      digits_calib_images: Path) -> Path:
    """ranges.json of the same digits network saved again with another doc string: identical
    node and tensor names, different file, different sha256."""
    model = onnx.load(digits_model_path)
    model.doc_string = "re-exported"
    path = tmp_path_factory.mktemp("reexported") / "digits_reexported.onnx"
    onnx.save_model(model, path)
    table = calibrate(path, digits_calib_images, CalibrateConfig(preprocess=DIGITS_PRE))
    return write_outputs(table, path.parent / "out")["ranges.json"]


@pytest.fixture(scope="session")
def digits_full_report(tmp_path_factory: pytest.TempPathFactory, digits_ranges: Path,
                       digits_sensitivity: dict[str, Path]) -> Path:
    """The report a reviewer gets after the whole workflow: ranges + sensitivity + auto model."""
    from ptq.reports import write_report

    out = tmp_path_factory.mktemp("digits_full_report") / "report.html"
    write_report(out, digits_ranges, digits_sensitivity["sensitivity"],
                 digits_sensitivity["auto_model"])
    return out


@pytest.fixture(scope="session")
def digits_ranges_report(tmp_path_factory: pytest.TempPathFactory, digits_ranges: Path) -> Path:
    """The report from ranges.json alone (sensitivity parts omitted with a note)."""
    from ptq.reports import write_report

    return write_report(tmp_path_factory.mktemp("digits_ranges_report") / "report.html",
                        digits_ranges).path
