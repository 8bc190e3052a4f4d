"""ranges.json (CalibrationTable): exact round trip, the contents the spec lists, and refusals."""
from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

import numpy as np
import pytest

from ptq.calibrators import Method
from ptq.errors import ConfigError, PtqError
from ptq.histogram import Histogram
from ptq.table import FORMAT, CalibrationTable, TensorRange
from ptq.version import __version__
from zoo import DIGITS_NODES


def test_load_save_round_trip_is_exact(digits_ranges: Path, tmp_path: Path) -> None:
    on_disk = json.loads(digits_ranges.read_text())
    table = CalibrationTable.load(digits_ranges)
    assert table.to_dict() == on_disk
    again = table.save(tmp_path / "copy" / "ranges.json")
    assert json.loads(again.read_text()) == on_disk
    assert CalibrationTable.load(again).to_dict() == on_disk


def test_contents(digits_ranges: Path, digits_model_path: Path, digits_calib_images: Path) -> None:
    d = json.loads(digits_ranges.read_text())
    assert d["format"] == FORMAT and d["ptq_version"] == __version__
    model = d["model"]
    assert model["sha256"] == hashlib.sha256(digits_model_path.read_bytes()).hexdigest()
    assert model["inputs"] == [{"name": "image", "dtype": "float32", "shape": ["N", 3, 16, 16]}]
    assert model["opset"] == 17
    data = d["data"]
    images = sorted(str(p.relative_to(digits_calib_images)) for p in digits_calib_images.rglob("*.png"))
    assert sorted(data["files"]) == images and data["num_samples"] == len(images) == 200
    assert data["skipped"] == [] and data["classes"] == [str(i) for i in range(10)]
    pre = data["preprocessing"]
    assert (pre["preset"], pre["size"], pre["mean"], pre["std"]) == ("raw", [16, 16], [0.0] * 3, [255.0] * 3)
    assert d["settings"]["algorithms"] == [m.value for m in Method]
    assert d["settings"]["num_bins"] == 2048 and d["settings"]["percentile"] == 99.99

    tensors = {t["name"]: t for t in d["tensors"]}
    producers = [t["producer"] for t in d["tensors"]]
    assert producers == [None, *DIGITS_NODES]  # graph order; the input first
    assert tensors["image"]["op_type"] == "Input" and tensors["logits"]["producer"] == "fc"
    assert tensors["conv1"]["op_type"] == "Conv" and tensors["add"]["op_type"] == "Add"
    assert tensors["conv1"]["shape"] == ["N", 16, 16, 16] and tensors["logits"]["shape"] == ["N", 10]
    for t in d["tensors"]:
        assert t["dtype"] == "float32" and t["flags"] == []
        assert set(t["amax"]) == {m.value for m in Method}
        h = t["histogram"]
        # saved up to the bin holding max|x|, on a power-of-two range: 1025..2048 bins
        assert h["num_bins"] == 2048 and 1024 < len(h["counts"]) <= 2048 and h["counts"][-1] > 0
        assert sum(h["counts"]) == t["count"] == 200 * math.prod(t["shape"][1:])
        np.testing.assert_allclose(h["edges"], np.arange(len(h["counts"]) + 1) * h["bin_width"])
        assert h["edges"][-1] >= max(abs(t["min"]), abs(t["max"]))
    assert tensors["image"]["min"] == 0.0 and tensors["image"]["max"] == 1.0
    assert tensors["relu1"]["min"] == 0.0 and tensors["conv1"]["min"] < 0.0


def test_amax_lookups(digits_ranges: Path) -> None:
    table = CalibrationTable.load(digits_ranges)
    assert table.amaxes(Method.MINMAX)["relu1"] == table.amax("relu1", "minmax") == table.tensors["relu1"].max
    assert list(table.amaxes("entropy")) == list(table.tensors)
    table.settings["algorithms"] = ["entropy"]
    with pytest.raises(ConfigError, match="no 'mse'") as err:
        table.amaxes("mse")
    assert "--algo" in str(err.value)
    with pytest.raises(ConfigError, match="no 'kl' range for tensor 'relu1'"):
        table.amax("relu1", "kl")


def test_an_all_zero_tensor_round_trips() -> None:
    t = TensorRange("z", "mul", "Mul", ["N", 4], "float32", 0.0, 0.0, 12,
                    Histogram(2048, 0.0, np.zeros(0, np.int64), 12), {"minmax": 2.0 ** -14},
                    ["all_zero", "floored:minmax"])
    d = t.to_dict()
    assert d["histogram"] == {"num_bins": 2048, "bin_width": 0.0, "counts": [12], "edges": [0.0, 0.0]}
    back = TensorRange.from_dict(json.loads(json.dumps(d)))
    assert back.to_dict() == d and back.histogram.pending_zeros == 12


@pytest.mark.parametrize("bad", [0.0, -1.0, float("nan"), float("inf")])
def test_load_refuses_zero_negative_or_non_finite_amax(digits_ranges: Path, tmp_path: Path, bad) -> None:
    d = json.loads(digits_ranges.read_text())
    d["tensors"][3]["amax"]["entropy"] = bad
    path = tmp_path / "ranges.json"
    path.write_text(json.dumps(d))  # allow_nan: the way a careless writer would store it
    with pytest.raises(PtqError) as err:
        CalibrationTable.load(path)
    assert str(path) in str(err.value) and d["tensors"][3]["name"] in str(err.value)
    assert "fix:" in str(err.value)


@pytest.mark.parametrize("content", ["", "{", '{"format": "other/1", "tensors": []}',
                                     '{"format": "ptq.ranges/1"}', "[1, 2]"])
def test_load_refuses_other_files(tmp_path: Path, content: str) -> None:
    path = tmp_path / "ranges.json"
    path.write_text(content)
    with pytest.raises(PtqError, match="not a valid ptq ranges file"):
        CalibrationTable.load(path)
    with pytest.raises(PtqError, match="not found"):
        CalibrationTable.load(tmp_path / "missing.json")


def test_save_refuses_nan_rather_than_writing_invalid_json(digits_ranges: Path, tmp_path: Path) -> None:
    table = CalibrationTable.load(digits_ranges)
    table.tensors["relu1"].max = float("nan")
    with pytest.raises(ValueError):
        table.save(tmp_path / "ranges.json")
    assert list(tmp_path.iterdir()) == []
