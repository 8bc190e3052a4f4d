"""TensorRT optimization profiles and trtexec lines for dynamic inputs, and the <= 10 line
never pointing --calib at a cache trtexec's EntropyCalibrator2 would skip (TENSORRT.md §1.3-1.4).

TensorRT cannot be installed here: these are the pure parts (shapes, command text).
"""
from __future__ import annotations

from pathlib import Path

import pytest
from onnx import TensorProto

from ptq.backends.trt import ShapeRange, parse_shapes, profile_shapes, trtexec_shape_flags
from ptq.cache import ENTROPY_HEADER, MINMAX_HEADER, write_cache
from ptq.errors import ConfigError
from ptq.graph.model import TensorInfo
from ptq.trtexec import commands_text, data_shapes, shapes_for, trt_commands

DBNET = TensorInfo("x", TensorProto.FLOAT, (None, 3, None, None))
STATIC = TensorInfo("x", TensorProto.FLOAT, (1, 3, 224, 224))
REC = TensorInfo("x", TensorProto.FLOAT, ("N", 3, 48, None))


def test_parse_shapes():
    assert parse_shapes("x:1x3x640x640") == {"x": ShapeRange("x", (1, 3, 640, 640), (1, 3, 640, 640),
                                                             (1, 3, 640, 640))}
    r = parse_shapes("x:1x3x320x320/4x3x640x640/8x3x960x960, y:2")["x"]
    assert (r.min, r.opt, r.max) == ((1, 3, 320, 320), (4, 3, 640, 640), (8, 3, 960, 960))
    for bad in ("x", "x:1x0x3", "x:1x3/2x3", "x:4x3/2x3/8x3", "x:ax3"):
        with pytest.raises(ConfigError):
            parse_shapes(bad)


def test_profile_from_data_keeps_batch_one_as_minimum():
    prof = profile_shapes([DBNET], {"x": (8, 3, 640, 640)})
    assert prof["x"] == ShapeRange("x", (1, 3, 640, 640), (8, 3, 640, 640), (8, 3, 640, 640))
    assert profile_shapes([STATIC], {"x": (1, 3, 224, 224)}) == {}  # static: no profile
    given = parse_shapes("x:1x3x48x320/4x3x48x320/8x3x48x640")
    assert profile_shapes([REC], {"x": (2, 3, 48, 320)}, given)["x"] == given["x"]  # --shapes wins


def test_profile_errors_name_the_input_and_the_fix():
    with pytest.raises(ConfigError, match="input 'x' has dynamic dims.*--shapes x:Nx3xNxN"):
        profile_shapes([DBNET])
    with pytest.raises(ConfigError, match="does not fit input 'x'"):
        profile_shapes([REC], {"x": (1, 3, 32, 320)})  # H is static 48
    with pytest.raises(ConfigError, match="not inputs of the model"):
        profile_shapes([REC], given=parse_shapes("y:1x3x48x320"))


def test_trtexec_flags():
    fixed = profile_shapes([REC], given=parse_shapes("x:1x3x48x320"))
    assert trtexec_shape_flags(fixed) == ["--shapes=x:1x3x48x320"]
    ranged = profile_shapes([DBNET], {"x": (4, 3, 640, 640)})
    assert trtexec_shape_flags(ranged) == ["--minShapes=x:1x3x640x640", "--optShapes=x:4x3x640x640",
                                           "--maxShapes=x:4x3x640x640"]


def test_data_shapes_from_the_recorded_preprocessing():
    pre = {"size": [640, 608], "layout": "NCHW", "channels": 3}
    assert data_shapes([DBNET], pre, 2) == {"x": (2, 3, 640, 608)}
    nhwc = TensorInfo("x", TensorProto.FLOAT, (None, None, None, 3))
    assert data_shapes([nhwc], {**pre, "layout": "NHWC"}, None) == {"x": (1, 640, 608, 3)}
    prof, note = shapes_for([DBNET], None, None, None)   # nothing known: a note, not a failure
    assert prof == {} and "--shapes x:Nx3xNxN" in note
    with pytest.raises(ConfigError):
        shapes_for([DBNET], "x:1x3", None, None)           # the user's own --shapes is checked


def test_every_line_carries_the_shapes(tmp_path: Path):
    cache = write_cache(tmp_path / "calib.entropy.cache", {"x": 2.0}, header=ENTROPY_HEADER)
    prof = profile_shapes([DBNET], {"x": (1, 3, 640, 640)})
    cmds = trt_commands(tmp_path / "m.int8.onnx", cache_path=cache, fp32_model=tmp_path / "m.onnx",
                        shapes=prof)
    for line in cmds.values():
        assert " --shapes=x:1x3x640x640 " in line
    assert f"--calib={cache}" in cmds["trt10"]


def test_minmax_cache_is_never_passed_to_trtexec_calib(tmp_path: Path):
    """trtexec's built-in calibrator is EntropyCalibrator2: a MinMaxCalibration cache would be
    skipped (and trtexec would calibrate on random data). The <= 10 line builds the QDQ
    model instead and the text says why."""
    cache = write_cache(tmp_path / "calib.minmax.cache", {"x": 2.0}, header=MINMAX_HEADER)
    model = tmp_path / "m.int8.onnx"
    cmds = trt_commands(model, cache_path=cache, fp32_model=tmp_path / "m.onnx")
    assert "--calib" not in cmds["trt10"] and "--stronglyTyped" in cmds["trt10"]
    assert f"--onnx={model}" in cmds["trt10"]
    text = commands_text(cmds, cache=cache)
    assert "MinMaxCalibration cache" in text and "EntropyCalibrator2" in text
