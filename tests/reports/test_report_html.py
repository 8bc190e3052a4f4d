"""Structural tests of the report page: sections, self-containment, tables against the artifacts.

The page is parsed with html.parser (tests/reports/html_outline.py); expected rows and
values come from the JSON/ONNX artifacts read directly here, not from ptq.reports.
"""
from __future__ import annotations

import base64
import io
import json
import math
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from PIL import Image

from html_outline import Table, outline
from ptq.reports import write_report

SECTIONS = ["summary", "ranges", "histograms", "sensitivity", "warnings"]


def _read(path: Path) -> str:
    return path.read_text(encoding="utf-8")


def _table(tables: list[Table], first_header: str) -> Table:
    found = [t for t in tables if t.headers and t.headers[0] == first_header]
    assert len(found) == 1, [t.headers for t in tables]
    return found[0]


def _close(text: str, value: float) -> bool:
    """Page numbers are printed with 4 significant digits."""
    return math.isclose(float(text), value, rel_tol=1e-3, abs_tol=1e-9)


@pytest.mark.parametrize("which", ["digits_ranges_report", "digits_full_report"])
def test_every_section_in_order_and_nothing_external(which: str, request) -> None:
    page = _read(request.getfixturevalue(which))
    o = outline(page)
    assert o.sections == SECTIONS
    assert all(u.startswith("#") or u.startswith("data:image/png;base64,") for u in o.urls), o.urls
    assert "link" not in o.tags and "iframe" not in o.tags and "object" not in o.tags
    assert "http://" not in page and "https://" not in page
    assert o.tags.get("script") == 1 and "addEventListener" in o.scripts[0]   # the sort script


@pytest.mark.parametrize("which", ["digits_ranges_report", "digits_full_report"])
def test_images_decode_at_their_declared_size(which: str, request) -> None:
    o = outline(_read(request.getfixturevalue(which)))
    assert o.images
    for img in o.images:
        data = base64.b64decode(img["src"].split(",", 1)[1], validate=True)
        with Image.open(io.BytesIO(data)) as im:
            im.load()
            assert im.format == "PNG"
            assert im.size == (int(img["width"]), int(img["height"]))
            assert np.asarray(im.convert("L")).std() > 5, img["alt"]   # not a blank plot


def test_all_tensors_table_has_one_row_per_tensor_in_graph_order(digits_ranges: Path,
                                                                  digits_ranges_report: Path) -> None:
    tensors = json.loads(digits_ranges.read_text())["tensors"]
    o = outline(_read(digits_ranges_report))
    table = _table(o.tables_in("histograms"), "tensor")
    assert [r[0] for r in table.rows] == [t["name"] for t in tensors]
    assert table.sortable
    for row, t in zip(table.rows, tensors):
        assert _close(row[2], t["min"]) and _close(row[3], t["max"])
        assert _close(row[4], t["amax"]["entropy"])
    assert o.svg_in_details >= len(tensors)   # one sparkline per tensor, behind <details>


def test_disagreement_table_is_the_largest_amax_ratios(digits_ranges: Path,
                                                       digits_ranges_report: Path) -> None:
    tensors = json.loads(digits_ranges.read_text())["tensors"]
    # ties (e.g. pool2 and flatten, the same values reshaped) keep graph order, the file's order
    ranked = sorted(enumerate(tensors),
                    key=lambda it: (-max(it[1]["amax"].values()) / min(it[1]["amax"].values()), it[0]))
    ratios = [(max(t["amax"].values()) / min(t["amax"].values()), t["name"]) for _, t in ranked]
    table = _table(outline(_read(digits_ranges_report)).tables_in("ranges"), "tensor")
    assert len(table.rows) == min(10, len(tensors))
    assert [r[0] for r in table.rows] == [name for _, name in ratios[:len(table.rows)]]
    assert all(_close(r[2], ratio) for r, (ratio, _) in zip(table.rows, ratios))


def test_ranges_only_report_omits_sensitivity_with_a_note(digits_ranges_report: Path) -> None:
    o = outline(_read(digits_ranges_report))
    assert "Omitted: no sensitivity.json was given" in o.text["sensitivity"]
    assert not o.tables_in("sensitivity")
    assert "No sensitivity.json given" in o.text["summary"]
    assert "pass --model model.int8.onnx" in o.text["summary"]
    assert "Layers left FP32: unknown" in o.text["warnings"]


def test_sensitivity_table_lists_every_layer(digits_sensitivity: dict[str, Path],
                                             digits_full_report: Path) -> None:
    sens = json.loads(digits_sensitivity["sensitivity"].read_text())
    o = outline(_read(digits_full_report))
    table = _table(o.tables_in("sensitivity"), "rank")
    assert table.sortable
    assert [(int(r[0]), r[1]) for r in table.rows] == [(la["rank"], la["node"]) for la in sens["layers"]]
    rank_metric = sens["settings"]["rank_metric"]
    col = table.headers.index(f"Δ {rank_metric}")
    for row, layer in zip(table.rows, sens["layers"]):
        assert _close(row[col], layer["delta"][rank_metric])
    alts = [img["alt"] for img in o.images if img["section"] == "sensitivity"]
    assert alts == [f"top {min(15, len(sens['layers']))} sensitive layers (leave-one-out)"]


