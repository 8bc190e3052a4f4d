"""`ptq report`: one self-contained HTML review page from the artifacts of the other steps."""
from __future__ import annotations

import argparse
from pathlib import Path

from ptq.cli.common import new_parser

DESCRIPTION = """\
Write one HTML file that a reviewer can open offline (plots inline, no network) to
judge whether an INT8 model is fit to ship:

  summary        model, images used, algorithm, FP32 vs INT8 vs mixed-precision
                 figures (from sensitivity.json), each layer's final precision and
                 the reason for each pin (from the quantized model)
  ranges         min / max / every algorithm's amax per layer, where they disagree
  histograms     |x| histograms of the tensors that matter, with each threshold
  sensitivity    top-k bar chart and the full sortable table of layers
  engine         with --engine / --bench: the TensorRT engine's precisions, reformat
                 layers, slowest layers, graph, FP16-vs-INT8 diff and a speed chart
  warnings       zero / floored ranges, NaN/Inf, saturated tensors, layers left FP32

Only --ranges is required; the sections that need the other files say so. Files
from different models (checked by the model's sha256 and node names) are refused."""

EPILOG = """\
examples:
  ptq report --ranges out/ranges.json -o out/report.html
  ptq report --ranges out/ranges.json --sensitivity out/sensitivity.json \\
             --model out/model.int8.onnx -o out/report.html"""


def add_parser(subparsers, name: str, summary: str) -> argparse.ArgumentParser:
    p = new_parser(subparsers, name, summary, DESCRIPTION, EPILOG)
    g = p.add_argument_group("inputs")
    g.add_argument("--ranges", required=True, metavar="JSON",
                   help="ranges.json written by `ptq calibrate`")
    g.add_argument("--sensitivity", default=None, metavar="JSON",
                   help="sensitivity.json written by `ptq sensitivity` (optional)")
    g.add_argument("--model", default=None, metavar="ONNX",
                   help="the quantized model written by `ptq quantize` or `ptq sensitivity "
                        "--auto` (optional): each layer's precision and pin reasons")
    g.add_argument("--algo", default=None, metavar="ALGO",
                   help="the algorithm whose amax the report treats as chosen (default: the "
                        "one the model / sensitivity run used, else entropy)")
    g = p.add_argument_group("TensorRT engine section (see ptq inspect / ptq bench)")
    g.add_argument("--engine", default=None, metavar="JSON",
                   help="engine layer JSON (trtexec --exportLayerInfo): precisions, reformat "
                        "layers, slowest layers, the engine graph")
    g.add_argument("--engine-profile", default=None, metavar="JSON",
                   help="its per-layer times (trtexec --exportProfile)")
    g.add_argument("--engine-compare", default=None, metavar="JSON",
                   help="a second engine's layer JSON (e.g. FP16) to compare layer by layer")
    g.add_argument("--engine-compare-profile", default=None, metavar="JSON",
                   help="the second engine's per-layer times")
    g.add_argument("--bench", default=None, metavar="JSON",
                   help="`ptq bench --json` output: throughput chart, FP32 vs INT8 vs mixed")
    g = p.add_argument_group("output")
    g.add_argument("-o", "--output", default=None, metavar="HTML",
                   help="output file, or a folder for report.html (default: report.html next "
                        "to the ranges file)")
    p.set_defaults(run=run)
    return p


def run(args: argparse.Namespace) -> int:
    from ptq.reports import write_report

    out = Path(args.output) if args.output else Path(args.ranges).parent / "report.html"
    result = write_report(out, args.ranges, args.sensitivity, args.model, algo=args.algo,
                          extra=_engine_sections(args))
    if args.quiet == 0:
        print(f"wrote {result.path} ({result.bytes / 1024:.0f} KB, {result.histograms} highlighted "
              f"histograms, {result.warnings} warning(s)) in {result.seconds:.1f} s")
    return 0


def _engine_sections(args: argparse.Namespace) -> list:
    if not (args.engine or args.bench):
        return []
    from ptq.reports.engine import engine_section, load_bench

    res = None
    if args.engine:
        from ptq.engine.report import inspect_engine
        res = inspect_engine(args.engine, profile=args.engine_profile, onnx_path=args.model,
                             compare=args.engine_compare,
                             compare_profile=args.engine_compare_profile)
    return [engine_section(res, load_bench(args.bench) if args.bench else None)]
