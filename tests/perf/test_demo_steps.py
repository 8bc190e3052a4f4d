"""The demo's last two steps (lint, CPU bench FP32 vs INT8) on the digits CNN: quick here;
tests/cli/test_cli_demo.py runs the whole demo on EfficientNet-Lite0."""
from __future__ import annotations

import json
from pathlib import Path

from ptq.demo import DemoResult, step_bench, step_lint
from ptq.table import CalibrationTable


def test_demo_lint_and_bench(tmp_path: Path, digits_model_path: Path, digits_ranges: Path) -> None:
    from ptq.quantization import QuantizeConfig, quantize, save_model

    int8 = tmp_path / "digits.int8.onnx"
    save_model(quantize(digits_model_path, CalibrationTable.load(digits_ranges),
                        config=QuantizeConfig(algo="entropy")), int8)
    res = DemoResult(outdir=tmp_path, model=digits_model_path, photos=tmp_path,
                     artifacts={"int8.onnx": int8})
    lint = step_lint(res)["digits.int8.onnx"]
    assert lint.findings == []
    assert json.loads((tmp_path / "lint.json").read_text())["digits.int8.onnx"]["counts"] == {}
    fp32, q = step_bench(res, duration_s=0.2)
    data = json.loads((tmp_path / "bench.json").read_text())
    assert [r["label"] for r in data["results"]] == ["fp32", "int8"]
    assert fp32.batch == q.batch == 1 and fp32.queries >= 5 and q.queries >= 5
    assert data["results"][1]["metrics"]["Throughput"] == q.metrics["Throughput"] > 0
