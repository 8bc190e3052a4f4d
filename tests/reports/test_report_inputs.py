"""Bad and mismatched inputs: one clear PtqError naming the files, and no report file at all."""
from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest

from ptq.errors import ConfigError, PtqError
from ptq.reports import load_inputs, write_report
from zoo import build_two_input_model


@pytest.fixture(scope="module")
def two_input_ranges(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """ranges.json of another model altogether (different node names)."""
    from ptq.calibration import CalibrateConfig, calibrate, write_outputs

    tmp = tmp_path_factory.mktemp("two_input")
    onnx.save_model(build_two_input_model(seed=0), tmp / "two.onnx")
    rng = np.random.default_rng(0)
    np.savez(tmp / "data.npz", a=rng.normal(size=(8, 3, 16, 16)).astype(np.float32),
             b=rng.normal(size=(8, 3, 16, 16)).astype(np.float32))
    return write_outputs(calibrate(tmp / "two.onnx", tmp / "data.npz", CalibrateConfig()),
                         tmp / "out")["ranges.json"]


def _refused(tmp_path: Path, *args, match: str, **kwargs) -> PtqError:
    """write_report fails with PtqError and leaves the previous report byte-identical."""
    out = tmp_path / "report.html"
    out.write_text("previous report")
    with pytest.raises(PtqError, match=match) as info:
        write_report(out, *args, **kwargs)
    assert out.read_text() == "previous report"
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".report")) == []
    assert "\n" not in str(info.value)
    return info.value


def test_sensitivity_of_another_model_is_refused(tmp_path: Path, reexported_ranges: Path,
                                                 digits_sensitivity: dict[str, Path]) -> None:
    sens = digits_sensitivity["sensitivity"]
    err = _refused(tmp_path, reexported_ranges, sens, match="different models")
    assert str(sens) in str(err) and str(reexported_ranges) in str(err)


def test_quantized_model_of_another_model_is_refused(tmp_path: Path, reexported_ranges: Path,
                                                     digits_qdq: Path) -> None:
    err = _refused(tmp_path, reexported_ranges, model=digits_qdq, match="different models")
    assert str(digits_qdq) in str(err) and str(reexported_ranges) in str(err)


def test_unknown_node_names_are_refused_even_without_hashes(tmp_path: Path, two_input_ranges: Path,
                                                            digits_sensitivity: dict[str, Path]) -> None:
    data = json.loads(digits_sensitivity["sensitivity"].read_text())
    data["model"].pop("sha256")
    data["ranges"].pop("model_sha256")
    sens = tmp_path / "no_hashes.json"
    sens.write_text(json.dumps(data))
    err = _refused(tmp_path, two_input_ranges, sens, match=r"6 node\(s\) not in the model of")
    # the digits CNN's nodes that the two-input model lacks (it has add, flatten and fc too);
    # the message names the first four
    named = set(re.findall(r"'([^']+)'", str(err)))
    assert len(named) == 4 and named <= {"conv1", "conv2", "conv3", "conv4", "pool1", "pool2"}


def test_a_model_not_written_by_ptq_is_refused(tmp_path: Path, digits_ranges: Path,
                                               digits_model_path: Path) -> None:
    _refused(tmp_path, digits_ranges, model=digits_model_path, match="no ptq.source_sha256")


@pytest.mark.parametrize("which", ["ranges", "sensitivity", "model"])
def test_missing_files_are_named(tmp_path: Path, digits_ranges: Path, which: str) -> None:
    missing = tmp_path / f"missing.{which}"
    args = {"ranges": (missing,), "sensitivity": (digits_ranges, missing),
            "model": (digits_ranges, None, missing)}[which]
    err = _refused(tmp_path, *args, match="not found")
    assert err.path == str(missing) and err.hint


@pytest.mark.parametrize("content, match", [("{not json", "not a valid ptq ranges file"),
                                            ('{"format": "other"}', "not a valid ptq ranges file")])
def test_broken_ranges_files(tmp_path: Path, content: str, match: str) -> None:
    bad = tmp_path / "ranges.json"
    bad.write_text(content)
    _refused(tmp_path, bad, match=match)


def test_ranges_given_as_sensitivity_and_folders_are_refused(tmp_path: Path,
                                                              digits_ranges: Path) -> None:
    _refused(tmp_path, digits_ranges, digits_ranges, match="not a valid ptq sensitivity file")
    _refused(tmp_path, digits_ranges.parent, match="is a folder")


def test_algorithm_comes_from_the_model_and_conflicts_are_noted(digits_ranges: Path,
                                                                digits_qdq: Path) -> None:
    meta = {p.key: p.value for p in onnx.load(digits_qdq).metadata_props}
    assert load_inputs(digits_ranges, model=digits_qdq).algo == meta["ptq.algo"]
    other = load_inputs(digits_ranges, model=digits_qdq, algo="minmax")
    assert other.algo == "minmax" and any("--algo minmax differs" in n for n in other.notes)
    with pytest.raises(ConfigError, match="no 'bogus' algorithm"):
        load_inputs(digits_ranges, algo="bogus")


def test_moved_fp32_model_falls_back_to_output_tensors(tmp_path: Path, digits_model_path: Path,
                                                       digits_calib_images: Path,
                                                       digits_images: Path) -> None:
    """The real situation: calibrate and measure, then move the FP32 model away."""
    import ptq.sensitivity as sens_mod
    from conftest import DIGITS_PRE
    from ptq.calibration import CalibrateConfig, calibrate, write_outputs

    model = Path(shutil.copy(digits_model_path, tmp_path / "digits.onnx"))
    ranges = write_outputs(calibrate(model, digits_calib_images, CalibrateConfig(preprocess=DIGITS_PRE)),
                           tmp_path / "out")["ranges.json"]
    config = sens_mod.SensitivityConfig(metrics=("cosine",), preprocess=DIGITS_PRE, eval_images=40)
    run = sens_mod.analyze(model, digits_images, config, ranges=ranges)
    _, files = sens_mod.write_outputs(run, tmp_path / "out")
    model.rename(tmp_path / "moved.onnx")
    inputs = load_inputs(ranges, files["sensitivity.json"])
    assert inputs.node_inputs is None
    assert any("is not at" in n and str(model) in n for n in inputs.notes)
    page = write_report(tmp_path / "r.html", ranges, files["sensitivity.json"]).path.read_text()
    top = min(run.result.layers, key=lambda la: la.rank).node
    assert f"output of sensitive layer {top}" in page
