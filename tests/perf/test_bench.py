"""`ptq bench`: trtexec's metrics from real trtexec output (tests/data/trt (copied from ../shared/fixtures/trt), see its
MANIFEST.md) and from ONNX Runtime CPU on the digits CNN. Expected values are read from the
files by this test's own regex / json, or are trtexec's printed summary itself."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from ptq.cli import main
from ptq.errors import BackendUnavailable, ConfigError
from ptq.perf import METRICS, BenchConfig, parse_log, parse_times, stats_of

FIX = Path(__file__).resolve().parents[1] / "data" / "trt"   # copied with MANIFEST.md
LOGS = sorted((FIX / "trtexec-logs").glob("*.log"))


def _summary_by_hand(text: str) -> dict:
    """The summary block, read with plain string splitting (not ptq's regex)."""
    block = text[text.rindex("=== Performance summary ==="):].splitlines()[1:12]
    out = {}
    for line in block:
        body = line.split("] ", 2)[-1]                 # drop "[date] [I] "
        if ": " not in body:
            continue
        name, rest = body.split(": ", 1)
        if " = " in rest:
            out[name] = {k.strip(): float(v.split()[0])
                         for k, v in (kv.split(" = ") for kv in rest.split(", "))}
        else:
            out[name] = float(rest.split()[0])
    return out


@pytest.mark.parametrize("log", LOGS, ids=lambda p: p.name)
def test_parse_log_matches_the_file(log: Path) -> None:
    by_hand = _summary_by_hand(log.read_text())
    res = parse_log(log)
    assert res.metrics["Throughput"] == by_hand["Throughput"]
    for name in ("Latency", "Enqueue Time", "H2D Latency", "GPU Compute Time", "D2H Latency",
                 "End-to-End Host Latency"):
        want = by_hand[name]
        got = res.metrics[name]
        assert got["min"] == want["min"] and got["max"] == want["max"]
        assert got["mean"] == want["mean"] and got["median"] == want["median"]
        assert got["p99"] == want["percentile(99%)"]
    for name in ("Total Host Walltime", "Total GPU Compute Time"):
        assert res.metrics[name] == by_hand[name]
    assert res.queries == int(re.search(r"Timing trace has (\d+) queries", log.read_text()).group(1))


def test_manifest_figures() -> None:
    """MANIFEST.md: FP32 166.041 qps (median 5.94946 ms), PTQ 321.422 (1.59741), QAT 324.544 (1.61377)."""
    got = {p.name.split("_")[1]: parse_log(p).metrics for p in LOGS}
    assert [(got[k]["Throughput"], got[k]["GPU Compute Time"]["median"]) for k in
            ("base", "ptq", "qat")] == [(166.041, 5.94946), (321.422, 1.59741), (324.544, 1.61377)]


def test_times_reproduce_trtexecs_own_summary() -> None:
    """The ResNet18 FP32 --exportTimes records against the summary trtexec printed for the same
    run (trex's profile.metadata.json: [min, max, mean, median, p99] in ms)."""
    d = FIX / "trex-resnet18-a100/fp32"
    meta = json.loads(next(d.glob("*.profile.metadata.json")).read_text())["performance_summary"]
    res = parse_times(next(d.glob("*.timing.json")))
    gpu = res.metrics["GPU Compute Time"]
    got = [gpu["min"], gpu["max"], gpu["mean"], gpu["median"], gpu["p99"]]
    # trtexec prints 6 significant digits
    assert got == pytest.approx(meta["GPU Compute Time"], rel=1e-5)
    # the records' ms values carry 2 decimals at t ~ 3000 ms: 1e-4 relative on a 3 s span
    assert res.metrics["Throughput"] == pytest.approx(meta["Throughput"], rel=1e-4)


def test_trtexec_percentile_rule() -> None:
    s = stats_of(range(1, 101))                       # 1..100 ms
    # p99: drop floor(0.01*100)=1 largest, take the largest left (99); p90 -> 90; p95 -> 95
    assert (s["p99"], s["p95"], s["p90"], s["median"], s["mean"]) == (99, 95, 90, 50.5, 50.5)


def test_ort_cpu_bench(digits_model_path: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "b.json"
    rc = main(["bench", str(digits_model_path), str(digits_model_path), "--shapes",
               "image:8x3x16x16", "--duration-s", "0.2", "--warmup-ms", "20",
               "--iterations", "5", "--json", str(out)])
    assert rc == 0
    data = json.loads(out.read_text())
    assert [r["label"] for r in data["results"]] == ["digits_cnn", "digits_cnn#2"]
    r = data["results"][0]
    assert set(r["metrics"]) == set(METRICS) and r["batch"] == 8 and r["queries"] >= 5
    m = r["metrics"]
    assert m["Total Host Walltime"] >= 0.2
    assert m["Throughput"] == pytest.approx(r["queries"] / m["Total Host Walltime"])
    assert m["H2D Latency"]["max"] == 0 and m["Latency"] == m["GPU Compute Time"]
    assert "speed vs digits_cnn" in capsys.readouterr().out


def test_dynamic_shape_needs_shapes(digits_model_path: Path, capsys) -> None:
    assert main(["bench", str(digits_model_path), "--duration-s", "0"]) == 1
    err = capsys.readouterr().err.strip()
    assert "dynamic shape" in err and "--shapes image:" in err and "\n" not in err


def test_cuda_ep_or_clean_skip(digits_model_path: Path) -> None:
    import onnxruntime as ort

    from ptq.perf.ort import bench_ort
    cfg = BenchConfig(10, 0.1, 3, {"image": (4, 3, 16, 16)})
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        with pytest.raises(BackendUnavailable, match="no CUDA execution provider"):
            bench_ort(digits_model_path, cfg, device="cuda")
        pytest.skip("no CUDA execution provider on this machine")
    res = bench_ort(digits_model_path, cfg, device="cuda")
    assert res.metrics["H2D Latency"]["max"] > 0 and res.queries >= 3


def test_tensorrt_not_installed(tmp_path: Path, capsys) -> None:
    try:
        import tensorrt  # noqa: F401
        pytest.skip("TensorRT is installed here")
    except ImportError:
        pass
    plan = tmp_path / "m.plan"
    plan.write_bytes(b"\0")
    assert main(["bench", "--engine", str(plan)]) == 1
    err = capsys.readouterr().err.strip()
    assert "TensorRT Python API is not installed" in err and "\n" not in err


@pytest.mark.parametrize("flag,content,needle", [
    ("--parse", "[I] nothing here\n", "no '=== Performance summary ===' block"),
    ("--times", "{bad", "not valid JSON"),
    ("--times", '[{"a": 1}]', "not a trtexec --exportTimes file"),
])
def test_bad_trtexec_files(tmp_path: Path, capsys, flag, content, needle) -> None:
    f = tmp_path / "x"
    f.write_text(content)
    assert main(["bench", flag, str(f), "--json", str(tmp_path / "o.json")]) == 1
    err = capsys.readouterr().err.strip()
    assert needle in err and "\n" not in err and not (tmp_path / "o.json").exists()


def test_bad_shapes_and_nothing_to_do(capsys) -> None:
    assert main(["bench", "--shapes", "image:8xq"]) == 2
    assert main(["bench"]) == 2  # a usage error: no input at all
    assert "nothing to benchmark" in capsys.readouterr().err


def test_unknown_shapes_name(digits_model_path: Path) -> None:
    from ptq.perf.ort import bench_ort
    with pytest.raises(ConfigError, match="unknown input"):
        bench_ort(digits_model_path, BenchConfig(0, 0, 1, {"nope": (1, 3, 16, 16)}))
