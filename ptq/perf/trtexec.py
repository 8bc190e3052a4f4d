"""trtexec's own output read into `BenchResult`, and trtexec run when it is installed.

- `parse_log`: the console log's `=== Performance summary ===` block (TensorRT 8.x prints
  percentile(99%) only, newer trtexec 90/95/99; both are read, and `End-to-End Host
  Latency` when present).
- `parse_times`: `--exportTimes` JSON, one record per query. Queries that started in the
  warm-up (first `warmup_ms`, trtexec's default 200 ms) are dropped as trtexec does; on
  trex's ResNet18 run this reproduces trtexec's printed GPU Compute Time and Throughput.
"""
from __future__ import annotations

import json
import math
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

from ptq.errors import BackendUnavailable, DataError, exception_line
from ptq.perf.stats import BenchConfig, BenchResult

_NUM = r"([-+]?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?)"
_STAT_RE = re.compile(r"(min|max|mean|median|percentile\((\d+(?:\.\d+)?)%\))\s*=\s*"
                      + _NUM + r"\s*ms")
_LINE_RE = re.compile(r"\]\s*(?:\[I\]\s*)?([A-Za-z][A-Za-z0-9 \-]*?):\s*(.*)$")


class TrtexecOutputError(DataError):
    """A trtexec log or times file without the data ptq needs."""


def parse_log(path: str | Path, label: str | None = None) -> BenchResult:
    path = Path(path)
    text = _read_text(path, "trtexec log")
    start = text.rfind("=== Performance summary ===")
    if start < 0:
        failed = re.search(r"^&&&& FAILED", text, re.MULTILINE)
        if failed:
            errors = [ln.strip() for ln in text.splitlines() if "[E]" in ln]
            why = f": {errors[-1][:160]}" if errors else ""
            raise TrtexecOutputError(f"this trtexec run failed, it timed nothing{why}",
                                     path=path, hint="fix the build error and rerun trtexec")
        if re.search(r"^&&&& RUNNING", text, re.MULTILINE):
            raise TrtexecOutputError("the log ends before trtexec's performance summary (the "
                                     "run was cut short)", path=path,
                                     hint="let trtexec finish ('&&&& PASSED') and pass the "
                                          "whole log")
        raise TrtexecOutputError("no '=== Performance summary ===' block (not an English "
                                 "trtexec console log)", path=path,
                                 hint="pass the console output of a trtexec run that timed "
                                      "inference (not --skipInference)")
    metrics: dict = {}
    for line in text[start:].splitlines()[1:40]:
        m = _LINE_RE.search(line)
        if not m:
            continue
        name, rest = m.group(1).strip(), m.group(2)
        if name == "Throughput":
            q = re.match(_NUM + r"\s*qps", rest.strip())
            if q:
                metrics[name] = float(q.group(1))
        elif name in ("Total Host Walltime", "Total GPU Compute Time"):
            s = re.match(_NUM + r"\s*s\b", rest.strip())
            if s:
                metrics[name] = float(s.group(1))
        else:
            stats = {}
            for sm in _STAT_RE.finditer(rest):
                key = sm.group(1) if sm.group(2) is None else f"p{float(sm.group(2)):g}"
                stats[key] = float(sm.group(3))
            if stats:
                metrics[name] = stats
    if "Throughput" not in metrics or "GPU Compute Time" not in metrics:
        raise TrtexecOutputError("the performance summary has no Throughput / GPU Compute "
                                 "Time lines (the log was cut short, edited, or is not trtexec's English "
                                 "output)", path=path,
                                 hint="pass the whole, unedited trtexec log")
    for name, v in metrics.items():
        values = v.values() if isinstance(v, dict) else [v]
        if any(x < 0 for x in values) or (name == "Throughput" and v <= 0):
            raise TrtexecOutputError(f"the performance summary has an impossible {name} "
                                     f"({v})", path=path, hint="pass an unedited trtexec log")
    trace = re.search(r"Timing trace has (\d+) queries over", text)
    cmd = re.search(r"&&&& (?:RUNNING|PASSED) TensorRT\.trtexec.*?# (trtexec .*)", text)
    batch = _batch_from_shapes(cmd.group(1)) if cmd else None
    notes = [cmd.group(1).strip()] if cmd else []
    return BenchResult(label or path.name.split(".")[0], "trtexec-log", metrics,
                       queries=int(trace.group(1)) if trace else None, batch=batch,
                       source=str(path), notes=notes)


def _read_text(path: Path, what: str) -> str:
    """A trtexec output file as text: UTF-8, or UTF-16 with a BOM (PowerShell's `>`)."""
    if path.is_dir():
        raise TrtexecOutputError(f"is a folder, not a {what}", path=path,
                                 hint="pass the file trtexec wrote")
    if not path.is_file():
        raise TrtexecOutputError(f"{what} not found", path=path, hint="check the path")
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise TrtexecOutputError(f"cannot be read ({exc.strerror or exc})", path=path,
                                 hint="check the file's permissions") from None
    if not raw.strip():
        raise TrtexecOutputError(f"the {what} is empty", path=path,
                                 hint="rerun trtexec and let it finish")
    if raw.startswith((b"\xff\xfe", b"\xfe\xff")):
        return raw.decode("utf-16", errors="replace")
    if b"\x00" in raw[:4096]:
        raise TrtexecOutputError(f"a binary file, not a {what}", path=path,
                                 hint="pass the text trtexec wrote")
    return raw.decode("utf-8", errors="replace")


