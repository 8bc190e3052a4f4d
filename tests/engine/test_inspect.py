"""`ptq inspect` on the real TensorRT-written files in tests/data/trt (copied from ../shared/fixtures/trt) (see its MANIFEST.md:
trex's ResNet18/A100 and MobileNet engines, TensorRT 8.2/8.4, Apache-2.0).

Every expected number is counted here with a few lines of plain `json`, never by ptq. The
TensorRT 11 cases are built in the test from a real TensorRT 8 file, rewritten into the
documented TensorRT 11 schema (migration guide "tensorrt-10x-to-11x-IEngineInspector":
`Bindings` -> `I/O Tensors`, `Format/Datatype` split into `Format` + `Datatype`) plus
TensorRT 10's `Metadata: [ONNX Layer: ...]`; no public TensorRT 11 file exists.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
import numpy as np

from ptq.cli import main
from ptq.engine import compare_engines, int8_intent, load_engine, summarize
from ptq.engine.draw import engine_svg

FIX = Path(__file__).resolve().parents[1] / "data" / "trt"   # copied with MANIFEST.md
RESNET = FIX / "trex-resnet18-a100"
GRAPHS = sorted(FIX.glob("*/*.graph.json")) + sorted(RESNET.glob("*/*.graph.json"))


def _profile_of(graph: Path) -> Path:
    return graph.with_name(graph.name.replace(".graph.json", ".profile.json"))


def _raw(path: Path):
    return json.loads(path.read_text())


def _dtype_word(fmt: str) -> str:
    return {"int8": "INT8", "fp16": "FP16", "fp32": "FP32"}[
        re.findall(r"(Int8|FP16|FP32)", fmt)[-1].lower()]


@pytest.mark.parametrize("graph", GRAPHS, ids=lambda p: p.parent.name + "/" + p.name[:20])
def test_counts_match_the_file(graph: Path) -> None:
    raw = _raw(graph)["Layers"]
    prof = [r for r in _raw(_profile_of(graph)) if "name" in r]
    eng = load_engine(graph, _profile_of(graph))
    s = summarize(eng)
    assert s["layers"] == len(raw)
    assert s["reformat"]["count"] == sum(la["LayerType"] == "Reformat" for la in raw)
    int8 = sum(1 for la in raw if la["LayerType"] != "NoOp" and la["Inputs"]
               and "Int8" in la["Inputs"][0]["Format/Datatype"])
    assert s["precision_layers"].get("INT8", 0) == int8
    total = sum(r["averageMs"] for r in prof)
    assert s["total_ms"] == pytest.approx(total, rel=1e-12)   # float sum order only
    ref_ms = sum(r["averageMs"] for r in prof
                 if any(la["Name"] == r["name"] and la["LayerType"] == "Reformat" for la in raw))
    assert s["reformat"]["time_ms"] == pytest.approx(ref_ms, rel=1e-12)
    # each layer's share is its own profile percentage (trtexec rounds it to 6 digits)
    pct = {r["name"]: r["percentage"] for r in prof}
    for la in eng.layers:
        assert la.share * 100 == pytest.approx(pct[la.name], abs=1e-3)


def test_mobilenet_reformats_match_the_manifest() -> None:
    """MANIFEST.md: 73 layers (Int8 53), 17 reformat layers of QDQ origin."""
    s = summarize(load_engine(FIX / "trex-mobilenet-qat/mobilenet.qat.onnx.engine.graph.json"))
    assert s["layers"] == 73 and s["precision_layers"]["INT8"] == 53
    assert s["reformat"]["by_origin"]["QDQ"] == 17


def test_fused_onnx_nodes_from_names_and_tactics() -> None:
    eng = load_engine(RESNET / "qat/resnet-qat.onnx.engine.graph.json")
    raw = _raw(RESNET / "qat/resnet-qat.onnx.engine.graph.json")["Layers"]
    layer = next(la for la in eng.layers if "Conv_34" in la.name)
    assert layer.onnx_nodes == ["layer1.0.conv2.weight", "QuantizeLinear_32", "Conv_34",
                                "Add_36", "Relu_37"]
    assert layer.tactic == raw[layer.index]["TacticName"]
    ref = next(la for la in eng.layers if la.name.startswith("Reformatting CopyNode for Output"))
    assert ref.reformat_source() == "output 0 of MaxPool_12" and ref.onnx_nodes == []


def _to_trt11(src: Path, dst: Path) -> dict:
    """Rewrite a real TensorRT 8 layer JSON into the documented TensorRT 11 schema."""
    data = _raw(src)
    produced = {t["Name"] for la in data["Layers"] for t in la["Outputs"]}
    shapes = {t["Name"]: t["Dimensions"] for la in data["Layers"]
              for t in la["Inputs"] + la["Outputs"]}
    io = [{"Name": b, "IOMode": "Output" if b in produced else "Input", "DataType": "Float",
           "Dimensions": shapes[b], "Location": "Device", "IsShapeInferenceIO": False,
           "ProfileInfo": [{"MinShape": shapes[b], "OptShape": shapes[b], "MaxShape": shapes[b],
                            "Format": "Row major linear FP32 format (kLINEAR)"}]}
          for b in data.pop("Bindings")]
    for la in data["Layers"]:
        for t in la["Inputs"] + la["Outputs"]:
            fmt = t.pop("Format/Datatype")
            t["Format"] = fmt.replace(" Int8", "").replace(" FP16", "").replace(" FP32", "")
            t["Datatype"] = {"INT8": "Int8", "FP16": "Half", "FP32": "Float"}[_dtype_word(fmt)]
            t["StrideOrder"], t["Strides"] = [0, 1, 2, 3], [1, 1, 1, 1]
        if not la["Name"].startswith("Reformatting"):
            parts = [p for p in la["Name"].split(" + ") if "_" in p and "." not in p]
            la["Metadata"] = "\x1f".join(f"[ONNX Layer: /{p}]" for p in parts)
    data["I/O Tensors"] = io
    dst.write_text(json.dumps(data))
    return data


def test_trt11_schema_reads_like_the_original(tmp_path: Path) -> None:
    src = RESNET / "qat/resnet-qat.onnx.engine.graph.json"
    data = _to_trt11(src, tmp_path / "trt11.graph.json")
    old, new = load_engine(src), load_engine(tmp_path / "trt11.graph.json")
    assert new.schema == "trt11" and old.schema == "trt8-10"
    assert [la.precision for la in new.layers] == [la.precision for la in old.layers]
    assert summarize(new)["reformat"]["count"] == summarize(old)["reformat"]["count"]
    assert [(t["name"], t["mode"]) for t in new.io_tensors] == \
        [(t["Name"], t["IOMode"]) for t in data["I/O Tensors"]]
    conv = next(la for la in new.layers if "Conv_34" in la.name)
    assert conv.onnx_nodes == ["/QuantizeLinear_32", "/Conv_34", "/Add_36", "/Relu_37"]


def _qdq_onnx_named_like_the_engine(path: Path, prefix: str = "") -> None:
    """A tiny Q/DQ graph whose node names are those of the ResNet QAT engine's first layers:
    Conv_9 and MaxPool_12 get a DQ'd activation (meant for INT8), Conv_22 gets none."""
    s = numpy_helper.from_array(np.array(0.05, np.float32), "s")
    z = numpy_helper.from_array(np.array(0, np.int8), "z")
    w = numpy_helper.from_array(np.ones((4, 3, 3, 3), np.float32), "w")
    w2 = numpy_helper.from_array(np.ones((4, 4, 1, 1), np.float32), "w2")
    nodes = [helper.make_node("QuantizeLinear", ["x", "s", "z"], ["xq"], name="QuantizeLinear_2"),
             helper.make_node("DequantizeLinear", ["xq", "s", "z"], ["xd"], name="DQ_a"),
             helper.make_node("Conv", ["xd", "w"], ["c"], name="Conv_9", pads=[1, 1, 1, 1]),
             helper.make_node("QuantizeLinear", ["c", "s", "z"], ["cq"], name="QuantizeLinear_10"),
             helper.make_node("DequantizeLinear", ["cq", "s", "z"], ["cd"], name="DQ_b"),
             helper.make_node("MaxPool", ["cd"], ["p"], name="MaxPool_12", kernel_shape=[2, 2]),
             helper.make_node("Conv", ["p", "w2"], ["y"], name="Conv_22")]
    for n in nodes:
        n.name = prefix + n.name
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT,
                                                                     [1, 3, 8, 8])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                          [s, z, w, w2])
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), str(path))


