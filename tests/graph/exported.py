"""Small models written the way real exporters write them (tests/zoo.py style, onnx.helper).

Each builder reproduces one construct that broke ptq on users' models (issue 9):

- ``bias_reshape_model``: Paddle's conv bias ``Add(conv, Reshape(Constant))`` (rapidocr).
- ``tied_weights_model``: weights reached through ``Cast``/``Identity``/``Transpose`` of an
  initializer, as PyTorch exports tied or shared weights.
- ``grouped_conv_transpose_model``: a ConvTranspose with ``group`` (DBNet-style upsampling).
- ``transformer_encoder``: pre-LN encoder layers (LayerNormalization, attention with
  Softmax, GELU through Erf), as torch.onnx exports a ViT/BERT block.
- ``se_block_model``: MobileNetV3's squeeze-excitation (HardSwish, HardSigmoid gate, Mul),
  PRelu, a Resize x2 and a Concat skip, as detector/segmentation necks have.

Weights are seeded random: these tests check graph handling and Q/DQ numerics in ONNX
Runtime, not trained accuracy (the digits CNN and the rapidocr models do that).
"""
from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 17
IR_VERSION = 8


def _model(name: str, nodes: list[onnx.NodeProto], inputs: list[onnx.ValueInfoProto],
           outputs: list[onnx.ValueInfoProto], inits: dict[str, np.ndarray],
           opset: int = OPSET) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, name, inputs, outputs,
                              [numpy_helper.from_array(np.asarray(v), k) for k, v in inits.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)],
                              ir_version=IR_VERSION, producer_name="ptq-tests-exported")
    onnx.checker.check_model(model, full_check=True)
    return model


def _w(rng: np.random.Generator, *shape: int, scale: float = 0.3) -> np.ndarray:
    return (rng.standard_normal(shape) * scale).astype(np.float32)


def _const(name: str, value: np.ndarray) -> onnx.NodeProto:
    return helper.make_node("Constant", [], [name], name=name, value=numpy_helper.from_array(value, name))


def image(name: str = "x", c: int = 3, hw: int = 16) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, ["N", c, hw, hw])


def bias_reshape_model(seed: int = 0) -> onnx.ModelProto:
    """x -> Conv(no bias) -> Add(., Reshape(Constant b, Constant [1,C,1,1])) -> Relu -> Conv
    -> Add(bias) -> Relu -> GlobalAveragePool -> Flatten -> MatMul -> Add(bias) -> y [N,4]."""
    rng = np.random.default_rng(seed)
    nodes, inits = [], {}
    src = "x"
    for i, (cin, cout) in enumerate(((3, 8), (8, 8))):
        inits[f"conv{i}.w"] = _w(rng, cout, cin, 3, 3)
        nodes += [helper.make_node("Conv", [src, f"conv{i}.w"], [f"conv{i}"], name=f"conv{i}",
                                   kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
                  _const(f"bias{i}", _w(rng, cout, scale=0.1)),
                  _const(f"bias{i}_shape", np.array([1, cout, 1, 1], np.int64)),
                  helper.make_node("Reshape", [f"bias{i}", f"bias{i}_shape"], [f"bias{i}_4d"],
                                   name=f"bias{i}_reshape"),
                  helper.make_node("Add", [f"conv{i}", f"bias{i}_4d"], [f"add{i}"], name=f"add{i}"),
                  helper.make_node("Relu", [f"add{i}"], [f"relu{i}"], name=f"relu{i}")]
        src = f"relu{i}"
    inits["fc.w"], inits["fc.b"] = _w(rng, 8, 4), _w(rng, 4, scale=0.1)
    nodes += [helper.make_node("GlobalAveragePool", [src], ["gap"], name="gap"),
              helper.make_node("Flatten", ["gap"], ["flat"], name="flat"),
              helper.make_node("MatMul", ["flat", "fc.w"], ["fc"], name="fc"),
              helper.make_node("Add", ["fc", "fc.b"], ["y"], name="fc_bias")]
    return _model("bias_reshape", nodes, [image()],
                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])], inits)


