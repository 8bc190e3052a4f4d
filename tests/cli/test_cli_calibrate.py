"""`ptq calibrate` through `ptq.cli.main([...])`: exit codes, files, summary, help, no partial output."""
from __future__ import annotations

from pathlib import Path

import pytest

from ptq.cache import read_cache
from ptq.calibrators import percentile_amax
from ptq.cli import EXIT_ERROR, EXIT_OK, EXIT_USAGE, main
from ptq.table import CalibrationTable

PRE = ["--preset", "raw", "--mean", "0", "--std", "255"]


@pytest.fixture(scope="module")
def images(tmp_path_factory, digits_calib_images: Path) -> Path:
    """40 calibration PNGs (4 per class) plus one unreadable file."""
    root = tmp_path_factory.mktemp("cli_images")
    for label in range(10):
        (root / str(label)).mkdir()
        for src in sorted((digits_calib_images / str(label)).glob("*.png"))[:4]:
            (root / str(label) / src.name).write_bytes(src.read_bytes())
    (root / "3" / "broken.jpg").write_text("not an image")
    return root


def run(capsys, *argv) -> tuple[int, str, str]:
    code = main(["calibrate", *map(str, argv)])
    out, err = capsys.readouterr()
    return code, out, err


def test_algo_all_writes_everything_and_prints_the_comparison(capsys, digits_model_path, images,
                                                              tmp_path) -> None:
    out_dir = tmp_path / "out"
    code, out, err = run(capsys, digits_model_path, "--data", images, *PRE, "--algo", "all", "-o", out_dir)
    assert code == EXIT_OK, err
    assert sorted(p.name for p in out_dir.iterdir()) == [
        "calib.auto.cache", "calib.entropy.cache", "calib.minmax.cache", "calib.mse.cache",
        "calib.percentile.cache", "ranges.json"]
    assert "calibrated 14 tensors on 40 samples (batch 32, 1 skipped)" in out
    assert "where the algorithms disagree most (amax):" in out
    header = next(line for line in out.splitlines() if "ratio" in line).split()
    assert header == ["tensor", "ratio", "entropy", "minmax", "percentile", "mse", "auto"]
    rows = out.split("disagree most (amax):")[1].strip().splitlines()[1:]
    assert len(rows) == 5 and rows[0].split()[0] == "relu1"
    table = CalibrationTable.load(out_dir / "ranges.json")
    assert table.methods == ["entropy", "minmax", "percentile", "mse", "auto"]
    assert read_cache(out_dir / "calib.entropy.cache").version == 101600  # the documented default
    assert read_cache(out_dir / "calib.minmax.cache").algorithm == "MinMaxCalibration"
    assert "skipping unreadable image" in err and "broken.jpg" in err


def test_options_reach_the_outputs(capsys, digits_model_path, images, tmp_path) -> None:
    code, out, err = run(capsys, digits_model_path, "--data", images, *PRE, "--algo", "entropy,percentile",
                         "--percentile", "99.9", "--trt-version", "8.6.1", "--max-images", "20",
                         "--seed", "3", "--batch-size", "8", "--num-bins", "1024", "-o", tmp_path)
    assert code == EXIT_OK, err
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "calib.entropy.cache", "calib.percentile.cache", "ranges.json"]
    table = CalibrationTable.load(tmp_path / "ranges.json")
    assert table.settings["percentile"] == 99.9 and table.settings["num_bins"] == 1024
    assert (table.data["max_images"], table.data["seed"], table.data["batch_size"]) == (20, 3, 8)
    assert table.data["num_samples"] + len(table.data["skipped"]) == 20
    t = table.tensors["relu2"]
    assert t.histogram.num_bins == 1024
    assert t.amax["percentile"] == percentile_amax(*t.histogram.finalized(), 99.9)
    cache = read_cache(tmp_path / "calib.percentile.cache")
    assert (cache.version, cache.algorithm) == (8601, "EntropyCalibration2")


def test_cache_header_override_and_quiet(capsys, digits_model_path, images, tmp_path) -> None:
    code, out, err = run(capsys, digits_model_path, "--data", images, *PRE, "--algo", "minmax",
                         "--cache-header", "entropy2", "-q", "-o", tmp_path)
    assert code == EXIT_OK and out == "" and err == ""
    assert read_cache(tmp_path / "calib.minmax.cache").algorithm == "EntropyCalibration2"


