"""Metric hooks and the built-in detection scorer, fed with the real digits model's outputs."""
from __future__ import annotations

import numpy as np
import onnx
import pytest

from ptq.errors import ConfigError, PtqError
from ptq.evaluate import run_model
from ptq.quantization import quantize
from ptq.sensitivity import SensitivityConfig, analyze, load_hook, mean_average_precision
from ptq.sensitivity.detection import as_detections, ground_truth_from_labels
from ptq.sensitivity.scoring import parse_target, resolve_scorer
from ptq.table import CalibrationTable
from sens_helpers import DIGITS_PRE, batches_of, write_broken_module, write_hook_module
from zoo import digits_arrays


@pytest.fixture(scope="module")
def hooks(tmp_path_factory):
    folder = tmp_path_factory.mktemp("hooks")
    with pytest.MonkeyPatch.context() as mp:
        mp.syspath_prepend(str(folder))
        name = write_hook_module(folder, "sens_digits_hooks")
        write_broken_module(folder, "sens_broken_hooks")
        yield name


@pytest.fixture(scope="module")
def hook_run(hooks, digits_model_path, digits_images, digits_ranges):
    metrics = ("top1", f"{hooks}:accuracy", f"{hooks}:accuracy_from_files", "cosine")
    config = SensitivityConfig(metrics=metrics, labels=True, preprocess=DIGITS_PRE)
    return analyze(digits_model_path, digits_images, config, ranges=digits_ranges).result


def test_hook_scores_equal_the_builtin_accuracy(hook_run, hooks):
    acc, files_acc = f"{hooks}:accuracy", f"{hooks}:accuracy_from_files"
    assert hook_run.settings["higher_is_better"][acc] is True
    for record in (hook_run.reference, hook_run.baseline, *hook_run.layers):
        m = record["metrics"] if isinstance(record, dict) else record.metrics
        # labels and file names reach the hook in the same order as the outputs
        assert m[acc] == pytest.approx(m["top1-acc"]) == pytest.approx(m[files_acc])
    assert hook_run.reference["metrics"][acc] >= 0.95


def test_map50_with_a_decoder_hook_on_real_outputs(hooks, digits_model_path, digits_ranges, tmp_path):
    # a classifier read as a detector: one whole-image box per image, ground truth = its label
    x, y = digits_arrays("test")
    x, y = x[:120], y[:120]
    boxes = np.zeros((len(y), 2, 5), np.float32)
    boxes[:, 0] = np.stack([y, np.zeros_like(y), np.zeros_like(y), 16 + 0 * y, 16 + 0 * y], 1)
    boxes[:, 1, 0] = -1  # padding row
    data = tmp_path / "digits_boxes.npz"
    np.savez(data, image=x, labels=boxes)
    config = SensitivityConfig(metrics=("map50", "top1"), decoder=f"{hooks}:decode",
                               nodes=("conv2",))
    result = analyze(digits_model_path, data, config, ranges=digits_ranges).result
    # the same figures computed directly: run the models, decode, mAP
    decode = load_hook(f"{hooks}:decode")
    gts = ground_truth_from_labels(boxes)
    model = onnx.load(digits_model_path)
    batches = batches_of(digits_model_path, data)
    meta = {"files": [], "labels": boxes}
    for proto, expected in ((model, result.reference["metrics"]["map50"]),
                            (quantize(model, CalibrationTable.load(digits_ranges)),
                             result.baseline["metrics"]["map50"])):
        out = run_model(proto, batches, optimization="all" if proto is model else "disable")
        dets = as_detections(decode(out, meta), len(gts), "decode")
        assert mean_average_precision(dets, gts) == pytest.approx(expected)
    assert 0.9 <= result.reference["metrics"]["map50"] <= 1.0


def test_hook_loading_errors_name_the_hook(hooks):
    with pytest.raises(ConfigError, match="failed to import: ModuleNotFoundError"):
        load_hook("sens_broken_hooks:anything")
    with pytest.raises(ConfigError, match="no_such_module_xyz"):
        load_hook("no_such_module_xyz:score")
    with pytest.raises(ConfigError, match="has no 'missing'"):
        load_hook(f"{hooks}:missing")
    with pytest.raises(ConfigError, match="expected PKG.MODULE:FUNCTION"):
        load_hook("not a hook:")
    with pytest.raises(ConfigError, match="does not declare its direction"):
        resolve_scorer(f"{hooks}:no_direction")
    with pytest.raises(ConfigError, match="unknown metric 'cosin'"):
        resolve_scorer("cosin")
    with pytest.raises(ConfigError, match="needs a decoder"):
        resolve_scorer("map50")


def test_a_raising_hook_fails_the_analysis_with_its_name(hooks, digits_model_path, digits_images,
                                                         digits_ranges):
    for fn, match in (("boom", r"metric hook '.*:boom' raised ValueError: kaboom from the hook"),
                      ("not_a_number", r"returned nan")):
        config = SensitivityConfig(metrics=(f"{hooks}:{fn}",), preprocess=DIGITS_PRE, eval_images=20)
        with pytest.raises(PtqError, match=match):
            analyze(digits_model_path, digits_images, config, ranges=digits_ranges)


def test_targets_parse_and_map_to_label_metrics():
    t = parse_target("top1>=0.99", labels=True)
    assert (t.metric, t.op, t.value) == ("top1-acc", ">=", 0.99)
    assert t.holds({"top1-acc": 0.99}) and not t.holds({"top1-acc": 0.98})
    assert parse_target(" mse < 1e-3 ").holds({"mse": 5e-4})
    assert parse_target("pkg.mod:fn>0.5").metric == "pkg.mod:fn"
    for bad in ("top1", "top1=>0.9", "top1>=abc", ""):
        with pytest.raises(ConfigError, match="bad target"):
            parse_target(bad)
