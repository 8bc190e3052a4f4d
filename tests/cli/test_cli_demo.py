"""`ptq demo` end to end: the README's first command, on the real model and photos."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest

from ptq.cache import read_cache
from ptq.cli import main
from ptq.graph.precisions import Precision, layer_precisions
from ptq.table import CalibrationTable


@pytest.mark.slow
def test_demo_writes_every_artifact_and_they_agree(tmp_path: Path, capsys) -> None:
    out = tmp_path / "demo"
    assert main(["demo", "-o", str(out)]) == 0
    printed = capsys.readouterr().out
    for step in ("[1/5]", "[2/5]", "[3/5]", "[4/5]", "[5/5]"):
        assert step in printed

    table = CalibrationTable.load(out / "ranges.json")
    assert table.methods == ["entropy", "minmax", "percentile", "mse", "auto"]
    assert table.data["num_samples"] == len(list((out / "photos").iterdir())) == 20
    for algo in table.methods:  # each cache holds exactly the table's ranges
        cache = read_cache(out / f"calib.{algo}.cache")
        assert cache.amaxes.keys() == table.tensors.keys()
        assert np.allclose(list(cache.amaxes.values()), list(table.amaxes(algo).values()),
                           rtol=1e-6)

    sens = json.loads((out / "sensitivity.json").read_text())
    assert sens["model"]["sha256"] == table.model["sha256"]
    best = sens["layers"][0]
    assert best["rank"] == 1 and best["delta"]["cosine"] > 0  # pinning the top layer helps

    auto = onnx.load(out / "efficientnet_lite0.auto.onnx")
    pins = json.loads({p.key: p.value for p in auto.metadata_props}["ptq.pins"])
    precisions = layer_precisions(auto)
    assert pins == sens["auto"]["pins"]
    assert all(precisions[p["node"]] is Precision.FP16 for p in pins)
    # the default (auto + bias correction) gives cosine ~0.993 all-INT8 on the photos; the demo's
    # target, 0.995, needs the fallback (measured: 1 FP16 pin); issue 10 allows at most 3
    assert sens["auto"]["target"] == "cosine>=0.995" and sens["auto"]["met"]
    assert 1 <= len(pins) <= 3
    assert sens["auto"]["metrics"]["cosine"] > sens["baseline"]["metrics"]["cosine"]

    html = (out / "report.html").read_text()
    assert "efficientnet_lite0" in html and best["node"] in html
    assert "trtexec --onnx=" in (out / "efficientnet_lite0.int8.trtexec.txt").read_text()
