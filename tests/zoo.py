"""Real test models and labelled images, built in code from data that ships inside installed wheels,
so tests measure true accuracy deltas on a real trained model instead of agreement on random tensors.

- ``write_digits_images``: scikit-learn's 1,797 labelled handwritten digits as 16x16 grayscale
  PNGs in ``<label>/`` folders, drawn from a fixed stratified train/calib/test split.
- ``build_digits_cnn``: a small residual CNN trained (torch, CPU, seeded) on the train split and
  written directly with ``onnx.helper`` (BN folded), so node and tensor names are readable.
  The one exception to "built in code": its trained weights are committed
  (``tests/data/digits_cnn.npz``, 30 KB). Seeded single-thread training is deterministic on one
  machine but not across CPUs (other SIMD kernels, other float rounding), and thresholds tuned on
  one machine's weights broke on another (issue 8). ``python tests/zoo.py retrain`` regenerates
  the file; ``test_zoo.py`` checks that training still reaches the same accuracy class.
- ``build_two_input_model``: an untrained two-input graph for multi-input (npz) calibration.
- ``build_bad_models``: deliberately broken models for error-path tests.

The pixel contract the images and the model share (ptq flags ``--mean 0 --std 255``, no resize)::

    sklearn value v in 0..16 --round(v*255/16)--> uint8 8x8 --nearest x2--> uint8 16x16 PNG ("L")
    PNG --PIL convert("RGB") replicates the channel--> uint8 [16,16,3] --HWC->CHW, /255--> f32 [3,16,16]

Nearest upscaling is used because it is exact: every PNG pixel is one of 17 known levels, so the
float tensors the model was trained on are bit-identical to what any loader reads back.

This module runs past 300 lines because it is one registry of fixtures; each builder is short.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from PIL import Image

if TYPE_CHECKING:
    import torch

OPSET = 17
IR_VERSION = 8  # the IR that introduced opset 17; keeps the files readable by older ORT/TensorRT
SPLITS = ("train", "calib", "test")
HELD_OUT_PER_CLASS = {"test": 40, "calib": 30}  # the rest of each class (>= 104 images) trains
_SPLIT_SEED = 1797  # fixed forever: changing it would silently move images between splits
_EPOCHS, _BATCH, _LR = 8, 32, 1e-2
DIGITS_WEIGHTS = Path(__file__).resolve().parent / "data" / "digits_cnn.npz"
DIGITS_NODES = ("conv1", "relu1", "conv2", "relu2", "conv3", "add", "relu3", "pool1",
                "conv4", "relu4", "pool2", "flatten", "fc")


# --- digits data -------------------------------------------------------------------------------


@functools.lru_cache(maxsize=1)
def _digits() -> tuple[np.ndarray, np.ndarray]:
    """All 1,797 digits as read-only uint8 [n,16,16] pixels and int64 labels (see module docstring)."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    pixels = np.rint(bunch.images * (255.0 / 16.0)).astype(np.uint8).repeat(2, axis=1).repeat(2, axis=2)
    labels = bunch.target.astype(np.int64)
    pixels.setflags(write=False)
    labels.setflags(write=False)
    return pixels, labels


def digits_split(split: str) -> np.ndarray:
    """Sorted ``load_digits()`` indices of one split.

    Each class is permuted by its own fixed seed; its first 40 go to "test", the next 30 to
    "calib" and the rest to "train". The split never depends on a caller's seed, so an image
    used for training can never be written as calibration or test data.
    """
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; choose one of {SPLITS}")
    n_test, n_calib = HELD_OUT_PER_CLASS["test"], HELD_OUT_PER_CLASS["calib"]
    bounds = {"test": slice(0, n_test), "calib": slice(n_test, n_test + n_calib),
              "train": slice(n_test + n_calib, None)}
    labels = _digits()[1]
    parts = [np.random.default_rng([_SPLIT_SEED, label]).permutation(np.flatnonzero(labels == label))
             for label in range(10)]
    return np.sort(np.concatenate([part[bounds[split]] for part in parts]))


def digits_arrays(split: str) -> tuple[np.ndarray, np.ndarray]:
    """One split as the model sees it: float32 [n,3,16,16] = pixel/255 (channel replicated), labels."""
    pixels, labels = _digits()
    idx = digits_split(split)
    x = pixels[idx][:, None].repeat(3, axis=1).astype(np.float32) / np.float32(255.0)
    return x, labels[idx]


