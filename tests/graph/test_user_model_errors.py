"""Users' models that ONNX itself calls broken get a one-line exit-1 error naming the file,
from every command that reads them (before issue 9: a wrong hint, or exit 3 blaming ptq)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from ptq.cli import main


def _save(tmp_path: Path, name: str, nodes, outputs, inits=()) -> Path:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 8, 8])
    model = helper.make_model(helper.make_graph(nodes, name, [x], outputs, list(inits)),
                              opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    path = tmp_path / f"{name}.onnx"
    onnx.save(model, path)                       # no checker: these are what users have
    return path


@pytest.fixture()
def data(tmp_path: Path) -> Path:
    path = tmp_path / "x.npy"
    np.save(path, np.random.default_rng(0).random((4, 3, 8, 8), np.float32))
    return path


def _run(capsys, *argv: str) -> tuple[int, str]:
    code = main(list(argv))
    return code, capsys.readouterr().err.strip()


def test_unsorted_graph_is_refused_naming_file_and_node(tmp_path: Path, data: Path, capsys) -> None:
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3, 8, 8])
    second, first = (helper.make_node("Relu", ["t"], ["y"], name="second"),
                     helper.make_node("Relu", ["x"], ["t"], name="first"))
    good = _save(tmp_path, "sorted", [first, second], [y])      # the same graph, in order
    assert main(["calibrate", str(good), "--data", str(data), "-o", str(tmp_path / "good")]) == 0
    path = _save(tmp_path, "unsorted", [second, first], [y])
    ranges = str(tmp_path / "good" / "ranges.json")
    for argv in (["calibrate", str(path), "--data", str(data), "-o", str(tmp_path / "cal")],
                 ["quantize", str(path), "--ranges", ranges, "-o", str(tmp_path / "q.onnx")]):
        code, err = _run(capsys, *argv)
        assert code == 1, err
        assert str(path) in err and "topological order" in err and "'second'" in err, err
        assert len(err.splitlines()) == 1 and "fix:" in err
    assert not (tmp_path / "cal").exists() and not (tmp_path / "q.onnx").exists()


def test_checker_failure_is_exit_1_with_the_checker_message(tmp_path: Path, data: Path, capsys) -> None:
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3, 8, 8])
    bad = helper.make_node("Relu", ["x"], ["y"], name="relu", bogus=1)   # an attribute Relu lacks
    path = _save(tmp_path, "bad_attr", [bad], [y])
    code, err = _run(capsys, "calibrate", str(path), "--data", str(data), "-o", str(tmp_path / "cal"))
    assert code == 1 and str(path) in err and "fails the ONNX checker" in err and "re-export" in err, err


def test_no_float_activation_after_input_is_a_clear_error(tmp_path: Path, data: Path, capsys) -> None:
    y = helper.make_tensor_value_info("y", TensorProto.INT64, ["N", 8, 8])
    path = _save(tmp_path, "argmax_only", [helper.make_node("ArgMax", ["x"], ["y"], name="am", axis=1,
                                                            keepdims=0)], [y])
    code, err = _run(capsys, "calibrate", str(path), "--data", str(data), "-o", str(tmp_path / "cal"))
    assert code == 1 and str(path) in err and "no float tensor is computed" in err, err


def test_output_declared_without_shape_is_accepted(tmp_path: Path, data: Path, capsys) -> None:
    """ONNX Runtime runs such models and the checker refuses them; ptq fills the shape from
    shape inference on its own copy and calibrates."""
    rng = np.random.default_rng(0)
    w = onnx.numpy_helper.from_array(rng.standard_normal((4, 3, 3, 3)).astype(np.float32), "w")
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], name="conv", pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c"], ["y"], name="relu")]
    path = _save(tmp_path, "shapeless", nodes, [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], [w])
    code, err = _run(capsys, "calibrate", str(path), "--data", str(data), "-o", str(tmp_path / "cal"))
    assert code == 0, err
    code, err = _run(capsys, "quantize", str(path), "--ranges", str(tmp_path / "cal" / "ranges.json"),
                     "-o", str(tmp_path / "q.onnx"))
    assert code == 0, err
