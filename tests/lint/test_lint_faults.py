"""`ptq lint` on bad input as a new user gives it (issue 8's battery): every case must end in
one line `ptq lint: error: <file>: <problem> (fix: <hint>)` with exit 1, write nothing, and
leave a previous output as it was. Models are tiny graphs built here or the digits CNN."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from ptq.cli import main
from ptq.lint import fix_model, lint_model

ONE_LINE = re.compile(r"^ptq lint: error: .+: .+ \(fix: .+\)$")


def _qdq_model(zp_type: int | None = TensorProto.INT8, out_shape: list | None = (1, 4, 6, 6)
               ) -> onnx.ModelProto:
    """x -> Q -> DQ -> Conv -> Relu -> y, zero points of `zp_type` (None: no zero point)."""
    inits = [numpy_helper.from_array(np.array(0.1, np.float32), "s"),
             numpy_helper.from_array(np.full((4, 3, 3, 3), 0.1, np.float32), "w")]
    zp = []
    if zp_type is not None:
        inits.append(helper.make_tensor("zp", zp_type, [], [0]))
        zp = ["zp"]
    nodes = [helper.make_node("QuantizeLinear", ["x", "s", *zp], ["xq"], name="q"),
             helper.make_node("DequantizeLinear", ["xq", "s", *zp], ["xd"], name="dq"),
             helper.make_node("Conv", ["xd", "w"], ["c"], name="conv"),
             helper.make_node("Relu", ["c"], ["y"], name="relu")]
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT,
                                      None if out_shape is None else list(out_shape))
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT,
                                                                     [1, 3, 8, 8])], [y], inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 21)])
    m.ir_version = 10
    return m


@pytest.fixture()
def qdq_path(tmp_path) -> Path:
    path = tmp_path / "m.onnx"
    onnx.save(_qdq_model(TensorProto.UINT8), path)    # one fixable-free error finding
    return path


def _run(capsys, *args) -> tuple[int, str, str]:
    rc = main(["lint", *map(str, args)])
    out, err = capsys.readouterr()
    return rc, out, err


def _assert_one_line(rc: int, err: str) -> None:
    lines = err.strip().splitlines()
    assert rc == 1 and len(lines) == 1 and ONE_LINE.match(lines[0]), err


def test_fp32_model_is_reported_as_not_quantized(digits_model_path, capsys) -> None:
    rc, out, _ = _run(capsys, digits_model_path)
    assert rc == 0 and "not-quantized" in out and "not quantized" in out
    assert [f.rule for f in lint_model(digits_model_path).findings] == ["not-quantized"]


@pytest.mark.parametrize("zp_type,name", [(TensorProto.UINT16, "UINT16"),
                                          (TensorProto.INT16, "INT16"),
                                          (TensorProto.FLOAT8E5M2, "FLOAT8E5M2")])
def test_qdq_types_tensorrt_refuses_are_errors(zp_type, name) -> None:
    f = [f for f in lint_model(_qdq_model(zp_type)).findings if f.rule == "qdq-unsupported-type"]
    assert len(f) == 1 and f[0].severity == "error" and f[0].nodes == ["q", "dq"]
    assert name in f[0].message


@pytest.mark.parametrize("zp_type", [TensorProto.INT8, TensorProto.FLOAT8E4M3FN,
                                     TensorProto.INT4])
def test_qdq_types_tensorrt_takes_are_not_flagged(zp_type) -> None:
    rules = {f.rule for f in lint_model(_qdq_model(zp_type)).findings}
    assert not rules & {"qdq-unsupported-type", "qdq-uint8", "not-quantized"}


def test_fix_of_a_model_that_already_fails_the_checker(tmp_path, capsys) -> None:
    """An output without a shape fails onnx's full check before ptq touches it: --fix must
    still write the fix (the zero point), not blame itself with an internal error."""
    src = tmp_path / "noshape.onnx"
    onnx.save(_qdq_model(None, out_shape=None), src)
    with pytest.raises(onnx.checker.ValidationError):
        onnx.checker.check_model(onnx.load(src), full_check=True)
    rc, out, err = _run(capsys, src, "--fix", "-o", tmp_path / "f.onnx")
    assert rc == 0, err
    fixed = onnx.load(tmp_path / "f.onnx")
    assert all(len(n.input) == 3 for n in fixed.graph.node if "Linear" in n.op_type)


@pytest.mark.parametrize("dest", ["{t}/afile/out.json", "{t}/adir", "{t}/adir/", "/proc/ptq.json"])
@pytest.mark.parametrize("flag", ["--json", "-o"])
def test_unwritable_destination_is_one_line_and_writes_nothing(qdq_path, tmp_path, capsys,
                                                               dest, flag) -> None:
    (tmp_path / "afile").write_text("keep")
    (tmp_path / "adir").mkdir()
    before = sorted(p.name for p in tmp_path.rglob("*"))
    extra = ["--fix", "-o", str(tmp_path / "f.onnx")] if flag == "--json" else ["--fix"]
    rc, _, err = _run(capsys, qdq_path, *extra, flag, dest.format(t=tmp_path))
    _assert_one_line(rc, err)
    assert sorted(p.name for p in tmp_path.rglob("*")) == before
    assert (tmp_path / "afile").read_text() == "keep"


@pytest.mark.parametrize("case", ["json-is-input", "json-is-o", "o-is-input", "o-is-input-link"])
def test_outputs_never_replace_an_input(qdq_path, tmp_path, capsys, case) -> None:
    original = qdq_path.read_bytes()
    link = tmp_path / "link.onnx"
    link.symlink_to(qdq_path)
    args = {"json-is-input": ["--json", qdq_path],
            "json-is-o": ["--fix", "-o", tmp_path / "f.onnx", "--json", tmp_path / "f.onnx"],
            "o-is-input": ["--fix", "-o", qdq_path],
            "o-is-input-link": ["--fix", "-o", link]}[case]
    rc, _, err = _run(capsys, qdq_path, *args)
    _assert_one_line(rc, err)
    assert qdq_path.read_bytes() == original and not (tmp_path / "f.onnx").exists()


@pytest.mark.parametrize("args", [["--fix"], ["-o", "{t}/x.onnx"], ["--data", "{t}"],
                                  ["--fix", "-o", "{t}/x.onnx", "--fp32", "{t}/m.onnx"],
                                  ["--fix", "-o", "{t}/x.onnx", "--data", "{t}",
                                   "--batch-size", "0"],
                                  ["--fix", "-o", "{t}/x.onnx", "--data", "{t}",
                                   "--max-images", "-1"]],
                         ids=["fix-no-o", "o-no-fix", "data-no-fix", "fp32-no-data", "batch-0",
                              "max-images-neg"])
def test_option_mistakes_fail_before_any_work(qdq_path, tmp_path, capsys, args) -> None:
    rc, _, err = _run(capsys, qdq_path, *[a.format(t=tmp_path) for a in args])
    _assert_one_line(rc, err)
    named = [a for a in args if a.startswith("-") and a != "--fix"] or ["--fix"]
    assert named[-1] in err and not (tmp_path / "x.onnx").exists()


def test_failed_fix_keeps_the_previous_output(qdq_path, tmp_path, capsys) -> None:
    """--data that cannot be read fails after the rewrite but before anything is written
    (already true before the battery; kept as a guard now that writes are grouped)."""
    out, js = tmp_path / "f.onnx", tmp_path / "f.json"
    out.write_bytes(b"previous model")
    js.write_text("previous json")
    rc, _, err = _run(capsys, qdq_path, "--fix", "-o", out, "--json", js, "--data",
                      tmp_path / "missing")
    _assert_one_line(rc, err)
    assert out.read_bytes() == b"previous model" and js.read_text() == "previous json"


def test_real_process_under_a_file(qdq_path, tmp_path) -> None:
    (tmp_path / "afile").write_text("x")
    r = subprocess.run([sys.executable, "-m", "ptq", "lint", str(qdq_path), "--json",
                        str(tmp_path / "afile" / "l.json")], capture_output=True, text=True)
    _assert_one_line(r.returncode, r.stderr)
    assert "Traceback" not in r.stderr and "afile" in r.stderr


def test_fix_model_api_on_checker_failing_input() -> None:
    fixed, before, done = fix_model(_qdq_model(None, out_shape=None))
    assert [f.rule for f in done] == ["qdq-no-zero-point"] and len(fixed.graph.node) == 4
