"""`ptq sensitivity` through ptq.cli.main: outputs, exit codes, and every bad input."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from ptq.cli import main
from ptq.table import CalibrationTable
from sens_helpers import DIGITS_FLAGS, write_broken_module, write_hook_module


def sens(model, data, out, *extra) -> list[str]:
    return ["sensitivity", str(model), "--data", str(data), *DIGITS_FLAGS, "-o", str(out), *extra]


@pytest.fixture(scope="module")
def faulty_ranges(digits_ranges, tmp_path_factory) -> Path:
    """The real percentile ranges (sound on this model) with relu2's range cut to 20%: costs ~55
    points of accuracy, and pinning conv3 (its only consumer) alone recovers them."""
    table = CalibrationTable.load(digits_ranges)
    table.tensors["relu2"].amax["percentile"] *= 0.2
    return table.save(tmp_path_factory.mktemp("faulty") / "ranges.json")


def test_ranks_pins_and_writes_everything(digits_model_path, digits_images, faulty_ranges,
                                          tmp_path, capsys):
    out = tmp_path / "out"
    code = main(sens(digits_model_path, digits_images, out, "--ranges", str(faulty_ranges),
                     "--algo", "percentile", "--labels", "--metric", "top1", "cosine", "--topk", "3",
                     "--auto", "--target", "top1>=0.95", "--jobs", "2",
                     "--executor", "process"))
    assert code == 0
    text = capsys.readouterr().out
    assert "leave-one-out: top 3 by top1-acc" in text and "conv3" in text
    assert "auto: target top1-acc>=0.95 met with 1 pin(s)" in text
    data = json.loads((out / "sensitivity.json").read_text())
    assert data["layers"][0]["node"] == "conv3" and data["settings"]["jobs"] == 2
    assert [p["node"] for p in data["auto"]["pins"]] == ["conv3"]
    auto_model = onnx.load(data["auto"]["model_path"])
    assert "conv3" in {p.key: p.value for p in auto_model.metadata_props}["ptq.pins"]
    assert list((out / ".ptq-cache").glob("reference-*.npz"))  # reference cached next to the run


def test_unmet_target_still_writes_the_best_model_and_exits_4(digits_model_path, digits_images,
                                                              digits_ranges, tmp_path):
    out = tmp_path / "out"
    code = main(sens(digits_model_path, digits_images, out, "--ranges", str(digits_ranges),
                     "--eval-images", "60", "--metric", "cosine", "--target", "snr>=60",
                     "--max-pins", "1", "-q"))
    assert code == 4
    data = json.loads((out / "sensitivity.json").read_text())
    assert data["settings"]["metrics"] == ["cosine", "snr"]  # the target's metric is measured too
    auto = data["auto"]
    assert auto["metrics"]["snr"] < 60
    assert auto["met"] is False and auto["stopped_by"] == "max-pins" and len(auto["pins"]) == 1
    assert Path(auto["model_path"]).is_file()


def test_calibrates_on_the_fly_without_ranges(digits_model_path, digits_images, tmp_path):
    out = tmp_path / "out"
    code = main(sens(digits_model_path, digits_images, out, "--eval-images", "40",
                     "--max-images", "40", "--mode", "quantize-one", "--pin", "fp32", "-q"))
    assert code == 0
    data = json.loads((out / "sensitivity.json").read_text())
    assert data["ranges"]["path"] == str(out / "ranges.json")
    assert CalibrationTable.load(out / "ranges.json").methods == ["auto"]  # the default
    assert {x["mode"] for x in data["layers"]} == {"quantize-one"}


def test_help_documents_exit_code_4(capsys):
    assert main(["sensitivity", "--help"]) == 0
    assert "4 --auto finished without meeting the target" in capsys.readouterr().out


def test_trt_backend_without_tensorrt_is_a_clear_error(digits_model_path, digits_images, tmp_path,
                                                       capsys):
    try:
        import tensorrt  # noqa: F401
        pytest.skip("tensorrt is installed here; this tests the machines without it")
    except ImportError:
        pass
    out = tmp_path / "out"
    assert main(sens(digits_model_path, digits_images, out, "--backend", "trt")) == 1
    err = capsys.readouterr().err
    assert "TensorRT is not installed" in err and 'pip install "ptq[tensorrt]"' in err
    assert not out.exists()  # failed before any work: no partial output


@pytest.fixture(scope="module")
def relu_only_model(tmp_path_factory) -> Path:
    """A float model with nothing ptq quantizes (Relu -> Sigmoid)."""
    x = helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 3, 16, 16])
    y = helper.make_tensor_value_info("out", TensorProto.FLOAT, ["N", 3, 16, 16])
    nodes = [helper.make_node("Relu", ["image"], ["r"], name="relu"),
             helper.make_node("Sigmoid", ["r"], ["out"], name="sigmoid")]
    model = helper.make_model(helper.make_graph(nodes, "relu_only", [x], [y]),
                              opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    path = tmp_path_factory.mktemp("relu_only") / "relu_only.onnx"
    onnx.save_model(model, path)
    return path


@pytest.fixture(scope="module")
def unlabelled_images(digits_images, tmp_path_factory) -> Path:
    """Twelve digits images in one flat folder: no class sub-folders, so no labels."""
    dest = tmp_path_factory.mktemp("flat")
    for i, png in enumerate(sorted(digits_images.rglob("*.png"))[:12]):
        shutil.copy(png, dest / f"img_{i}.png")
    return dest


@pytest.fixture(scope="module")
def hook_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("cli_hooks")
    write_hook_module(folder, "sens_cli_hooks")
    write_broken_module(folder, "sens_cli_broken")
    return folder


@pytest.mark.parametrize("case, extra, message", [
    ("unknown metric", ["--metric", "cosin"], "unknown metric 'cosin'"),
    ("hook import", ["--metric", "sens_cli_broken:score"],
     "metric hook 'sens_cli_broken:score' failed to import: ModuleNotFoundError"),
    ("hook raises", ["--metric", "sens_cli_hooks:boom"],
     "metric hook 'sens_cli_hooks:boom' raised ValueError: kaboom from the hook"),
    ("labels missing", ["--labels", "--metric", "top1"],
     "need labels, but the evaluation data has none"),
    ("no quantizable node", [], "the model has no quantizable node"),
    ("bad target", ["--target", "top1=0.9"], "bad target"),
    ("nodes", ["--nodes", "relu1"], "matches no quantizable node"),
])
def test_bad_input_is_one_clear_line_and_no_output(case, extra, message, digits_model_path,
                                                   digits_ranges, unlabelled_images, relu_only_model,
                                                   hook_dir, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(hook_dir)  # hooks are found in the current directory, as with python -m
    model = relu_only_model if case == "no quantizable node" else digits_model_path
    out = tmp_path / "out"
    code = main(sens(model, unlabelled_images, out, "--ranges", str(digits_ranges), *extra))
    err = capsys.readouterr().err.strip()
    assert code == 1, err
    assert message in err and len(err.splitlines()) == 1
    assert not out.exists()  # nothing written, not even the reference cache


def test_detection_metric_needs_box_labels(digits_model_path, digits_ranges, hook_dir, tmp_path,
                                           capsys, monkeypatch):
    monkeypatch.chdir(hook_dir)
    data = tmp_path / "no_labels.npz"
    np.savez(data, image=np.zeros((4, 3, 16, 16), np.float32))
    code = main(["sensitivity", str(digits_model_path), "--data", str(data), "--ranges",
                 str(digits_ranges), "--metric", "map50", "--decoder", "sens_cli_hooks:decode",
                 "-o", str(tmp_path / "out")])
    assert code == 1 and "map50 need labels" in capsys.readouterr().err


def test_fixed_batch_model_drops_the_partial_batch(bad_models, digits_images, digits_ranges, tmp_path):
    out = tmp_path / "out"
    code = main(sens(bad_models["static_batch"], digits_images, out, "--ranges", str(digits_ranges),
                     "--eval-images", "10", "--nodes", "conv2", "-q"))
    assert code == 0
    settings = json.loads((out / "sensitivity.json").read_text())["settings"]
    assert (settings["batch_size"], settings["eval_images"]) == (4, 8)  # 10 = 4 + 4 + 2 dropped


def test_variants_run_at_a_faithful_level_and_basic_equals_disable(digits_model_path, digits_images,
                                                                   digits_ranges, tmp_path):
    """The default is 'nchwc' (exact Q/DQ ops, FP32 NCHWc convolutions), as recorded; 'disable'
    runs no optimization and 'basic' runs with ORT's WeightBiasQuantization off: those two give
    bit-identical metrics, and 'nchwc' the same up to float summation order; levels that fuse
    integer kernels are refused, by the CLI and by the API."""
    runs = {}
    for level in (None, "disable", "basic"):
        out = tmp_path / (level or "default")
        extra = ["--optimization", level] if level else []
        code = main(sens(digits_model_path, digits_images, out, "--ranges", str(digits_ranges),
                         "--eval-images", "60", "--metric", "cosine", "max-abs", "--nodes", "conv2",
                         "conv3", "-q", *extra))
        assert code == 0
        runs[level] = json.loads((out / "sensitivity.json").read_text())
    assert [runs[k]["settings"]["optimization"] for k in runs] == ["nchwc", "disable", "basic"]
    assert runs["disable"]["baseline"]["metrics"] == runs["basic"]["baseline"]["metrics"]
    assert [x["metrics"] for x in runs["disable"]["layers"]] == \
        [x["metrics"] for x in runs["basic"]["layers"]]
    # nchwc: another FP32 summation order moves a few values across a Q rounding edge
    # (measured here: cosines differ by at most 2e-7)
    for a, b in zip([runs[None]["baseline"], *runs[None]["layers"]],
                    [runs["disable"]["baseline"], *runs["disable"]["layers"]]):
        assert a["metrics"]["cosine"] == pytest.approx(b["metrics"]["cosine"], abs=1e-5)
    assert main(sens(digits_model_path, digits_images, tmp_path / "all", "--optimization", "all")) == 2
    from ptq.errors import ConfigError
    from ptq.sensitivity import SensitivityConfig, analyze
    with pytest.raises(ConfigError, match="does not compute Q/DQ exactly"):
        analyze(digits_model_path, digits_images, SensitivityConfig(optimization="all"),
                ranges=digits_ranges)
