"""`ptq bench`: latency and throughput with trtexec's metric names, on any backend."""
from __future__ import annotations

import argparse

from ptq.cli.common import new_parser

DESCRIPTION = """\
Time models the way trtexec does and report trtexec's metrics: Throughput (qps),
Latency, Enqueue Time, H2D Latency, GPU Compute Time, D2H Latency (min, max, mean,
median, p90, p95, p99 in ms), Total Host Walltime and Total GPU Compute Time. Several
inputs are shown side by side, the first one as the anchor (e.g. FP32 vs INT8 vs mixed).

Sources (any mix):
  MODEL.onnx ...     ONNX Runtime, CPU (default) or CUDA with IOBinding (--backend cuda)
  --engine PLAN      TensorRT: its Python API when installed, else trtexec on PATH
  --parse LOG        a trtexec console log (its "Performance summary" block)
  --times JSON       trtexec --exportTimes records (warm-up queries dropped as trtexec does)

On CPU, H2D/D2H are 0 and "GPU Compute Time" is the session's compute time (names kept so
results line up with trtexec's). ONNX Runtime runs a TensorRT-style Q/DQ model (float bias,
no output Q) as Q/DQ + float kernels, so CPU INT8 timings say nothing about TensorRT INT8."""

EPILOG = """\
examples:
  ptq bench model.onnx model.int8.onnx --duration-s 3 --json bench.json
  ptq bench model.onnx --shapes input:8x3x224x224 --backend cuda
  ptq bench --parse fp32.log --parse int8.log
  ptq bench --engine model.plan --shapes input:32x3x224x224"""


def _shapes(text: str) -> dict[str, tuple[int, ...]]:
    out = {}
    for part in filter(None, text.split(",")):
        name, sep, dims = part.strip().rpartition(":")
        try:
            shape = tuple(int(d) for d in dims.split("x"))
        except ValueError:
            shape = ()
        if not sep or not name or not shape or min(shape) <= 0:
            raise argparse.ArgumentTypeError(f"expected name:AxBxC[,name2:...] as trtexec's "
                                             f"--shapes, got {part!r}")
        if name in out:
            raise argparse.ArgumentTypeError(f"input {name!r} is given twice in {text!r}")
        out[name] = shape
    return out


def add_parser(subparsers, name: str, summary: str) -> argparse.ArgumentParser:
    p = new_parser(subparsers, name, summary, DESCRIPTION, EPILOG)
    p.add_argument("models", nargs="*", metavar="MODEL.onnx", help="ONNX models to time")
    g = p.add_argument_group("sources")
    g.add_argument("--engine", action="append", default=[], metavar="PLAN",
                   help="a serialized TensorRT engine (repeatable)")
    g.add_argument("--parse", action="append", default=[], metavar="LOG",
                   help="a trtexec console log (repeatable)")
    g.add_argument("--times", action="append", default=[], metavar="JSON",
                   help="a trtexec --exportTimes file (repeatable)")
    g = p.add_argument_group("timing (trtexec's defaults)")
    g.add_argument("--shapes", type=_shapes, default={}, metavar="SPEC",
                   help="fixed shapes for dynamic inputs, trtexec style: input:1x3x224x224")
    g.add_argument("--warmup-ms", type=float, default=200.0, metavar="MS",
                   help="warm-up time before timing (default: 200)")
    g.add_argument("--duration-s", type=float, default=3.0, metavar="S",
                   help="time at least this long (default: 3)")
    g.add_argument("--iterations", type=int, default=10, metavar="N",
                   help="and at least this many queries (default: 10)")
    g = p.add_argument_group("ONNX Runtime")
    g.add_argument("--backend", choices=["cpu", "cuda"], default="cpu",
                   help="execution provider for MODEL.onnx (default: cpu)")
    g.add_argument("--optimization", choices=["disable", "basic", "extended", "all"],
                   default="all", help="graph optimization level (default: all, as deployed)")
    g.add_argument("--threads", type=int, default=None, metavar="N",
                   help="intra-op threads (default: ONNX Runtime's choice)")
    g = p.add_argument_group("output")
    g.add_argument("--stat", default="median",
                   choices=["min", "max", "mean", "median", "p90", "p95", "p99"],
                   help="statistic shown in the table (the JSON has all; default: median)")
    g.add_argument("--json", metavar="OUT", help="write every result as JSON")
    p.set_defaults(run=run)
    return p


# Beyond these a value is a typo, not a benchmark: a day of timing, an hour of warm-up, a
# million queries (whose per-query records alone take ~100 MB), more threads than any host.
MAX_DURATION_S, MAX_WARMUP_MS, MAX_ITERATIONS, MAX_THREADS = 86400.0, 3_600_000.0, 1_000_000, 1024


