"""The qps figures `ptq lint` cites are the ones in the real trex engine files."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from ptq.lint.evidence import RESNET18_A100_QPS

FIX = Path(__file__).resolve().parents[1] / "data" / "trt" / "trex-resnet18-a100"


@pytest.mark.parametrize("variant", sorted(RESNET18_A100_QPS))
def test_qps_read_from_the_fixture(variant: str) -> None:
    meta = next((FIX / variant).glob("*.profile.metadata.json"))
    summary = json.loads(meta.read_text())["performance_summary"]
    assert RESNET18_A100_QPS[variant] == summary["Throughput"]