def test_summary_figures_match_sensitivity_json(digits_sensitivity: dict[str, Path],
                                                digits_full_report: Path) -> None:
    sens = json.loads(digits_sensitivity["sensitivity"].read_text())
    table = _table(outline(_read(digits_full_report)).tables_in("summary"), "model")
    rows = {r[0]: r for r in table.rows}
    names = [h.rsplit(" ", 1)[0] for h in table.headers[1:-1]]
    expected = {"FP32 (ONNX Runtime)": sens["reference"]["metrics"],
                "INT8 (every quantizable layer)": sens["baseline"]["metrics"],
                "Mixed precision (auto fallback)": sens["auto"]["metrics"]}
    assert set(rows) == set(expected)
    for label, metrics in expected.items():
        for i, name in enumerate(names, start=1):
            if name in metrics:
                assert _close(rows[label][i], metrics[name]), (label, name)
    assert sens["auto"]["target"] in rows["Mixed precision (auto fallback)"][-1]


def test_layer_precisions_and_pin_reasons_come_from_the_model(digits_qdq: Path, digits_ranges: Path,
                                                             tmp_path: Path) -> None:
    from conftest import FP16_PIN_REASON, FP32_PIN_REASON
    from ptq.graph.precisions import layer_precisions

    out = write_report(tmp_path / "r.html", digits_ranges, model=digits_qdq).path
    o = outline(_read(out))
    expected = {n: p.value.upper() for n, p in layer_precisions(onnx.load(digits_qdq)).items()}
    table = _table(o.tables_in("summary"), "node")
    assert {r[0]: r[2] for r in table.rows} == expected
    assert expected["conv1"] == "FP32" and expected["conv3"] == "FP16"
    pinned = _table(o.tables_in("summary"), "pinned node")
    assert {r[0]: (r[2], r[3]) for r in pinned.rows} == {
        "conv1": ("FP32", f"pinned to FP32: {FP32_PIN_REASON}"),
        "conv3": ("FP16", f"pinned to FP16: {FP16_PIN_REASON}")}
    warnings = o.text["warnings"]
    assert "layer(s) left FP32 that could run in INT8" in warnings and FP32_PIN_REASON in warnings
    assert "run in FP16" in warnings and FP16_PIN_REASON in warnings


def test_highlighted_histograms_include_the_top_layer_inputs(digits_model_path: Path,
                                                             digits_sensitivity: dict[str, Path],
                                                             digits_full_report: Path) -> None:
    sens = json.loads(digits_sensitivity["sensitivity"].read_text())
    top = min(sens["layers"], key=lambda la: la["rank"])["node"]
    graph = onnx.load(digits_model_path).graph
    inputs = [i for n in graph.node if n.name == top for i in n.input]
    inits = {t.name for t in graph.initializer}
    activations = [i for i in inputs if i not in inits]
    alts = {img["alt"] for img in outline(_read(digits_full_report)).images}
    assert activations and all(f"histogram of {name}" in alts for name in activations)


def _weird_model(path: Path) -> Path:
    """Conv -> Relu whose node and tensor names carry markup, quotes, ampersands and a `$...$`
    that matplotlib would parse (and fail on) as mathtext."""
    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.normal(0, 0.3, (4, 3, 3, 3)).astype(np.float32), "w")
    x = helper.make_tensor_value_info("in<put>", TensorProto.FLOAT, ["N", 3, 8, 8])
    y = helper.make_tensor_value_info("out&\"q\" $\\bad$", TensorProto.FLOAT, ["N", 4, 8, 8])
    nodes = [helper.make_node("Conv", ["in<put>", "w"], ["<script>alert(1)</script>"],
                              name="<b>conv</b>", pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["<script>alert(1)</script>"], ["out&\"q\" $\\bad$"], name="r'elu")]
    model = helper.make_model(helper.make_graph(nodes, "weird", [x], [y], [w]),
                              opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    onnx.checker.check_model(model, full_check=True)
    onnx.save_model(model, path)
    return path


def test_names_from_the_model_are_escaped(tmp_path: Path) -> None:
    from ptq.calibration import CalibrateConfig, calibrate, write_outputs
    from ptq.calibrators import Method

    model = _weird_model(tmp_path / "weird.onnx")
    data = tmp_path / "x.npy"
    np.save(data, np.random.default_rng(1).normal(size=(16, 3, 8, 8)).astype(np.float32))
    table = calibrate(model, data, CalibrateConfig(algorithms=tuple(Method)))
    ranges = write_outputs(table, tmp_path / "out")["ranges.json"]
    page = _read(write_report(tmp_path / "r.html", ranges).path)
    o = outline(page)
    assert o.tags.get("script") == 1   # only the sort script; no name became markup
    assert "<script>alert(1)</script>" not in page and "<b>conv</b>" not in page
    rows = _table(o.tables_in("histograms"), "tensor").rows
    assert [r[0] for r in rows] == ["in<put>", "<script>alert(1)</script>", "out&\"q\" $\\bad$"]
