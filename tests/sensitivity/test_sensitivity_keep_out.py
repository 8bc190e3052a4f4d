"""`ptq sensitivity --fp32/--fp16`: nodes kept out of INT8 in every variant, as quantize does;
metrics chosen per output when none is named; the per-output baseline in sensitivity.json."""
from __future__ import annotations

import json

import onnx
import pytest

from ptq.cli import main
from ptq.graph.precisions import Precision, layer_precisions
from sens_helpers import DIGITS_FLAGS


def test_fp16_and_fp32_pins_hold_in_every_variant(digits_model_path, digits_images, digits_ranges,
                                                  tmp_path, capsys):
    out = tmp_path / "out"
    code = main(["sensitivity", str(digits_model_path), "--data", str(digits_images), *DIGITS_FLAGS,
                 "--ranges", str(digits_ranges), "-o", str(out), "--eval-images", "40",
                 "--fp16", "conv2", "--fp32", "fc", "--auto", "--target", "cosine>=0.0",
                 "--max-pins", "0"])
    text = capsys.readouterr().out
    assert code == 0, text
    data = json.loads((out / "sensitivity.json").read_text())
    nodes = {r["node"] for r in data["layers"]}
    assert "conv2" not in nodes and "fc" not in nodes and "conv1" in nodes  # no variant of a pinned node
    assert data["settings"]["fp16"] == ["conv2"] and data["settings"]["fp32"] == ["fc"]
    # the auto model (0 pins of its own) still carries the user's pins
    precisions = layer_precisions(onnx.load(data["auto"]["model_path"]))
    assert precisions["conv2"] is Precision.FP16 and precisions["fc"] is Precision.FP32
    assert precisions["conv1"] is Precision.INT8
    # no metric named: cosine + top1 (the logits have a class axis), per output in the record
    assert data["settings"]["metrics"] == ["cosine", "top1"]
    per = data["baseline"]["outputs"]
    assert per["specs"] == {"logits": "classes, class axis 1"}
    assert per["outputs"]["logits"]["cosine"] == pytest.approx(data["baseline"]["metrics"]["cosine"])
    assert "all-INT8 baseline per output" in text and "logits [classes, class axis 1]" in text


def test_overlapping_fp16_fp32_and_unknown_output_are_one_line_errors(digits_model_path, digits_images,
                                                                      digits_ranges, tmp_path, capsys):
    base = ["sensitivity", str(digits_model_path), "--data", str(digits_images), *DIGITS_FLAGS,
            "--ranges", str(digits_ranges), "-o", str(tmp_path / "o"), "--eval-images", "8"]
    assert main([*base, "--fp16", "conv.*", "--fp32", "conv2"]) == 1
    err = capsys.readouterr().err
    assert "pinned to both" in err and err.count("\n") == 1
    assert main([*base, "--output-kind", "scores=classes"]) == 1
    assert "not outputs of the model" in capsys.readouterr().err
    assert main([*base, "--metric", "map-iou"]) == 1
    assert "does not apply to any output" in capsys.readouterr().err
    assert not (tmp_path / "o" / "sensitivity.json").exists()


def test_quantize_output_kind_override(digits_model_path, digits_ranges, tmp_path, capsys):
    """--output-kind logits=tensor: no top-1 on that output; an unknown name fails first."""
    out = tmp_path / "m.int8.onnx"
    assert main(["quantize", str(digits_model_path), "--ranges", str(digits_ranges),
                 "-o", str(out), "--output-kind", "logits=tensor"]) == 0
    text = capsys.readouterr().out
    assert "logits [tensor]: cosine" in text and "top-1 agreement" not in text
    bad = tmp_path / "bad.int8.onnx"
    assert main(["quantize", str(digits_model_path), "--ranges", str(digits_ranges),
                 "-o", str(bad), "--output-kind", "scores=map"]) == 1
    assert "not outputs of the model" in capsys.readouterr().err and not bad.exists()
