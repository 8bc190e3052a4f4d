"""`ptq quantize` end to end through `ptq.cli.main` on the digits CNN and real images."""
from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path

import onnx
import pytest

from ptq.cache import write_cache
from ptq.cli import main
from ptq.graph.precisions import Precision, layer_precisions
from ptq.table import CalibrationTable

RAW = ["--preset", "raw", "--mean", "0", "--std", "255"]


def test_quantize_writes_model_commands_and_prints_accuracy(tmp_path: Path, digits_model_path: Path,
                                                            digits_ranges: Path, capsys) -> None:
    out = tmp_path / "out" / "digits.int8.onnx"
    code = main(["quantize", str(digits_model_path), "--ranges", str(digits_ranges), "--algo", "percentile",
                 "-o", str(out), "--fp16", "conv2", "relu2", "--fp32", "fc"])
    text = capsys.readouterr().out
    assert code == 0
    model = onnx.load(out)
    onnx.checker.check_model(model, full_check=True)
    precisions = layer_precisions(model)
    assert precisions["conv2"] is Precision.FP16 and precisions["fc"] is Precision.FP32
    assert precisions["conv1"] is Precision.INT8
    assert "layers: 6 INT8, 2 FP16, 5 FP32" in text
    # default evaluation: the calibration images named in ranges.json, with its preprocessing;
    # percentile ranges are sound on this model (cosine 0.9999 all-INT8), pins only add FP16 rounding
    # (cosine is pooled over every image's logits)
    assert "cosine 0.99" in text and "top-1 agreement" in text and "top-1 accuracy" in text
    commands = (tmp_path / "out" / "digits.int8.trtexec.txt").read_text()
    # the digits CNN's batch is dynamic: an optimization profile from the calibration batch
    # (16x16 RGB, batch 1 up to the batch ranges.json records)
    batch = CalibrationTable.load(digits_ranges).data["batch_size"]
    shapes = (f"--minShapes=image:1x3x16x16 --optShapes=image:{batch}x3x16x16 --maxShapes=image:{batch}x3x16x16"
              if batch > 1 else "--shapes=image:1x3x16x16")
    assert f"trtexec --onnx={out} {shapes} --saveEngine={out.with_suffix('.plan')} --noTF32" in commands, \
        commands
    # ptq calibrate wrote calib.percentile.cache beside ranges.json: the TRT <= 10 line uses it
    assert f"--int8 --calib={digits_ranges.parent / 'calib.percentile.cache'}" in commands
    assert "--layerPrecisions=conv2:fp16,relu2:fp16,fc:fp32" in commands
    assert commands in text


def test_quantize_from_cache_with_eval_dir(tmp_path: Path, digits_model_path: Path, digits_ranges: Path,
                                           digits_images: Path, capsys) -> None:
    cache = write_cache(tmp_path / "calib.cache", CalibrationTable.load(digits_ranges).amaxes("minmax"))
    out = tmp_path / "m.onnx"
    code = main(["quantize", str(digits_model_path), "--cache", str(cache), "-o", str(out),
                 "--eval", str(digits_images), *RAW, "--trt-version", "11"])
    text = capsys.readouterr().out
    assert code == 0 and out.is_file()
    assert f"on {digits_images}" in text and "top-1 accuracy" in text
    assert "algo cache:EntropyCalibration2" in text
    assert "--calib" not in text  # --trt-version 11: only the TensorRT 11 line


@pytest.mark.parametrize("case", ["other_model", "bad_cache", "no_match", "algo_with_cache",
                                  "missing_weights", "missing_ranges", "bad_eval"])
def test_bad_input_exits_nonzero_without_output(case: str, tmp_path: Path, digits_model_path: Path,
                                                digits_ranges: Path, bad_models: dict[str, Path],
                                                capsys) -> None:
    out = tmp_path / "out"
    model, ranges = str(digits_model_path), ["--ranges", str(digits_ranges)]
    extra: list[str] = []
    if case == "other_model":      # same file layout, every tensor renamed
        table = CalibrationTable.load(digits_ranges)
        table.tensors = {f"x/{k}": replace(v, name=f"x/{k}") for k, v in table.tensors.items()}
        ranges = ["--ranges", str(table.save(tmp_path / "ranges.json"))]
    elif case == "bad_cache":
        (tmp_path / "bad.cache").write_text("TRT-100300-EntropyCalibration2\nimage: nothex!\n")
        ranges = ["--cache", str(tmp_path / "bad.cache")]
    elif case == "no_match":
        extra = ["--fp16", "conv"]
    elif case == "algo_with_cache":
        cache = write_cache(tmp_path / "c.cache", {"image": 1.0})
        ranges = ["--cache", str(cache), "--algo", "minmax"]
    elif case == "missing_weights":
        model = str(bad_models["external_data_missing"])
    elif case == "missing_ranges":
        ranges = ["--ranges", str(tmp_path / "nope.json")]
    elif case == "bad_eval":
        extra = ["--eval", str(tmp_path / "no_such_dir")]
    code = main(["quantize", model, *ranges, "-o", str(out / "m.onnx"), *extra])
    err = capsys.readouterr().err.strip()
    assert code == 1
    assert err.startswith("ptq quantize: error:") and "\n" not in err and "(fix:" in err
    assert not out.exists()


def test_usage_errors(tmp_path: Path, digits_model_path: Path, digits_ranges: Path) -> None:
    assert main(["quantize", str(digits_model_path)]) == 2  # neither --ranges nor --cache
    copy = tmp_path / "m.onnx"
    shutil.copy(digits_model_path, copy)
    assert main(["quantize", str(copy), "--ranges", str(digits_ranges), "-o", str(copy)]) == 1