def write_digits_images(dest: Path, *, per_class: int = 30, split: str = "test", seed: int = 0) -> Path:
    """Write ``per_class`` PNGs per digit as ``dest/<label>/<split>_<index>.png`` and return ``dest``.

    ``index`` is the position in ``load_digits()``, so disjointness is checkable from file names.
    ``seed`` only picks which images of the fixed split are written when ``per_class`` is smaller
    than the split (40 test / 30 calib / >= 104 train per class).
    """
    pixels, labels = _digits()
    indices = digits_split(split)
    rng = np.random.default_rng(seed)
    for label in range(10):
        pool = indices[labels[indices] == label]
        if not 0 < per_class <= len(pool):
            raise ValueError(f"per_class={per_class} but split {split!r} has {len(pool)} images of {label}")
        folder = Path(dest) / str(label)
        folder.mkdir(parents=True, exist_ok=True)
        for index in np.sort(rng.permutation(pool)[:per_class]):
            Image.fromarray(pixels[index]).save(folder / f"{split}_{index}.png")
    return Path(dest)


def read_image_folder(folder: Path) -> tuple[np.ndarray, np.ndarray]:
    """Read ``<label>/*.png`` the plain way (PIL RGB, /255): a reference independent of ptq's loader."""
    paths = sorted(Path(folder).glob("*/*.png"))
    images = []
    for path in paths:
        with Image.open(path) as image:
            images.append(np.asarray(image.convert("RGB"), dtype=np.float32).transpose(2, 0, 1))
    labels = np.array([int(path.parent.name) for path in paths], dtype=np.int64)
    return np.stack(images) / np.float32(255.0), labels


# --- the trained digits CNN --------------------------------------------------------------------


def _make_net() -> torch.nn.ModuleDict:
    """Parameters of the CNN; a ModuleDict (no class) keeps torch a lazy import of this module."""
    from torch import nn

    def conv_bn(cin: int, cout: int) -> nn.ModuleDict:
        return nn.ModuleDict({"conv": nn.Conv2d(cin, cout, 3, padding=1, bias=False),
                              "bn": nn.BatchNorm2d(cout)})

    return nn.ModuleDict({"conv1": conv_bn(3, 16), "conv2": conv_bn(16, 16), "conv3": conv_bn(16, 16),
                          "conv4": conv_bn(16, 32), "fc": nn.Linear(32, 10)})


def digits_net_forward(net: torch.nn.ModuleDict, x: torch.Tensor) -> torch.Tensor:
    """Torch forward pass; mirrors ``DIGITS_NODES`` one to one."""
    import torch.nn.functional as F

    def conv_bn(name: str, t: torch.Tensor) -> torch.Tensor:
        return net[name]["bn"](net[name]["conv"](t))

    relu1 = F.relu(conv_bn("conv1", x))
    relu2 = F.relu(conv_bn("conv2", relu1))
    relu3 = F.relu(conv_bn("conv3", relu2) + relu1)
    relu4 = F.relu(conv_bn("conv4", F.max_pool2d(relu3, 2)))
    return net["fc"](relu4.mean(dim=(2, 3)))


def train_digits_net(*, seed: int = 0) -> torch.nn.ModuleDict:
    """Train on the "train" split (~3 s, one thread) and return the net in eval mode.

    Determinism: the global torch RNG is forked (callers' RNG state is untouched), seeded, and the
    thread count is pinned to 1 for the duration, so two calls give bit-identical weights.
    """
    import torch
    import torch.nn.functional as F

    x, y = (torch.from_numpy(a) for a in digits_arrays("train"))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            net = _make_net()
            opt = torch.optim.Adam(net.parameters(), lr=_LR)
            steps = _EPOCHS * -(-len(y) // _BATCH)
            schedule = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=_LR, total_steps=steps)
            for _ in range(_EPOCHS):
                for batch in torch.randperm(len(y)).split(_BATCH):
                    loss = F.cross_entropy(digits_net_forward(net, x[batch]), y[batch])
                    opt.zero_grad()
                    loss.backward()
                    opt.step()
                    schedule.step()
    finally:
        torch.set_num_threads(threads)
    return net.eval()


def _fold_bn(block: torch.nn.ModuleDict) -> tuple[np.ndarray, np.ndarray]:
    """Conv(no bias) + BN(eval) as one Conv, computed in float64.

    With s = gamma / sqrt(running_var + eps):  W' = W * s (per output channel),  b' = beta - mean * s.
    """
    bn = block["bn"]
    gamma, beta, mean, var = (t.detach().double().numpy()
                              for t in (bn.weight, bn.bias, bn.running_mean, bn.running_var))
    scale = gamma / np.sqrt(var + bn.eps)
    weight = block["conv"].weight.detach().double().numpy() * scale[:, None, None, None]
    return weight.astype(np.float32), (beta - mean * scale).astype(np.float32)


def _conv(name: str, source: str, output: str | None = None) -> onnx.NodeProto:
    """3x3, stride 1, pad 1 Conv reading initializers ``<name>.weight`` / ``<name>.bias``."""
    return helper.make_node("Conv", [source, f"{name}.weight", f"{name}.bias"], [output or name], name=name,
                            kernel_shape=[3, 3], pads=[1, 1, 1, 1], strides=[1, 1])


