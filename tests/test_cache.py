"""TensorRT calibration cache: the exact text format, its version header, and the reader's errors.

Expected hex values are derived independently with `struct` (big-endian float32 of amax / 127),
and one line comes from a cache TensorRT 8.6.1 itself wrote (ultralytics/ultralytics#14121).
"""
from __future__ import annotations

import struct

import numpy as np
import pytest

from ptq.cache import (CalibrationCache, hex_to_scale, parse_cache, read_cache, render_cache,
                       scale_to_hex, version_int, write_cache)
from ptq.errors import ConfigError, PtqError


def test_amax_2_is_3c810204_both_ways() -> None:
    assert struct.pack(">f", np.float32(2.0) / np.float32(127)).hex() == "3c810204"  # the derivation
    assert scale_to_hex(2.0) == "3c810204"
    assert scale_to_hex(1.0) == "3c010204"
    assert scale_to_hex(2.0) != struct.pack("<f", np.float32(2.0) / np.float32(127)).hex()
    cache = parse_cache(render_cache({"my_tensor": 2.0}))
    assert cache.scales["my_tensor"] == pytest.approx(2.0 / 127, rel=1e-7)
    assert cache.amaxes == {"my_tensor": 2.0}


def test_render_is_the_exact_text_format() -> None:
    text = render_cache({"input": 2.0, "conv1": 1.0}, trt_version="8.6.1")
    assert text == "TRT-8601-EntropyCalibration2\ninput: 3c810204\nconv1: 3c010204\n"
    text = render_cache({"x": 2.0}, header="MinMaxCalibration", trt_version="10.3.0")
    assert text.splitlines()[0] == "TRT-100300-MinMaxCalibration"


@pytest.mark.parametrize("version, expected", [
    ("8.6.1", 8601), ("7.1.3", 7103), ("8.5.2", 8502), ("10.3.0", 100300), ("10.16.0", 101600),
    ("10.3.0.26", 100300), ("8.6", 8600), (100300, 100300), ("8601", 8601),
    ("10", 100000), ("8", 8000)])
def test_header_version_ints(version, expected) -> None:
    # 8.x: major*1000 + minor*100 + patch; 10.x: major*10000 + minor*100 + patch (TENSORRT.md 1.3).
    # A bare major number means that release (.0.0), not a raw header int.
    assert version_int(version) == expected


def test_bad_version_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="TensorRT version"):
        version_int("v10.3")


def test_names_with_colons_and_spaces_round_trip() -> None:
    amaxes = {"(Unnamed Layer* 12) [Constant]_output": 0.5, "encoder/layer.0:0": 3.25,
              "a: b": 7.0, "ünïcode": 1.5}
    text = render_cache(amaxes)
    assert "encoder/layer.0:0: " in text
    back = parse_cache(text).amaxes
    assert list(back) == list(amaxes)
    for name, amax in amaxes.items():
        assert back[name] == pytest.approx(amax, rel=1e-6)


def test_reads_a_cache_written_by_tensorrt() -> None:
    # Lines as TensorRT 8.6.1 wrote them (CRLF-tolerant, TRT-internal names with spaces).
    text = ("TRT-8601-EntropyCalibration2\r\nimages: 3c010a14\r\n169: 3c010a14\r\n"
            "(Unnamed Layer* 3) [Constant]_output: 3b810204\r\n")
    cache = parse_cache(text, "trt.cache")
    assert (cache.version, cache.algorithm) == (8601, "EntropyCalibration2")
    assert cache.scales["169"] == pytest.approx(0.00787594, rel=1e-6)
    assert cache.amaxes["169"] == pytest.approx(1.000244, rel=1e-6)
    assert cache.amaxes["(Unnamed Layer* 3) [Constant]_output"] == pytest.approx(0.5, rel=1e-6)


def test_write_and_read_a_file(tmp_path) -> None:
    path = write_cache(tmp_path / "sub" / "calib.cache", {"t": 4.0}, trt_version="10.3.0")
    cache = read_cache(path)
    assert isinstance(cache, CalibrationCache) and cache.version == 100300
    assert cache.amaxes == {"t": 4.0}
    assert [p.name for p in path.parent.iterdir()] == ["calib.cache"]  # no temp file left


@pytest.mark.parametrize("amax", [0.0, -1.0, float("nan"), float("inf")])
def test_refuses_to_write_a_zero_negative_or_non_finite_scale(amax) -> None:
    with pytest.raises(ValueError, match="refusing"):
        render_cache({"t": amax})


@pytest.mark.parametrize("text, where", [
    ("", "header"),
    ("TRT-8601\nx: 3c010204\n", "header"),
    ("x: 3c010204\n", "header"),
    ("TRT-8601-EntropyCalibration2\nx 3c010204\n", "line 2"),
    ("TRT-8601-EntropyCalibration2\nx: 3c01020\n", "line 2"),
    ("TRT-8601-EntropyCalibration2\nok: 3c010204\nx: zz010204\n", "line 3"),
    ("TRT-8601-EntropyCalibration2\n: 3c010204\n", "line 2"),
    ("TRT-8601-EntropyCalibration2\nx: 00000000\n", "line 2"),  # zero scale
    ("TRT-8601-EntropyCalibration2\nx: 7fc00000\n", "line 2"),  # NaN
    ("TRT-8601-EntropyCalibration2\nx: 7f800000\n", "line 2"),  # +Inf
    ("TRT-8601-EntropyCalibration2\nx: bc810204\n", "line 2"),  # negative scale
])
def test_bad_caches_name_the_file_and_line(tmp_path, text, where) -> None:
    path = tmp_path / "bad.cache"
    path.write_text(text)
    with pytest.raises(PtqError) as err:
        read_cache(path)
    message = str(err.value)
    assert str(path) in message and where in message and "fix:" in message
    assert "\n" not in message


def test_missing_or_binary_cache_files(tmp_path) -> None:
    with pytest.raises(PtqError, match="not found"):
        read_cache(tmp_path / "nope.cache")
    (tmp_path / "engine.plan").write_bytes(b"\xff\xfe\x00\x81" * 10)
    with pytest.raises(PtqError, match="not text"):
        read_cache(tmp_path / "engine.plan")


@pytest.mark.parametrize("amax", [2.0 ** -14, 0.1, 1.0, 6.0, 123.456, 3e4])
def test_hex_helpers_are_inverse(amax: float) -> None:
    assert hex_to_scale(scale_to_hex(amax)) == pytest.approx(amax / 127, rel=1e-7)