def _no_constant(name: str):
    raise ValueError(f"{name} is not a valid time")


def _batch_from_shapes(cmd: str) -> int | None:
    m = re.search(r"--shapes=\S*?:(\d+)x", cmd)
    return int(m.group(1)) if m else None


def parse_times(path: str | Path, label: str | None = None, *,
                warmup_ms: float = 200.0) -> BenchResult:
    path = Path(path)
    text = _read_text(path, "times file")
    try:
        records = json.loads(text, parse_constant=_no_constant)
    except (ValueError, RecursionError) as exc:
        why = exc.msg if isinstance(exc, json.JSONDecodeError) else exception_line(exc)
        raise TrtexecOutputError(f"not valid JSON ({why}; cut short or edited?)", path=path,
                                 hint="pass the file of trtexec --exportTimes") from None
    need = ("startEnqMs", "endEnqMs", "startComputeMs", "endComputeMs", "h2dMs", "computeMs",
            "d2hMs")
    if not isinstance(records, list) or not records or not all(
            isinstance(r, dict) and all(k in r for k in need) for r in records):
        raise TrtexecOutputError("not a trtexec --exportTimes file (expected a list of "
                                 "{startEnqMs, computeMs, ...} records)", path=path,
                                 hint="pass the file of trtexec --exportTimes")
    for i, r in enumerate(records):
        bad = [k for k in need if isinstance(r[k], bool) or not isinstance(r[k], (int, float))
               or not math.isfinite(r[k])]
        bad += [k for k in ("h2dMs", "computeMs", "d2hMs") if k not in bad and r[k] < 0]
        if not bad and (r["endEnqMs"] < r["startEnqMs"] or
                        r["endComputeMs"] < r["startComputeMs"]):
            bad = ["end before start"]
        if bad:
            raise TrtexecOutputError(f"record {i} has impossible values ({', '.join(bad)}: "
                                     "times are finite numbers >= 0)", path=path,
                                     hint="pass the file of trtexec --exportTimes, unedited")
    records = sorted(records, key=lambda r: r["startEnqMs"])
    kept = [r for r in records if r["startEnqMs"] >= warmup_ms] or records
    span_s = (kept[-1]["endComputeMs"] - kept[0]["startComputeMs"]) / 1000.0
    end = kept[-1].get("endD2hMs", kept[-1]["endComputeMs"])
    res = BenchResult.from_queries(
        label or path.name.split(".")[0], "trtexec-times",
        enqueue=[r["endEnqMs"] - r["startEnqMs"] for r in kept], h2d=[r["h2dMs"] for r in kept],
        compute=[r["computeMs"] for r in kept], d2h=[r["d2hMs"] for r in kept],
        walltime_s=(end - kept[0]["startEnqMs"]) / 1000.0, source=str(path))
    res.metrics["Throughput"] = len(kept) / span_s if span_s > 0 else None
    res.notes.append(f"{len(records) - len(kept)} warm-up queries (first {warmup_ms:g} ms) "
                     "dropped")
    return res


def run_trtexec(plan: str | Path, config: BenchConfig, label: str | None = None) -> BenchResult:
    """Time a serialized engine with the trtexec binary on PATH."""
    exe = shutil.which("trtexec")
    if exe is None:
        raise BackendUnavailable("trtexec is not on PATH", path=plan,
                                 hint="install TensorRT (needs an NVIDIA GPU), or pass a "
                                      "trtexec log with --parse")
    cmd = [exe, f"--loadEngine={plan}", f"--warmUp={config.warmup_ms:g}",
           f"--duration={config.duration_s:g}", f"--iterations={config.iterations}"]
    if config.shapes:
        cmd.append("--shapes=" + ",".join(f"{k}:{'x'.join(map(str, v))}"
                                           for k, v in config.shapes.items()))
    with tempfile.TemporaryDirectory(prefix="ptq-trtexec-") as tmp:
        log = Path(tmp) / "trtexec.log"
        proc = subprocess.run(cmd, capture_output=True, text=True)
        log.write_text(proc.stdout + proc.stderr)
        if proc.returncode != 0:
            last = (proc.stdout + proc.stderr).strip().splitlines()[-1:] or ["no output"]
            raise BackendUnavailable(f"trtexec failed ({last[0][:160]})", path=plan,
                                     hint="run the command by hand: " + " ".join(cmd))
        res = parse_log(log, label or Path(plan).stem)
    res.backend, res.source = "trtexec", str(plan)
    return res