def tied_weights_model(seed: int = 0) -> onnx.ModelProto:
    """Conv weight = Cast(float16 initializer); second Conv weight = Identity(initializer)
    (a shared weight); the classifier multiplies by Transpose(E) where E is also returned
    through Identity (a tied embedding read twice)."""
    rng = np.random.default_rng(seed)
    inits = {"w0_fp16": _w(rng, 8, 3, 3, 3).astype(np.float16), "w1": _w(rng, 8, 8, 3, 3),
             "b0": _w(rng, 8, scale=0.1), "E": _w(rng, 5, 8)}
    nodes = [helper.make_node("Cast", ["w0_fp16"], ["w0"], name="w0_cast", to=TensorProto.FLOAT),
             helper.make_node("Conv", ["x", "w0", "b0"], ["conv0"], name="conv0", kernel_shape=[3, 3],
                              pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["conv0"], ["relu0"], name="relu0"),
             helper.make_node("Identity", ["w1"], ["w1_shared"], name="w1_identity"),
             helper.make_node("Conv", ["relu0", "w1_shared"], ["conv1"], name="conv1",
                              kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["conv1"], ["relu1"], name="relu1"),
             helper.make_node("GlobalAveragePool", ["relu1"], ["gap"], name="gap"),
             helper.make_node("Flatten", ["gap"], ["flat"], name="flat"),
             helper.make_node("Transpose", ["E"], ["E_t"], name="E_transpose", perm=[1, 0]),
             helper.make_node("MatMul", ["flat", "E_t"], ["y"], name="head"),
             helper.make_node("Identity", ["E"], ["E_out"], name="E_identity")]
    outputs = [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 5]),
               helper.make_tensor_value_info("E_out", TensorProto.FLOAT, [5, 8])]
    return _model("tied_weights", nodes, [image()], outputs, inits)


def grouped_conv_transpose_model(group: int, seed: int = 0) -> onnx.ModelProto:
    """x [N,4,8,8] -> Conv 4->4 -> Relu -> ConvTranspose(W[4, 6/group, 2, 2], stride 2,
    group) -> y [N,6,16,16]: 6 output channels whatever the group."""
    rng = np.random.default_rng(seed)
    inits = {"conv.w": _w(rng, 4, 4, 3, 3), "up.w": _w(rng, 4, 6 // group, 2, 2),
             "up.b": _w(rng, 6, scale=0.1)}
    nodes = [helper.make_node("Conv", ["x", "conv.w"], ["conv"], name="conv", kernel_shape=[3, 3],
                              pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["conv"], ["relu"], name="relu"),
             helper.make_node("ConvTranspose", ["relu", "up.w", "up.b"], ["y"], name="up",
                              kernel_shape=[2, 2], strides=[2, 2], group=group)]
    return _model(f"convtranspose_g{group}", nodes, [image("x", 4, 8)],
                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 6, 16, 16])], inits)


