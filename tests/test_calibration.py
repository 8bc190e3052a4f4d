"""`ptq.calibration` end to end on real models: bad models, all-zero tensors, external data, static
batches, multi-input npz, and caches that parse back to the table's ranges."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from ptq.cache import read_cache
from ptq.calibration import CalibrateConfig, PreprocessOptions, calibrate, disagreement, write_outputs
from ptq.calibrators import AMAX_FLOOR, Method
from ptq.errors import CalibrationError, DataError, ModelLoadError
from ptq.table import CalibrationTable
from zoo import build_two_input_model

DIGITS = PreprocessOptions(preset="raw", mean=(0.0,), std=(255.0,))
ALL = CalibrateConfig(algorithms=tuple(Method), preprocess=DIGITS)


@pytest.fixture(scope="module")
def digits_table(digits_ranges: Path) -> CalibrationTable:
    return CalibrationTable.load(digits_ranges)


@pytest.fixture(scope="module")
def few_images(tmp_path_factory, digits_calib_images: Path) -> Path:
    """Ten calibration PNGs (one per class) plus a broken file, in class folders."""
    root = tmp_path_factory.mktemp("few")
    for label in range(10):
        src = sorted((digits_calib_images / str(label)).glob("*.png"))[0]
        (root / str(label)).mkdir()
        (root / str(label) / src.name).write_bytes(src.read_bytes())
    (root / "0" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    return root


def test_every_cache_line_parses_back_to_the_table(digits_table: CalibrationTable, tmp_path: Path) -> None:
    written = write_outputs(digits_table, tmp_path / "out", trt_version="8.6.1")
    assert sorted(written) == ["calib.auto.cache", "calib.entropy.cache", "calib.minmax.cache",
                               "calib.mse.cache", "calib.percentile.cache", "ranges.json"]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted(written)
    for method in Method:
        cache = read_cache(written[f"calib.{method.value}.cache"])
        want = "MinMaxCalibration" if method is Method.MINMAX else "EntropyCalibration2"
        assert (cache.version, cache.algorithm) == (8601, want)
        assert list(cache.amaxes) == list(digits_table.tensors)
        for name, amax in cache.amaxes.items():
            assert amax == pytest.approx(digits_table.amax(name, method), rel=1e-6)
    assert CalibrationTable.load(written["ranges.json"]).to_dict() == digits_table.to_dict()


def test_nothing_is_written_when_a_value_cannot_be_rendered(digits_table: CalibrationTable,
                                                            tmp_path: Path) -> None:
    broken = CalibrationTable.from_dict(digits_table.to_dict())
    broken.tensors["relu2"].amax["mse"] = float("nan")
    with pytest.raises(ValueError):
        write_outputs(broken, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_all_zero_tensor_is_flagged_and_floored(bad_models: dict[str, Path], few_images: Path,
                                                tmp_path: Path) -> None:
    table = calibrate(bad_models["zero_model"], few_images, ALL)
    zeros = table.tensors["zeros"]
    assert (zeros.min, zeros.max, zeros.count) == (0.0, 0.0, 10 * 3 * 16 * 16)
    assert zeros.flags == ["all_zero"] + [f"floored:{m.value}" for m in Method]
    assert zeros.amax == {m.value: AMAX_FLOOR for m in Method}
    assert all(not t.flags for n, t in table.tensors.items() if n != "zeros")
    written = write_outputs(table, tmp_path)
    for method in Method:
        text = written[f"calib.{method.value}.cache"].read_text()
        assert "zeros: 35010204" in text  # 2**-14 / 127: 1/127 (3c010204) with exponent 14 lower
        assert ": 00000000" not in text
        assert read_cache(written[f"calib.{method.value}.cache"]).amaxes["zeros"] == pytest.approx(AMAX_FLOOR)
    stored = json.loads(written["ranges.json"].read_text())["tensors"]
    assert next(t for t in stored if t["name"] == "zeros")["histogram"]["counts"] == [7680]


def test_nan_activation_fails_naming_the_tensor_and_the_model(bad_models, few_images) -> None:
    with pytest.raises(CalibrationError) as err:
        calibrate(bad_models["nan_model"], few_images, ALL)
    message = str(err.value)
    assert "tensor 'bad'" in message and "NaN" in message and str(bad_models["nan_model"]) in message


def test_external_data_model_matches_the_inline_model(bad_models, digits_model_path, few_images) -> None:
    inline = calibrate(digits_model_path, few_images, ALL)
    external = calibrate(bad_models["external_data"], few_images, ALL)
    assert external.to_dict()["tensors"] == inline.to_dict()["tensors"]
    folder = bad_models["external_data"].parent
    h = hashlib.sha256((folder / "model.onnx").read_bytes() + (folder / "weights.bin").read_bytes())
    assert external.model["sha256"] == h.hexdigest() != inline.model["sha256"]


@pytest.mark.parametrize("name, match", [
    ("external_data_missing", "external weight data could not be read"),
    ("corrupt", "not a valid ONNX file"),
    ("int_input", "no float input"),
])
def test_bad_models_fail_naming_the_file(bad_models, few_images, name: str, match: str) -> None:
    with pytest.raises(ModelLoadError, match=match) as err:
        calibrate(bad_models[name], few_images, ALL)
    assert str(bad_models[name]) in str(err.value) and "fix:" in str(err.value)


def test_missing_model(tmp_path: Path, few_images: Path) -> None:
    with pytest.raises(ModelLoadError, match="model file not found"):
        calibrate(tmp_path / "nope.onnx", few_images, ALL)


def test_static_batch_model(bad_models, digits_calib_images, few_images) -> None:
    table = calibrate(bad_models["static_batch"], digits_calib_images,
                      CalibrateConfig(preprocess=DIGITS, max_images=18, batch_size=7))
    assert table.data["batch_size"] == 4 and table.data["num_samples"] == 16  # 18 -> 4 x 4, 2 dropped
    assert table.tensors["conv1"].shape == [4, 16, 16, 16]
    with pytest.raises(DataError, match="no usable samples.*fixed at 4") as err:
        calibrate(bad_models["static_batch"], few_images, CalibrateConfig(preprocess=DIGITS, max_images=3))
    assert "at least 4" in str(err.value)


def test_two_input_model_through_npz(tmp_path: Path) -> None:
    import onnx

    model = tmp_path / "two.onnx"
    onnx.save_model(build_two_input_model(), model)
    rng = np.random.default_rng(0)
    a = rng.uniform(-1, 2, (9, 3, 16, 16)).astype(np.float32)
    b = rng.uniform(-3, 0.5, (9, 3, 16, 16)).astype(np.float32)
    np.savez(tmp_path / "data.npz", a=a, b=b)
    table = calibrate(model, tmp_path / "data.npz", CalibrateConfig(algorithms=tuple(Method), batch_size=4))
    assert list(table.tensors) == ["a", "b", "conv_a", "conv_b", "add", "pool", "flatten", "out"]
    assert (table.tensors["a"].min, table.tensors["a"].max) == (float(a.min()), float(a.max()))
    assert table.tensors["b"].amax["minmax"] == float(np.abs(b).max())
    assert table.data["num_samples"] == 9 and table.data["kind"] == "arrays"
    with pytest.raises(DataError, match="image folder feeds one input"):
        calibrate(model, tmp_path, CalibrateConfig())


def test_skipped_images_and_strict(digits_model_path: Path, few_images: Path) -> None:
    table = calibrate(digits_model_path, few_images, ALL)
    assert table.data["num_samples"] == 10
    assert [s["file"] for s in table.data["skipped"]] == ["0/broken.png"]
    assert len(table.data["files"]) == 10 and "0/broken.png" not in table.data["files"]
    with pytest.raises(DataError, match="broken.png"):
        calibrate(digits_model_path, few_images, CalibrateConfig(preprocess=DIGITS, strict=True))


def test_empty_folder_and_no_samples(digits_model_path: Path, tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no images found"):
        calibrate(digits_model_path, tmp_path, ALL)
    with pytest.raises(DataError, match="no usable samples"):
        calibrate(digits_model_path, [], ALL)


def test_max_images_seed_and_progress(digits_model_path: Path, digits_calib_images: Path) -> None:
    seen: list[int] = []
    config = CalibrateConfig(preprocess=DIGITS, max_images=30, seed=5, batch_size=8)
    table = calibrate(digits_model_path, digits_calib_images, config, progress=seen.append)
    assert seen == [8, 8, 8, 6]
    assert (table.data["max_images"], table.data["seed"], table.data["batch_size"]) == (30, 5, 8)
    other = calibrate(digits_model_path, digits_calib_images,
                      CalibrateConfig(preprocess=DIGITS, max_images=30, seed=6))
    assert len(set(table.data["files"])) == 30 and table.data["files"] != other.data["files"]
    assert table.methods == ["auto"]  # the default


def test_disagreement_ranks_by_amax_ratio(digits_table: CalibrationTable) -> None:
    rows = disagreement(digits_table, top=20)
    assert len(rows) == len(digits_table.tensors)
    ratios = [r for _, r, _ in rows]
    assert ratios == sorted(ratios, reverse=True) and min(ratios) >= 1.0
    name, ratio, amax = rows[0]
    assert ratio == pytest.approx(max(amax.values()) / min(amax.values()))
    assert amax == digits_table.tensors[name].amax


@pytest.mark.slow
def test_efficientnet_on_real_photos(effnet_ranges: Path, sample_photos: Path) -> None:
    table = CalibrationTable.load(effnet_ranges)
    assert len(table.tensors) == 95 and table.data["num_samples"] == 20
    first = table.tensors["input"]
    assert -127 / 128 <= first.min < 0 < first.max <= 128 / 128  # (pixel - 127) / 128
    for name, t in table.tensors.items():
        assert not t.flags, name
        if t.op_type == "Clip":  # ReLU6
            assert t.min == 0.0 and t.max <= 6.0 and t.amax["minmax"] <= 6.0
        for method, amax in t.amax.items():
            assert AMAX_FLOOR < amax <= t.amax["minmax"] + 2 * t.histogram.bin_width, (name, method)
    assert table.tensors["logits"].producer == "fc"
    assert sorted(table.data["files"]) == sorted(p.name for p in sample_photos.iterdir())
