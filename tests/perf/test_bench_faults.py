"""`ptq bench` on bad input (issue 8's battery): absurd timing options, --shapes that do not
fit the model, broken trtexec logs and --exportTimes files, unwritable --json, Ctrl-C. Each
must end in one line `ptq bench: error: <file>: <problem> (fix: <hint>)` with exit 1 (2 for
usage), in well under a second of timing, and never replace a previous --json."""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ptq.cli import main

LOGS = Path(__file__).resolve().parents[1] / "data" / "trt" / "trtexec-logs"
LOG = LOGS / "mobilenetv2_ptq_int8.trtexec.log"
ONE_LINE = re.compile(r"^ptq bench: error: .+: .+ \(fix: .+\)$")
FAST = ["--duration-s", "0", "--warmup-ms", "0", "--iterations", "2"]
TIME_KEYS = ("startEnqMs", "endEnqMs", "startComputeMs", "endComputeMs", "h2dMs", "computeMs",
             "d2hMs")


def _run(capsys, *args) -> tuple[int, str, str]:
    rc = main(["bench", *map(str, args)])
    out, err = capsys.readouterr()
    return rc, out, err


def _assert_one_line(rc: int, err: str, names: str) -> None:
    lines = err.strip().splitlines()
    assert rc == 1 and len(lines) == 1 and ONE_LINE.match(lines[0]), err
    assert names in lines[0], err


@pytest.mark.parametrize("flag,value", [("--duration-s", "nan"), ("--duration-s", "inf"),
                                        ("--duration-s", "-1"), ("--duration-s", "1e12"),
                                        ("--warmup-ms", "inf"), ("--warmup-ms", "-5"),
                                        ("--iterations", "0"), ("--iterations", "-3"),
                                        ("--iterations", "99999999999"), ("--threads", "0"),
                                        ("--threads", "-1"), ("--threads", "100000")])
def test_absurd_timing_options(digits_model_path, tmp_path, capsys, flag, value) -> None:
    args = dict(zip(FAST[::2], FAST[1::2])) | {flag: value}
    start = time.perf_counter()
    rc, _, err = _run(capsys, digits_model_path, "--shapes", "image:1x3x16x16",
                      *[x for kv in args.items() for x in kv], "--json", tmp_path / "b.json")
    _assert_one_line(rc, err, flag)
    assert time.perf_counter() - start < 10 and not (tmp_path / "b.json").exists()


@pytest.mark.parametrize("shapes,says", [("image:1x3x16", "model's is"),
                                         ("image:1x1x16x16", "model's is"),
                                         ("image:10000000x3x16x16", "GiB"),
                                         ("image:99999999999999999999x3x16x16", "GiB"),
                                         ("ids:2x4", "unknown input"),
                                         (None, "dynamic shape")])
def test_shapes_that_do_not_fit(digits_model_path, tmp_path, capsys, shapes, says) -> None:
    prev = tmp_path / "b.json"
    prev.write_text("previous")
    rc, _, err = _run(capsys, digits_model_path, digits_model_path, *FAST, "--json", prev,
                      *(["--shapes", shapes] if shapes else []))
    _assert_one_line(rc, err, says)
    assert prev.read_text() == "previous"


def test_onnx_runtime_refusal_is_one_line(tmp_path, capsys) -> None:
    """One channel passes the shape check (the channel dim is made dynamic here) but not the
    3-channel conv; ORT's own message comes back on one line, naming the model."""
    import onnx

    from zoo import build_digits_cnn

    path = tmp_path / "digits.onnx"
    m = build_digits_cnn()
    for d in m.graph.input[0].type.tensor_type.shape.dim[1:]:
        d.dim_param = "S"
    onnx.save(m, path)
    rc, _, err = _run(capsys, path, *FAST, "--shapes", "image:1x1x16x16")
    _assert_one_line(rc, err, "digits.onnx")


def _times(edit=None, n=12) -> list[dict]:
    recs = [{"startEnqMs": 300.0 + i, "endEnqMs": 300.1 + i, "startComputeMs": 300.2 + i,
             "endComputeMs": 300.9 + i, "h2dMs": 0.1, "computeMs": 0.7, "d2hMs": 0.1}
            for i in range(n)]
    return [edit(dict(r)) if edit else r for r in recs]


BAD_TIMES = {
    "strings": json.dumps(_times(lambda r: {k: str(v) for k, v in r.items()})),
    "nulls": json.dumps(_times(lambda r: {k: None for k in r})),
    "negative-compute": json.dumps(_times(lambda r: {**r, "computeMs": -0.5})),
    "nan": json.dumps(_times(lambda r: {**r, "computeMs": float("nan")})),
    "end-before-start": json.dumps(_times(lambda r: {**r, "endEnqMs": 0.0})),
    "empty": "",
    "truncated": json.dumps(_times())[:200],
}