def _node(op: str, name: str, inputs: list[str], **attrs: object) -> onnx.NodeProto:
    """A node whose single output tensor is named like the node."""
    return helper.make_node(op, inputs, [name], name=name, **attrs)


def _image(name: str, channels: int = 3, batch: str | int = "N") -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, [batch, channels, 16, 16])


def _model(name: str, nodes: list[onnx.NodeProto], inputs: list[onnx.ValueInfoProto],
           outputs: list[onnx.ValueInfoProto], initializers: dict[str, np.ndarray]) -> onnx.ModelProto:
    """Assemble an opset-17 model and run the full checker (with shape inference) on it."""
    graph = helper.make_graph(nodes, name, inputs, outputs,
                              [numpy_helper.from_array(np.asarray(v), k) for k, v in initializers.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                              ir_version=IR_VERSION, producer_name="ptq-tests-zoo")
    onnx.checker.check_model(model, full_check=True)
    return model


def digits_weights(net: torch.nn.ModuleDict) -> dict[str, np.ndarray]:
    """The ONNX initializers of a trained net: BN folded into the convs."""
    weights: dict[str, np.ndarray] = {}
    for name in ("conv1", "conv2", "conv3", "conv4"):
        weights[f"{name}.weight"], weights[f"{name}.bias"] = _fold_bn(net[name])
    weights["fc.weight"] = net["fc"].weight.detach().numpy().copy()
    weights["fc.bias"] = net["fc"].bias.detach().numpy().copy()
    return weights


def export_digits_net(net: torch.nn.ModuleDict) -> onnx.ModelProto:
    """Write the trained net as ONNX by hand: BN folded, names from ``DIGITS_NODES``."""
    return digits_model(digits_weights(net))


def digits_model(weights: dict[str, np.ndarray]) -> onnx.ModelProto:
    """The digits CNN graph around folded weights."""
    nodes = [
        _conv("conv1", "image"), _node("Relu", "relu1", ["conv1"]),
        _conv("conv2", "relu1"), _node("Relu", "relu2", ["conv2"]),
        _conv("conv3", "relu2"), _node("Add", "add", ["conv3", "relu1"]), _node("Relu", "relu3", ["add"]),
        _node("MaxPool", "pool1", ["relu3"], kernel_shape=[2, 2], strides=[2, 2]),
        _conv("conv4", "pool1"), _node("Relu", "relu4", ["conv4"]),
        _node("GlobalAveragePool", "pool2", ["relu4"]), _node("Flatten", "flatten", ["pool2"], axis=1),
        helper.make_node("Gemm", ["flatten", "fc.weight", "fc.bias"], ["logits"], name="fc", transB=1),
    ]
    logits = helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 10])
    return _model("digits_cnn", nodes, [_image("image")], [logits], weights)


def build_digits_cnn() -> onnx.ModelProto:
    """The trained digits CNN (input ``image`` [N,3,16,16] = pixel/255, output ``logits`` [N,10]),
    from the committed weights (see the module docstring)."""
    with np.load(DIGITS_WEIGHTS) as data:
        return digits_model({name: data[name] for name in data.files})


if __name__ == "__main__":  # python tests/zoo.py retrain
    import sys

    if sys.argv[1:] != ["retrain"]:
        sys.exit("usage: python tests/zoo.py retrain   (rewrites tests/data/digits_cnn.npz)")
    DIGITS_WEIGHTS.parent.mkdir(exist_ok=True)
    np.savez_compressed(DIGITS_WEIGHTS, **digits_weights(train_digits_net(seed=0)))
    print(f"wrote {DIGITS_WEIGHTS}")


# --- small untrained and broken models ---------------------------------------------------------


def _seeded_conv(rng: np.random.Generator, name: str, cin: int, cout: int) -> dict[str, np.ndarray]:
    return {f"{name}.weight": (rng.standard_normal((cout, cin, 3, 3)) * 0.2).astype(np.float32),
            f"{name}.bias": (rng.standard_normal(cout) * 0.1).astype(np.float32)}


def build_two_input_model(*, seed: int = 0) -> onnx.ModelProto:
    """Inputs ``a`` and ``b`` [N,3,16,16] -> Conv each -> Add -> GAP -> Flatten -> Gemm -> ``out`` [N,4]."""
    rng = np.random.default_rng(seed)
    weights = {**_seeded_conv(rng, "conv_a", 3, 8), **_seeded_conv(rng, "conv_b", 3, 8),
               "fc.weight": (rng.standard_normal((4, 8)) * 0.5).astype(np.float32),
               "fc.bias": np.zeros(4, np.float32)}
    nodes = [_conv("conv_a", "a"), _conv("conv_b", "b"), _node("Add", "add", ["conv_a", "conv_b"]),
             _node("GlobalAveragePool", "pool", ["add"]), _node("Flatten", "flatten", ["pool"], axis=1),
             helper.make_node("Gemm", ["flatten", "fc.weight", "fc.bias"], ["out"], name="fc", transB=1)]
    out = helper.make_tensor_value_info("out", TensorProto.FLOAT, ["N", 4])
    return _model("two_input", nodes, [_image("a"), _image("b")], [out], weights)