def test_int8_intent_against_the_qdq_model(tmp_path: Path) -> None:
    _qdq_onnx_named_like_the_engine(tmp_path / "m.onnx")
    eng = load_engine(RESNET / "qat/resnet-qat.onnx.engine.graph.json")
    raw = {la["Name"]: la for la in _raw(RESNET / "qat/resnet-qat.onnx.engine.graph.json")["Layers"]}
    assert "FP32" in raw["MaxPool_12"]["Inputs"][0]["Format/Datatype"]        # what the file says
    res = int8_intent(eng, onnx.load(str(tmp_path / "m.onnx")))
    assert res["intended_int8"] == 2
    assert [(m["node"], m["actual"]) for m in res["not_int8"]] == [("MaxPool_12", "FP32")]
    assert [m["node"] for m in res["unexpected_int8"]] == ["Conv_22"]


def test_fp16_vs_naive_int8_layer_by_layer() -> None:
    fp16 = load_engine(RESNET / "fp16/resnet.onnx.engine.graph.json",
                       RESNET / "fp16/resnet.onnx.engine.profile.json")
    qat = load_engine(RESNET / "qat/resnet-qat.onnx.engine.graph.json",
                      RESNET / "qat/resnet-qat.onnx.engine.profile.json")
    rows = compare_engines(fp16, qat).rows
    paired = [r for r in rows if r["a"] and r["b"]]
    convs = {la["Name"] for la in _raw(RESNET / "fp16/resnet.onnx.engine.graph.json")["Layers"]
             if "Convolution" in la["LayerType"]}
    assert len(convs) == 21 and len([r for r in paired if r["a"] in convs]) == 21
    first = paired[0]
    assert (first["a"], first["b"]) == ("Conv_0 + Relu_1", "conv1.weight + QuantizeLinear_7 + Conv_9")
    prof = {r["name"]: r["averageMs"] for r in _raw(RESNET / "qat/resnet-qat.onnx.engine.profile.json")
            if "name" in r}
    assert first["b_ms"] == prof[first["b"]] and first["verdict"] == "slower"
    assert sum(r["verdict"] == "only in B" for r in rows) == 12     # the qat engine's reformats