@pytest.mark.parametrize("case", sorted(BAD_TIMES))
def test_bad_times_file(tmp_path, capsys, case) -> None:
    src = tmp_path / "bad.times.json"
    src.write_text(BAD_TIMES[case])
    rc, _, err = _run(capsys, "--times", src)
    _assert_one_line(rc, err, "bad.times.json")


def test_times_in_any_order_give_the_same_result(tmp_path) -> None:
    from ptq.perf import parse_times

    (tmp_path / "a.json").write_text(json.dumps(_times()))
    (tmp_path / "b.json").write_text(json.dumps(_times()[::-1]))
    a, b = parse_times(tmp_path / "a.json"), parse_times(tmp_path / "b.json")
    assert a.metrics == b.metrics and a.metrics["Throughput"] > 0


def _log_cases() -> dict[str, bytes]:
    log = LOG.read_text()
    i = log.find("=== Performance summary ===")
    return {
        "cut-before-summary": log[:i - 10].encode(),
        "cut-in-summary": log[:i + 200].encode(),
        "failed-build": b"&&&& RUNNING TensorRT.trtexec [TensorRT v8205] # trtexec --onnx=m.onnx\n"
                        b"[E] Error[4]: Network has dynamic or shape inputs, but no optimization "
                        b"profile has been defined.\n[E] Building engine failed\n"
                        b"&&&& FAILED TensorRT.trtexec [TensorRT v8205] # trtexec --onnx=m.onnx\n",
        "negative-throughput": log.replace("Throughput: 321.422 qps",
                                           "Throughput: -5 qps").encode(),
        "other-language": log[i:].replace("Throughput", "Débit").encode(),
        "binary": b"\x00\x01\x02" * 500,
        "empty": b"",
    }


@pytest.mark.parametrize("case,says", [("cut-before-summary", "cut short"),
                                       ("cut-in-summary", "cut short"),
                                       ("failed-build", "Building engine failed"),
                                       ("negative-throughput", "impossible"),
                                       ("other-language", "English"), ("binary", "binary"),
                                       ("empty", "empty")])
def test_bad_trtexec_log(tmp_path, capsys, case, says) -> None:
    src = tmp_path / "bad.log"
    src.write_bytes(_log_cases()[case])
    prev = tmp_path / "b.json"
    prev.write_text("previous")
    rc, _, err = _run(capsys, "--parse", LOG, "--parse", src, "--json", prev)
    _assert_one_line(rc, err, "bad.log")
    assert says in err and prev.read_text() == "previous"


def test_utf16_log_reads_like_the_utf8_one(tmp_path) -> None:
    """PowerShell's `trtexec ... > log.txt` writes UTF-16 with a BOM."""
    from ptq.perf import parse_log

    src = tmp_path / "ps.log"
    src.write_bytes(LOG.read_text().encode("utf-16"))
    assert parse_log(src).metrics == parse_log(LOG).metrics


@pytest.mark.parametrize("case", ["missing", "onnx", "empty"])
def test_bad_engine_file(digits_model_path, tmp_path, capsys, case) -> None:
    path = {"missing": tmp_path / "nope.plan", "onnx": digits_model_path,
            "empty": tmp_path / "empty.plan"}[case]
    (tmp_path / "empty.plan").write_bytes(b"")
    rc, _, err = _run(capsys, "--engine", path)
    _assert_one_line(rc, err, path.name)
    assert "not installed" not in err


@pytest.mark.parametrize("dest", ["{t}/afile/b.json", "{t}/adir", "/proc/ptq.json", "{in}"])
def test_unwritable_or_input_json(tmp_path, capsys, dest) -> None:
    (tmp_path / "afile").write_text("keep")
    (tmp_path / "adir").mkdir()
    log = tmp_path / "in.log"
    log.write_bytes(LOG.read_bytes())
    rc, _, err = _run(capsys, "--parse", log, "--json", dest.format(t=tmp_path, **{"in": log}))
    _assert_one_line(rc, err, "--json")
    assert log.read_bytes() == LOG.read_bytes()


def test_an_input_given_twice_in_shapes_is_usage(capsys) -> None:
    rc, _, err = _run(capsys, "--parse", LOG, "--shapes", "image:1x3x16x16,image:2x3x16x16")
    assert rc == 2 and "given twice" in err


def test_nothing_to_benchmark_is_usage(capsys) -> None:
    rc, _, err = _run(capsys)
    assert rc == 2 and err.strip().startswith("ptq bench: error: nothing to benchmark")


def test_ctrl_c_exits_130_and_keeps_the_previous_json(digits_model_path, tmp_path) -> None:
    prev = tmp_path / "b.json"
    prev.write_text("previous")
    proc = subprocess.Popen([sys.executable, "-m", "ptq", "bench", str(digits_model_path),
                             "--shapes", "image:1x3x16x16", "--duration-s", "60", "--json",
                             str(prev)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    assert proc.stdout.readline().startswith("timing ")       # the timing loop has begun
    time.sleep(0.5)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, err
    assert "Traceback" not in err and prev.read_text() == "previous"
    assert not [p for p in tmp_path.iterdir() if p.name != "b.json"]