def test_default_output_folder(capsys, digits_model_path, images, tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    code, out, _ = run(capsys, digits_model_path, "--data", images, *PRE, "-q")
    assert code == EXIT_OK
    assert sorted(p.name for p in (tmp_path / "ptq-out" / "digits_cnn").iterdir()) == [
        "calib.auto.cache", "ranges.json"]  # auto is the default algorithm


@pytest.mark.parametrize("case", [
    "missing_model", "corrupt", "int_input", "nan_model", "external_data_missing", "empty_dir",
    "missing_data", "strict", "bad_algo", "batch_zero", "percentile_zero", "cuda", "trt_version",
    "outdir_is_file"])
def test_failures_exit_1_with_one_line_and_write_nothing(case, capsys, digits_model_path, bad_models,
                                                         images, tmp_path) -> None:
    model, data, extra, expect = digits_model_path, images, [], None
    out_dir = tmp_path / "out"
    if case in bad_models:
        model, expect = bad_models[case], str(bad_models[case])
    elif case == "missing_model":
        model = expect = tmp_path / "nope.onnx"
    elif case == "empty_dir":
        (tmp_path / "empty").mkdir()
        data = expect = tmp_path / "empty"
    elif case == "missing_data":
        data = expect = tmp_path / "nope"
    extra = {"strict": ["--strict"], "bad_algo": ["--algo", "kl"], "batch_zero": ["--batch-size", "0"],
             "percentile_zero": ["--percentile", "0"], "cuda": ["--providers", "cuda"],
             "trt_version": ["--trt-version", "ten"]}.get(case, [])
    if case == "strict":
        expect = "broken.jpg"
    if case == "outdir_is_file":
        out_dir.write_text("a file where the folder should go")
        expect = str(out_dir)
    code, out, err = run(capsys, model, "--data", data, *PRE, *extra, "-o", out_dir)
    assert code == EXIT_ERROR, (out, err)
    lines = err.strip().splitlines()
    assert lines[-1].startswith("ptq calibrate: error: "), err
    if expect is None:  # a bad option: the message itself says what is accepted
        assert any(w in lines[-1] for w in ("choose from", "must be", "use e.g.", "fix:")), lines[-1]
    else:  # a bad file: named, with the fix
        assert str(expect) in lines[-1] and "(fix: " in lines[-1], lines[-1]
    if case == "nan_model":
        assert "tensor 'bad'" in lines[-1]
    if case == "outdir_is_file":
        assert out_dir.read_text() == "a file where the folder should go"
    else:
        assert not out_dir.exists()
    assert "internal error" not in err and "Traceback" not in err


def test_failure_leaves_an_existing_output_folder_untouched(capsys, bad_models, images, tmp_path) -> None:
    (tmp_path / "ranges.json").write_text("{}")
    code, _, _ = run(capsys, bad_models["nan_model"], "--data", images, *PRE, "-o", tmp_path)
    assert code == EXIT_ERROR
    assert [p.name for p in tmp_path.iterdir()] == ["ranges.json"]
    assert (tmp_path / "ranges.json").read_text() == "{}"


@pytest.mark.parametrize("argv", [
    ["calibrate", "model.onnx"],                            # --data is required
    ["calibrate", "model.onnx", "--data", "x", "--size", "abc"],
    ["calibrate", "model.onnx", "--data", "x", "--preset", "yolo"],
    ["calibrate", "model.onnx", "--data", "x", "--frobnicate"],
])
def test_usage_errors_exit_2(capsys, argv) -> None:
    assert main(argv) == EXIT_USAGE
    assert "usage: ptq" in capsys.readouterr().err


def test_help_texts(capsys) -> None:
    assert main(["calibrate", "--help"]) == EXIT_OK
    text = capsys.readouterr().out
    for word in ("--data", "--algo", "entropy", "minmax", "percentile", "mse", "all", "--percentile",
                 "--num-bins", "--batch-size", "--max-images", "--providers", "--seed", "--outdir",
                 "--trt-version", "--cache-header", "--preset", "imagenet", "efficientnet-lite", "--size",
                 "--resize", "--mean", "--std", "--layout", "--channel-order", "--strict", "--verbose",
                 "--quiet", "ranges.json", "calib.<algo>.cache", "default: 10.16.0", "99.99", "2048"):
        assert word in text, word
    assert main(["--help"]) == EXIT_OK
    assert "calibrate" in capsys.readouterr().out