def test_svg_has_one_box_per_layer() -> None:
    eng = load_engine(RESNET / "qat-residual/resnet-qat-residual.onnx.engine.graph.json")
    svg = engine_svg(eng)
    drawn = sum(1 for la in _raw(RESNET / "qat-residual/resnet-qat-residual.onnx.engine.graph.json")
                ["Layers"] if la["LayerType"] != "NoOp")
    assert svg.count("<g><title>") == drawn and svg.startswith("<svg")


def test_cli_text_and_json(tmp_path: Path, capsys) -> None:
    g = RESNET / "qat-residual-qgap/resnet-qat-residual-qgap.onnx.engine.graph.json"
    rc = main(["inspect", str(g), "--profile", str(_profile_of(g)), "--json",
               str(tmp_path / "o.json")])
    assert rc == 0
    out = json.loads((tmp_path / "o.json").read_text())
    assert len(out["layers"]) == len(_raw(g)["Layers"])
    assert "reformat layers: 1 (QDQ 1)" in capsys.readouterr().out


@pytest.mark.parametrize("content,needle", [
    ("{not json", "not valid JSON"),
    ('{"Bindings": []}', "expected a top-level 'Layers' list"),
    ('[{"count": 1}, {"name": "x", "averageMs": 1.0}]', "expected a top-level 'Layers' list"),
    ('{"Layers": [{"LayerType": "Reformat"}]}', "layer 0 has no Name"),
])
def test_bad_engine_json_is_one_line_exit_1(tmp_path: Path, capsys, content, needle) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text(content)
    assert main(["inspect", str(bad)]) == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and needle in err and err.startswith("ptq inspect: error:")


def test_profile_of_another_engine_is_refused(tmp_path: Path, capsys) -> None:
    rc = main(["inspect", str(RESNET / "fp16/resnet.onnx.engine.graph.json"), "--profile",
               str(RESNET / "qat/resnet-qat.onnx.engine.profile.json"),
               "--json", str(tmp_path / "o.json")])
    assert rc == 1 and "does not belong to" in capsys.readouterr().err
    assert not (tmp_path / "o.json").exists()


def test_layer_names_only_file(tmp_path: Path, capsys) -> None:
    """--profilingVerbosity=layer_names_only writes the layers as plain strings."""
    g = tmp_path / "names.json"
    g.write_text(json.dumps({"Layers": ["Conv_0 + Relu_1", "MaxPool_2"], "Bindings": ["x", "y"]}))
    assert main(["inspect", str(g)]) == 0
    out = capsys.readouterr().out
    assert "2 layers" in out and "layer_names_only" in out
    assert load_engine(g).layers[0].onnx_nodes == ["Conv_0", "Relu_1"]


def test_int8_intent_through_trt10_metadata(tmp_path: Path) -> None:
    """With TensorRT 10+ `[ONNX Layer: /name]` metadata the ONNX names (here '/'-prefixed, as
    torch.onnx writes them) are matched from the metadata, not the layer name."""
    _to_trt11(RESNET / "qat/resnet-qat.onnx.engine.graph.json", tmp_path / "g.json")
    _qdq_onnx_named_like_the_engine(tmp_path / "m.onnx", prefix="/")
    res = int8_intent(load_engine(tmp_path / "g.json"), onnx.load(str(tmp_path / "m.onnx")))
    assert [(m["node"], m["actual"]) for m in res["not_int8"]] == [("/MaxPool_12", "FP32")]
    assert [m["node"] for m in res["unexpected_int8"]] == ["/Conv_22"]