def _check_timing(args: argparse.Namespace) -> None:
    import math

    from ptq.errors import ConfigError

    where = (args.models or args.engine or args.parse or args.times)[0]
    for flag, value, top in (("--duration-s", args.duration_s, MAX_DURATION_S),
                             ("--warmup-ms", args.warmup_ms, MAX_WARMUP_MS)):
        if not math.isfinite(value) or value < 0 or value > top:
            raise ConfigError(f"{flag} must be between 0 and {top:g}, got {value:g}", path=where,
                              hint=f"e.g. {flag} {3 if flag == '--duration-s' else 200}")
    if not 1 <= args.iterations <= MAX_ITERATIONS:
        raise ConfigError(f"--iterations must be between 1 and {MAX_ITERATIONS}, got "
                          f"{args.iterations}", path=where, hint="e.g. --iterations 10")
    if args.threads is not None and not 1 <= args.threads <= MAX_THREADS:
        raise ConfigError(f"--threads must be between 1 and {MAX_THREADS}, got {args.threads}",
                          path=where, hint="leave it out for ONNX Runtime's choice")


def run(args: argparse.Namespace) -> int:
    import sys

    from ptq.cli.outputs import plan_outputs, write_outputs
    from ptq.perf import BenchConfig, parse_log, parse_times
    from ptq.perf.stats import render

    if not (args.models or args.engine or args.parse or args.times):
        print("ptq bench: error: nothing to benchmark (fix: give MODEL.onnx, --engine PLAN, "
              "--parse LOG or --times JSON)", file=sys.stderr)
        return 2
    _check_timing(args)
    plan_outputs({"--json": args.json}, [*args.models, *args.engine, *args.parse, *args.times])
    config = BenchConfig(args.warmup_ms, args.duration_s, args.iterations, args.shapes)
    results = [parse_log(p) for p in args.parse]
    results += [parse_times(p, warmup_ms=args.warmup_ms) for p in args.times]
    for plan in args.engine:
        _check_plan(plan)
    if args.models:
        from ptq.graph.model import graph_inputs, load_model
        from ptq.perf.ort import bench_ort, resolve_shapes
        for m in args.models:                   # every model checked before any is timed
            resolve_shapes(graph_inputs(load_model(m, load_weights=False)), args.shapes, m)
        for m in args.models:
            if args.quiet == 0:
                print(f"timing {m} ({args.backend}, {args.duration_s:g} s)...", flush=True)
            results.append(bench_ort(m, config, device=args.backend,
                                     optimization=args.optimization, threads=args.threads))
    for plan in args.engine:
        results.append(_bench_engine(plan, config))
    _dedupe_labels(results)
    if args.json:
        from ptq.atomic import write_json
        payload = {"config": config.__dict__ | {"shapes": {
            k: list(v) for k, v in config.shapes.items()}},
            "results": [r.to_dict() for r in results]}
        write_outputs([("--json", args.json, lambda p: write_json(p, payload))])
    if args.quiet == 0:
        print(render(results, args.stat))
        for r in results:
            for note in r.notes:
                print(f"  {r.label}: {note}")
    return 0


def _check_plan(plan: str) -> None:
    from pathlib import Path

    from ptq.errors import DataError

    p = Path(plan)
    if not p.is_file():
        raise DataError("engine file not found" if not p.is_dir() else "is a folder, not an "
                        "engine file", path=plan, hint="pass the file of trtexec --saveEngine")
    if not p.stat().st_size:
        raise DataError("the engine file is empty", path=plan,
                        hint="rebuild it with trtexec --saveEngine")
    if p.suffix.lower() == ".onnx":
        raise DataError("an .onnx file is a model, not a TensorRT engine", path=plan,
                        hint="pass it as MODEL.onnx (no --engine), or build an engine with "
                             "trtexec --onnx=... --saveEngine=...")


def _bench_engine(plan: str, config):
    from ptq.errors import BackendUnavailable
    from ptq.perf.trt import bench_tensorrt
    from ptq.perf.trtexec import run_trtexec

    try:
        return bench_tensorrt(plan, config)
    except BackendUnavailable as first:
        try:
            return run_trtexec(plan, config)
        except BackendUnavailable:
            raise first from None


def _dedupe_labels(results) -> None:
    seen: dict[str, int] = {}
    for r in results:
        k = seen.get(r.label, 0)
        seen[r.label] = k + 1
        if k:
            r.label = f"{r.label}#{k + 1}"
