"""Letterbox (keep aspect, pad), H x W sizes and multiples of 32 for detectors and recognizers."""
from __future__ import annotations

import argparse

import numpy as np
import pytest
from onnx import TensorProto
from PIL import Image

from ptq.cli.common import _size
from ptq.datasets import make_preprocess
from ptq.datasets.preprocess import Preprocess, round_up
from ptq.errors import ConfigError
from ptq.graph.model import TensorInfo

DYNAMIC = TensorInfo("x", TensorProto.FLOAT, (None, 3, None, None))
REC = TensorInfo("x", TensorProto.FLOAT, (None, 3, 48, None))


def test_letterbox_keeps_aspect_and_pads_centred():
    """A 100x50 (W x H) red image into 64x64: scale 0.64 -> 64x32 content, rows 16..47;
    rows above and below are the pad value (114 -> (114-0)/1 with mean 0 std 1)."""
    img = Image.new("RGB", (100, 50), (255, 0, 0))
    pre = make_preprocess(DYNAMIC, "raw", size=(64, 64), letterbox=True, pad_value=114)
    x = pre.apply(img)
    assert x.shape == (3, 64, 64)
    assert np.all(x[:, :16] == 114) and np.all(x[:, 48:] == 114)
    assert np.all(x[0, 16:48] == 255) and np.all(x[1:, 16:48] == 0)


def test_letterbox_with_normalisation_and_a_recognizer_size():
    """A 200x40 text crop into 48x320 ((x-127.5)/127.5): 240x48 content at columns 40..279,
    pad 0 -> -1.0 in the tensor, no crop of the text."""
    img = Image.new("L", (200, 40), 255).convert("RGB")
    pre = make_preprocess(REC, "raw", size=(48, 320), mean=(127.5,), std=(127.5,), letterbox=True)
    x = pre.apply(img)
    assert x.shape == (3, 48, 320)
    assert np.allclose(x[:, :, :40], -1.0) and np.allclose(x[:, :, 280:], -1.0)
    assert np.allclose(x[:, :, 41:279], 1.0)


def test_size_multiple_and_recorded_round_trip():
    assert round_up((600, 450), 32) == (608, 480) and round_up((48, 320), None) == (48, 320)
    pre = make_preprocess(DYNAMIC, "imagenet", size=(600, 450), multiple=32, letterbox=True)
    assert pre.size == (608, 480) and pre.resize is None  # letterbox: no shorter-side crop
    assert Preprocess.from_dict(pre.to_dict()) == pre
    with pytest.raises(ConfigError, match="pad-value"):
        make_preprocess(DYNAMIC, "raw", size=(32, 32), letterbox=True, pad_value=300)


def test_size_flag_takes_h_x_w():
    assert _size("48x320") == (48, 320) and _size("640") == (640, 640) and _size("48,320") == (48, 320)
    with pytest.raises(argparse.ArgumentTypeError):
        _size("48x")
