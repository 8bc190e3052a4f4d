"""Preprocessing presets and overrides, checked numerically against a by-hand pipeline.

The reference below spells out each preset's published recipe (resize the shorter side with
bilinear filtering, centre crop, (pixel - mean) / std, NCHW) in plain numpy/Pillow, with the
crop box computed here, so geometry, normalisation, layout and channel order are all checked.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from onnx import TensorProto
from PIL import Image

from ptq.datasets import fixed_batch, make_preprocess
from ptq.datasets.preprocess import Preprocess
from ptq.errors import ConfigError, DataError
from ptq.graph.model import TensorInfo

IMAGENET_MEAN = np.array([0.485, 0.456, 0.406]) * 255  # the usual torchvision constants x 255
IMAGENET_STD = np.array([0.229, 0.224, 0.225]) * 255


def info(*shape, elem=TensorProto.FLOAT) -> TensorInfo:
    return TensorInfo("x", elem, tuple(shape))


def reference(img: Image.Image, size: tuple[int, int], shorter: int | None, mean, std,
              nhwc: bool = False, bgr: bool = False) -> np.ndarray:
    h, w = size
    img = img.convert("RGB")
    if shorter is None:
        img = img.resize((w, h), Image.BILINEAR)
    else:
        iw, ih = img.size
        rw, rh = (shorter, round(ih * shorter / iw)) if iw <= ih else (round(iw * shorter / ih), shorter)
        img = img.resize((rw, rh), Image.BILINEAR)
        left, top = (rw - w) // 2, (rh - h) // 2
        img = img.crop((left, top, left + w, top + h))
    x = np.asarray(img, np.float64)
    if bgr:
        x = x[:, :, ::-1]
    x = (x - np.asarray(mean, np.float64)) / np.asarray(std, np.float64)
    return x if nhwc else x.transpose(2, 0, 1)


@pytest.fixture(scope="module")
def cat(sample_photos: Path) -> Image.Image:
    with Image.open(sample_photos / "skimage_chelsea.jpg") as img:  # 451 x 300, landscape
        img.load()
        return img


@pytest.fixture(scope="module")
def portrait(sample_photos: Path) -> Image.Image:
    with Image.open(sample_photos / "skimage_rocket.jpg") as img:  # 427 x 640, portrait
        img.load()
        return img


def test_imagenet_preset_resize_256_crop_224_mean_std(cat: Image.Image, portrait: Image.Image) -> None:
    pre = make_preprocess(info("N", 3, 224, 224), "imagenet")
    assert (pre.size, pre.resize, pre.layout, pre.channel_order) == ((224, 224), 256, "NCHW", "RGB")
    np.testing.assert_allclose(pre.mean, IMAGENET_MEAN, rtol=1e-6)
    np.testing.assert_allclose(pre.std, IMAGENET_STD, rtol=1e-6)
    for img in (cat, portrait):
        x = pre.apply(img)
        assert x.shape == (3, 224, 224) and x.dtype == np.float32
        np.testing.assert_allclose(x, reference(img, (224, 224), 256, IMAGENET_MEAN, IMAGENET_STD),
                                   atol=1e-4)


def test_efficientnet_lite_preset(cat: Image.Image) -> None:
    pre = make_preprocess(info("N", 3, 224, 224), "efficientnet-lite")
    assert pre.mean == (127.0,) * 3 and pre.std == (128.0,) * 3 and pre.resize == 256
    x = pre.apply(cat)
    np.testing.assert_allclose(x, reference(cat, (224, 224), 256, 127.0, 128.0), atol=1e-5)
    assert -1.0 <= x.min() and x.max() <= 128 / 128


def test_raw_preset_resizes_straight_to_the_input(cat: Image.Image) -> None:
    pre = make_preprocess(info("N", 3, 40, 60), "raw")
    assert pre.resize is None and pre.mean == (0.0,) * 3 and pre.std == (1.0,) * 3
    np.testing.assert_allclose(pre.apply(cat), reference(cat, (40, 60), None, 0.0, 1.0), atol=1e-4)


def test_every_override(cat: Image.Image) -> None:
    pre = make_preprocess(info("N", "H", "W", 3), "imagenet", size=(96, 128), resize=150,
                          mean=(10.0, 20.0, 30.0), std=(2.0, 4.0, 8.0), layout="nhwc",
                          channel_order="bgr")
    assert (pre.size, pre.resize, pre.layout, pre.channel_order) == ((96, 128), 150, "NHWC", "BGR")
    x = pre.apply(cat)
    assert x.shape == (96, 128, 3)
    # BGR: channel 0 is blue, normalised with the first mean/std (the model's channel 0)
    want = reference(cat, (96, 128), 150, (10.0, 20.0, 30.0), (2.0, 4.0, 8.0), nhwc=True, bgr=True)
    np.testing.assert_allclose(x, want, atol=1e-4)


def test_layout_and_size_come_from_the_model(cat: Image.Image) -> None:
    nhwc = make_preprocess(info(1, 64, 48, 3), "raw")
    assert (nhwc.layout, nhwc.size) == ("NHWC", (64, 48)) and nhwc.apply(cat).shape == (64, 48, 3)
    nchw = make_preprocess(info("batch", 3, 64, 48), "raw")
    assert (nchw.layout, nchw.size) == ("NCHW", (64, 48))
    np.testing.assert_array_equal(nchw.apply(cat), nhwc.apply(cat).transpose(2, 0, 1))
    gray = make_preprocess(info("N", 1, 32, 32), "efficientnet-lite")
    x = gray.apply(cat)
    assert x.shape == (1, 32, 32) and gray.mean == (127.0,)
    # shorter side 300 -> round(32 / 0.875) = 37, so 451 x 300 -> 56 x 37; centre crop 32 x 32
    want = np.asarray(cat.convert("L").resize((56, 37), Image.BILINEAR).crop((12, 2, 44, 34)),
                      np.float64)
    np.testing.assert_allclose(x[0], (want - 127) / 128, atol=1e-5)
    half = make_preprocess(info("N", 3, 8, 8, elem=TensorProto.FLOAT16), "raw")
    assert half.apply(cat).dtype == np.float16


def test_tiny_images_are_scaled_up(cat: Image.Image) -> None:
    tiny = cat.resize((5, 3))
    for preset in ("imagenet", "raw"):
        assert make_preprocess(info("N", 3, 224, 224), preset).apply(tiny).shape == (3, 224, 224)


def test_dynamic_size_needs_size_and_static_sizes_must_match() -> None:
    with pytest.raises(ConfigError, match="dynamic image size") as err:
        make_preprocess(info("N", 3, "H", "W"))
    assert "--size" in str(err.value)
    assert make_preprocess(info("N", 3, "H", "W"), size=(300, 200)).size == (300, 200)
    assert make_preprocess(info("N", 3, 224, 224), size=(224, 224)).size == (224, 224)
    with pytest.raises(DataError, match="does not fit input 'x' of static size 224x224"):
        make_preprocess(info("N", 3, 224, 224), size=(256, 256))


@pytest.mark.parametrize("bad_info, match", [
    (info("N", 4, 32, 32), "4 channels"),
    (info("N", 256), "not a 4-D image batch"),
    (TensorInfo("x", TensorProto.FLOAT, None), "not a 4-D image batch"),
])
def test_inputs_images_cannot_feed(bad_info: TensorInfo, match: str) -> None:
    with pytest.raises(DataError, match=match) as err:
        make_preprocess(bad_info)
    assert ".npz" in str(err.value)  # the hint names the way that does work


@pytest.mark.parametrize("kwargs, match", [
    ({"preset": "yolo"}, "unknown preprocessing preset"),
    ({"mean": (1.0, 2.0)}, "1 or 3 values"),
    ({"std": (1.0, 0.0, 1.0)}, "non-zero"),
    ({"layout": "CHW"}, "NCHW or NHWC"),
    ({"channel_order": "RGBA"}, "RGB or BGR"),
])
def test_bad_options(kwargs: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        make_preprocess(info("N", 3, 32, 32), **kwargs)


def test_record_round_trip() -> None:
    pre = make_preprocess(info("N", 3, 32, 32), "imagenet", channel_order="BGR")
    d = pre.to_dict()
    assert d["size"] == [32, 32] and d["preset"] == "imagenet"
    assert Preprocess.from_dict(d) == pre


def test_fixed_or_dynamic_batch_dimension() -> None:
    assert fixed_batch([info("N", 3, 8, 8)]) is None
    assert fixed_batch([info(None, 3, 8, 8)]) is None
    assert fixed_batch([info(4, 3, 8, 8), TensorInfo("y", TensorProto.FLOAT, (4, 2))]) == 4
    with pytest.raises(DataError, match="disagree on the batch dimension"):
        fixed_batch([info(4, 3, 8, 8), TensorInfo("y", TensorProto.FLOAT, (2, 2))])