def _around_poison(name: str, poison: list[onnx.NodeProto],
                   constants: dict[str, np.ndarray]) -> onnx.ModelProto:
    """``x`` -> conv1 -> <poison nodes> -> Add(last poison, x) -> conv2 -> ``out`` [N,3,16,16]."""
    rng = np.random.default_rng(0)
    weights = {**_seeded_conv(rng, "conv1", 3, 3), **_seeded_conv(rng, "conv2", 3, 3), **constants}
    nodes = [_conv("conv1", "x"), *poison, _node("Add", "add", [poison[-1].name, "x"]),
             _conv("conv2", "add", "out")]
    return _model(name, nodes, [_image("x")], [_image("out")], weights)


def _nan_model() -> onnx.ModelProto:
    """Intermediate ``bad`` = Log(-1 - conv1^2) is NaN for every input, and so is ``out``."""
    poison = [_node("Mul", "square", ["conv1", "conv1"]), _node("Sub", "negative", ["minus_one", "square"]),
              _node("Log", "bad", ["negative"])]
    return _around_poison("nan_model", poison, {"minus_one": np.array(-1.0, np.float32)})


def _zero_model() -> onnx.ModelProto:
    """Intermediate ``zeros`` = conv1 * 0 is all zeros for every input; ``out`` still depends on ``x``."""
    poison = [_node("Mul", "zeros", ["conv1", "zero"])]
    return _around_poison("zero_model", poison, {"zero": np.array(0.0, np.float32)})


def _int_input_model() -> onnx.ModelProto:
    """Only input ``ids`` is int64 [N,4]: Cast -> Identity -> ``out`` float [N,4]."""
    nodes = [helper.make_node("Cast", ["ids"], ["cast"], name="cast", to=TensorProto.FLOAT),
             helper.make_node("Identity", ["cast"], ["out"], name="identity")]
    ids = helper.make_tensor_value_info("ids", TensorProto.INT64, ["N", 4])
    out = helper.make_tensor_value_info("out", TensorProto.FLOAT, ["N", 4])
    return _model("int_input", nodes, [ids], [out], {})


def _with_static_batch(model: onnx.ModelProto, batch: int) -> onnx.ModelProto:
    """A copy whose graph inputs and outputs have a fixed leading dimension."""
    fixed = onnx.ModelProto()
    fixed.CopyFrom(model)
    for value in (*fixed.graph.input, *fixed.graph.output):
        value.type.tensor_type.shape.dim[0].dim_value = batch  # clears the dim_param "N" (oneof)
    onnx.checker.check_model(fixed, full_check=True)
    return fixed


def build_bad_models(dest: Path, *, digits_model: onnx.ModelProto | None = None) -> dict[str, Path]:
    """Write the error-path models and return name -> model path.

    corrupt (random bytes), int_input, external_data (the digits CNN with ``weights.bin`` next to
    it), external_data_missing (``weights.bin`` deleted), nan_model (tensor ``bad`` is NaN),
    zero_model (tensor ``zeros`` is 0), static_batch (digits CNN with batch fixed to 4).
    Pass ``digits_model`` to reuse an already loaded CNN.
    """
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    paths = {name: dest / f"{name}.onnx" for name in ("corrupt", "int_input", "nan_model", "zero_model",
                                                      "static_batch")}
    paths["corrupt"].write_bytes(b"\xff\xff" + np.random.default_rng(0).bytes(510))
    onnx.save_model(_int_input_model(), paths["int_input"])
    onnx.save_model(_nan_model(), paths["nan_model"])
    onnx.save_model(_zero_model(), paths["zero_model"])
    digits = digits_model if digits_model is not None else build_digits_cnn()
    onnx.save_model(_with_static_batch(digits, 4), paths["static_batch"])
    for name in ("external_data", "external_data_missing"):
        (dest / name).mkdir(exist_ok=True)
        paths[name] = dest / name / "model.onnx"
        copy = onnx.ModelProto()
        copy.CopyFrom(digits)  # save_model moves the tensors out of the proto it is given
        onnx.save_model(copy, paths[name], save_as_external_data=True,
                        all_tensors_to_one_file=True, location="weights.bin", size_threshold=0)
    (dest / "external_data_missing" / "weights.bin").unlink()
    return paths