def transformer_encoder(layers: int = 2, tokens: int = 8, dim: int = 16, heads: int = 2,
                        classes: int = 4, seed: int = 0) -> onnx.ModelProto:
    """x [N,T,D] -> `layers` pre-LN encoder blocks -> mean over T -> Gemm -> y [N,classes].

    Each block: LayerNormalization -> Q/K/V MatMul(+bias) -> heads -> MatMul(Q, K^T) / sqrt(d)
    -> Softmax -> MatMul(., V) -> MatMul(Wo)+bias -> residual Add -> LayerNormalization ->
    MatMul -> GELU (x * 0.5 * (1 + Erf(x / sqrt 2))) -> MatMul -> residual Add.
    """
    rng = np.random.default_rng(seed)
    d_head = dim // heads
    inits: dict[str, np.ndarray] = {
        "heads_shape": np.array([0, 0, heads, d_head], np.int64),
        "merge_shape": np.array([0, 0, dim], np.int64),
        "scale": np.array(np.sqrt(d_head), np.float32), "sqrt2": np.array(np.sqrt(2.0), np.float32),
        "one": np.array(1.0, np.float32), "half": np.array(0.5, np.float32),
        "head.w": _w(rng, classes, dim), "head.b": np.zeros(classes, np.float32)}
    nodes: list[onnx.NodeProto] = []

    def n(op: str, inputs: list[str], out: str, **attrs: object) -> str:
        nodes.append(helper.make_node(op, inputs, [out], name=out, **attrs))
        return out

    def linear(src: str, name: str, din: int, dout: int) -> str:
        inits[f"{name}.w"], inits[f"{name}.b"] = _w(rng, din, dout, scale=din ** -0.5), _w(rng, dout, scale=0.05)
        return n("Add", [n("MatMul", [src, f"{name}.w"], f"{name}.matmul"), f"{name}.b"], f"{name}.add")

    def layer_norm(src: str, name: str) -> str:
        inits[f"{name}.g"] = np.ones(dim, np.float32)
        inits[f"{name}.b"] = np.zeros(dim, np.float32)
        return n("LayerNormalization", [src, f"{name}.g", f"{name}.b"], name, axis=-1)

    x = "x"
    for i in range(layers):
        p = f"l{i}"
        h = layer_norm(x, f"{p}.ln1")
        q, k, v = (n("Transpose", [n("Reshape", [linear(h, f"{p}.{t}", dim, dim), "heads_shape"],
                                     f"{p}.{t}.heads")], f"{p}.{t}.t", perm=perm)
                   for t, perm in (("q", [0, 2, 1, 3]), ("k", [0, 2, 3, 1]), ("v", [0, 2, 1, 3])))
        scores = n("Div", [n("MatMul", [q, k], f"{p}.qk"), "scale"], f"{p}.scores")
        attn = n("MatMul", [n("Softmax", [scores], f"{p}.softmax", axis=-1), v], f"{p}.av")
        merged = n("Reshape", [n("Transpose", [attn], f"{p}.av.t", perm=[0, 2, 1, 3]), "merge_shape"],
                   f"{p}.merged")
        x = n("Add", [x, linear(merged, f"{p}.o", dim, dim)], f"{p}.res1")
        h = linear(layer_norm(x, f"{p}.ln2"), f"{p}.fc1", dim, 2 * dim)
        erf = n("Erf", [n("Div", [h, "sqrt2"], f"{p}.gelu.div")], f"{p}.gelu.erf")
        gelu = n("Mul", [n("Mul", [h, n("Add", [erf, "one"], f"{p}.gelu.add")], f"{p}.gelu.mul"), "half"],
                 f"{p}.gelu")
        x = n("Add", [x, linear(gelu, f"{p}.fc2", 2 * dim, dim)], f"{p}.res2")
    pooled = n("ReduceMean", [x], "pool", axes=[1], keepdims=0)
    nodes.append(helper.make_node("Gemm", [pooled, "head.w", "head.b"], ["y"], name="head", transB=1))
    return _model("transformer_encoder", nodes,
                  [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", tokens, dim])],
                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", classes])], inits)


def se_block_model(seed: int = 0) -> onnx.ModelProto:
    """x [N,3,16,16] -> Conv -> HardSwish -> SE (GAP -> Conv -> Relu -> Conv -> HardSigmoid ->
    Mul) -> Conv(stride 2) -> PRelu -> Resize x2 -> Concat with the SE output -> Conv -> y."""
    rng = np.random.default_rng(seed)
    inits = {"stem.w": _w(rng, 8, 3, 3, 3), "stem.b": _w(rng, 8, scale=0.1),
             "se1.w": _w(rng, 4, 8, 1, 1), "se1.b": _w(rng, 4, scale=0.1),
             "se2.w": _w(rng, 8, 4, 1, 1), "se2.b": _w(rng, 8, scale=0.1),
             "down.w": _w(rng, 8, 8, 3, 3), "down.b": _w(rng, 8, scale=0.1),
             "slope": np.full((8, 1, 1), 0.25, np.float32),
             "scales": np.array([1, 1, 2, 2], np.float32),
             "head.w": _w(rng, 2, 16, 3, 3), "head.b": _w(rng, 2, scale=0.1)}

    def conv(src: str, name: str, k: int, stride: int = 1) -> onnx.NodeProto:
        return helper.make_node("Conv", [src, f"{name}.w", f"{name}.b"], [name], name=name,
                                kernel_shape=[k, k], pads=[k // 2] * 4, strides=[stride, stride])

    nodes = [conv("x", "stem", 3), helper.make_node("HardSwish", ["stem"], ["hswish"], name="hswish"),
             helper.make_node("GlobalAveragePool", ["hswish"], ["se.gap"], name="se.gap"),
             conv("se.gap", "se1", 1), helper.make_node("Relu", ["se1"], ["se.relu"], name="se.relu"),
             conv("se.relu", "se2", 1),
             helper.make_node("HardSigmoid", ["se2"], ["se.gate"], name="se.gate", alpha=1 / 6, beta=0.5),
             helper.make_node("Mul", ["hswish", "se.gate"], ["se"], name="se.mul"),
             conv("se", "down", 3, 2), helper.make_node("PRelu", ["down", "slope"], ["prelu"], name="prelu"),
             helper.make_node("Resize", ["prelu", "", "scales"], ["up"], name="up", mode="nearest"),
             helper.make_node("Concat", ["up", "se"], ["cat"], name="cat", axis=1),
             conv("cat", "head", 3)]
    nodes[-1].output[0] = "y"
    return _model("se_block", nodes, [image()],
                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 2, 16, 16])], inits)


def write_large_model(folder, *, rows: int = 8_650_000, dim: int = 64, seed: int = 0):
    """A >2 GB external-data model written block by block (never all in memory), shaped like
    a model whose bulk is an embedding table:

        x [N,64] -> MatMul W0 -> Relu -> ArgMax -> Gather(E [rows,64]) -> Add(relu, .) -> MatMul W1 -> y

    E is 8.65M x 64 float32 = 2.21 GB in `large.onnx.data`, beyond protobuf's 2 GiB limit;
    the gathered row depends on the input, so E is a weight that stays float (no rule) while
    W0/W1 get INT8. ONNX Runtime reads only the rows it gathers, so inference stays fast."""
    from pathlib import Path

    folder = Path(folder)
    rng = np.random.default_rng(seed)
    w0, w1 = _w(rng, dim, 256, scale=dim ** -0.5), _w(rng, 256, dim, scale=256 ** -0.5)
    block = _w(rng, 1 << 18, dim, scale=0.5)                     # 64 MB, written repeatedly
    with open(folder / "large.onnx.data", "wb") as data:
        left = rows
        while left:
            n = min(left, block.shape[0])
            data.write(block[:n].tobytes())
            left -= n
    table = onnx.TensorProto(name="E", data_type=TensorProto.FLOAT, dims=[rows, dim],
                             data_location=TensorProto.EXTERNAL)
    for key, value in (("location", "large.onnx.data"), ("offset", "0"), ("length", str(rows * dim * 4))):
        table.external_data.add(key=key, value=value)
    w1_proj = _w(rng, 256, 64, scale=256 ** -0.5)
    nodes = [helper.make_node("MatMul", ["x", "w0"], ["mm0"], name="mm0"),
             helper.make_node("Relu", ["mm0"], ["relu0"], name="relu0"),
             helper.make_node("ArgMax", ["relu0"], ["ids"], name="argmax", axis=1, keepdims=0),
             helper.make_node("Gather", ["E", "ids"], ["rows"], name="gather", axis=0),
             helper.make_node("MatMul", ["relu0", "w1p"], ["proj"], name="proj"),
             helper.make_node("Add", ["proj", "rows"], ["sum"], name="add"),
             helper.make_node("Relu", ["sum"], ["relu1"], name="relu1"),
             helper.make_node("MatMul", ["relu1", "w1"], ["y"], name="mm1")]
    del w1
    inits = [table, numpy_helper.from_array(w0, "w0"), numpy_helper.from_array(w1_proj, "w1p"),
             numpy_helper.from_array(_w(rng, dim, dim, scale=dim ** -0.5), "w1")]
    graph = helper.make_graph(nodes, "large", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", dim])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", dim])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], ir_version=IR_VERSION)
    path = folder / "large.onnx"
    path.write_bytes(model.SerializeToString())
    return path


def contrib_op_model(seed: int = 0) -> onnx.ModelProto:
    """x -> Conv -> com.microsoft.Gelu -> Conv -> y: ONNX shape inference cannot type the
    Gelu output (a contrib op, as in ORT-optimized exports); ONNX Runtime can."""
    rng = np.random.default_rng(seed)
    inits = {"w0": _w(rng, 4, 3, 3, 3), "w1": _w(rng, 4, 4, 3, 3)}
    nodes = [helper.make_node("Conv", ["x", "w0"], ["c0"], name="c0", pads=[1, 1, 1, 1]),
             helper.make_node("Gelu", ["c0"], ["gelu"], name="gelu", domain="com.microsoft"),
             helper.make_node("Conv", ["gelu", "w1"], ["y"], name="c1", pads=[1, 1, 1, 1])]
    graph = helper.make_graph(nodes, "contrib", [image("x", 3, 8)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4, 8, 8])],
                              [numpy_helper.from_array(v, k) for k, v in inits.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET),
                                                    helper.make_opsetid("com.microsoft", 1)],
                              ir_version=IR_VERSION)
    onnx.checker.check_model(model)
    return model
