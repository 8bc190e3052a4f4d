"""`ptq quantize`: ranges (or a TensorRT cache) -> QDQ + Cast-typed ONNX, accuracy, trtexec lines."""
from __future__ import annotations

import argparse
import math
from dataclasses import fields, replace
from pathlib import Path

from ptq.atomic import check_writable, encode_text, replace_set
from ptq.cache import read_cache, version_major
from ptq.calibrators import DEFAULT_METHOD
from ptq.calibration import CalibrateConfig, PreprocessOptions, open_model_data
from ptq.cli.common import (add_data_args, add_runtime_args, new_parser, positive,
                            preprocess_options, progress_bar)
from ptq.datasets import fixed_batch
from ptq.errors import ConfigError, DataError
from ptq.graph.model import graph_inputs, load_model
from ptq.graph.rules import DEFAULT_OP_TYPES
from ptq.evaluate import accuracy_lines, accuracy_report
from ptq.output_kinds import parse_spec_override
from ptq.quantization import (Pin, Precision, QuantizeConfig, match_nodes, quantize_with_summary,
                              save_model)
from ptq.trtexec import commands_text, shapes_for, trt_commands
from ptq.table import CalibrationTable

DESCRIPTION = f"""\
Write an explicitly quantized ONNX model: QuantizeLinear/DequantizeLinear pairs placed
as TensorRT recommends (weighted-op inputs with per-channel weights, residual Add
inputs, pooling inputs; never weighted-op outputs), symmetric INT8 with explicit
zero points, scales from ranges.json (--algo, default auto) or a TensorRT calibration
cache. With auto ranges the FP32 biases of Conv/Gemm layers are also corrected for the
mean output shift INT8 weight rounding causes (listed in the model's metadata).
TensorRT 11 accepts only this form of INT8 (no calibrators, no --int8 flag).

--fp16 nodes become FP16 islands the TensorRT 11 way (Cast nodes + FP16 weights; the
graph's inputs and outputs stay FP32); --fp32 nodes keep FP32 with no Q/DQ.
Patterns match node names exactly or as a full regular expression ("conv1" never
matches "conv10"); a pattern matching nothing is an error listing near names.

Then both models run in ONNX Runtime on the calibration images (or --eval) and the
cosine, max-abs error and top-1 agreement (on the class axis; map IoU and text-box
agreement for probability maps) are printed per output, the worst named, with the trtexec command
lines (also saved next to the model as <name>.trtexec.txt).
Default op types: {' '.join(DEFAULT_OP_TYPES)}."""

EPILOG = """\
examples:
  ptq quantize model.onnx --ranges out/ranges.json -o out/model.int8.onnx   # auto ranges
  ptq quantize model.onnx --cache out/calib.entropy.cache -o model.int8.onnx --eval val/
  ptq quantize model.onnx --ranges out/ranges.json --fp16 'blocks\\.1[45]\\..*' --fp32 fc"""


def add_parser(subparsers, name: str, summary: str) -> argparse.ArgumentParser:
    p = new_parser(subparsers, name, summary, DESCRIPTION, EPILOG)
    p.add_argument("model", help="FP32 ONNX model")
    g = p.add_argument_group("ranges (one of)")
    src = g.add_mutually_exclusive_group(required=True)
    src.add_argument("--ranges", metavar="JSON", help="ranges.json from `ptq calibrate`")
    src.add_argument("--cache", metavar="FILE", help="TensorRT calibration cache (scales)")
    g.add_argument("--algo", default=None, help="which algorithm's ranges to use from ranges.json "
                                               f"(default: {DEFAULT_METHOD.value})")
    g = p.add_argument_group("placement and precision")
    g.add_argument("--fp16", nargs="+", default=[], metavar="PATTERN",
                   help="run matching nodes in FP16 (Cast-typed island)")
    g.add_argument("--fp32", "--exclude", dest="fp32", nargs="+", default=[], metavar="PATTERN",
                   help="keep matching nodes FP32, without Q/DQ")
    g.add_argument("--op-types", nargs="+", default=None, metavar="OP",
                   help="op types to quantize (default: the rules' default set)")
    g.add_argument("--per-tensor-weights", action="store_true",
                   help="one scale per weight tensor instead of per output channel")
    g = p.add_argument_group("evaluation")
    g.add_argument("--eval", metavar="DIR", default=None,
                   help="images (or .npy/.npz) to measure accuracy on (default: the calibration "
                        "images named in ranges.json)")
    g.add_argument("--no-eval", action="store_true", help="skip the accuracy measurement")
    g.add_argument("--output-kind", dest="output_kind", nargs="+", default=(),
                   metavar="NAME=KIND[:AXIS]",
                   help="how to read an output when its shape misleads (as `ptq sensitivity "
                        "--output-kind`): classes|sequence|dense[:class axis], map[:threshold], "
                        "detection[:attribute axis], tensor")
    add_data_args(p, required=False)
    p.set_defaults(preset=None)  # None = the preprocessing recorded in ranges.json
    add_runtime_args(p)
    g = p.add_argument_group("output")
    g.add_argument("-o", "--output", default=None, metavar="ONNX",
                   help="quantized model path (default: <model>.int8.onnx next to the model)")
    g.add_argument("--shapes", default=None, metavar="NAME:DIMS[,...]",
                   help="optimization profile of dynamic inputs for the trtexec lines: "
                        "x:1x3x640x640 (fixed) or x:1x3x320x320/4x3x640x640/8x3x960x960 "
                        "(min/opt/max; default: the calibration size, batch 1..its batch size)")
    g.add_argument("--trt-version", default="all", metavar="V",
                   help="print the trtexec line for TensorRT 11, 10 (or 8.6, 10.3.0, ...) or all "
                        "(default: all)")
    p.set_defaults(run=run)
    return p


def run(args: argparse.Namespace) -> int:
    for flag in ("batch_size", "max_images"):
        positive(flag.replace("_", "-"), getattr(args, flag))
    if args.cache and args.algo:
        raise ConfigError("--algo selects from ranges.json; a cache holds one algorithm",
                          hint="drop --algo, or pass --ranges")
    versions = _versions(args.trt_version)
    table = CalibrationTable.load(args.ranges) if args.ranges else None
    if args.cache:
        read_cache(args.cache)  # fail on a bad cache before anything else
    model = load_model(args.model)
    pins = [Pin(n, Precision.FP16, f"--fp16 {p}") for p in args.fp16 for n in match_nodes(model, [p])]
    config = QuantizeConfig(algo=args.algo or DEFAULT_METHOD.value,
                            op_types=tuple(args.op_types) if args.op_types else None,
                            per_channel_weights=not args.per_tensor_weights,
                            exclude=tuple(args.fp32))
    output = Path(args.output) if args.output else Path(args.model).with_suffix(".int8.onnx")
    if output.resolve() == Path(args.model).resolve():
        raise ConfigError("the output would overwrite the input model", path=output,
                          hint="pass another -o path")
    check_writable(output.parent)  # fail now, not after quantizing and evaluating
    source, why = (None, "--no-eval") if args.no_eval else _eval_source(args, model, table)
    specs = dict(parse_spec_override(t) for t in args.output_kind)
    unknown = set(specs) - {o.name for o in model.graph.output}
    if unknown:
        raise ConfigError(f"--output-kind names {sorted(unknown)}, not outputs of the model",
                          path=args.model,
                          hint=f"outputs: {', '.join(o.name for o in model.graph.output)}")
    result = quantize_with_summary(args.model, args.ranges or args.cache, pins=pins, config=config)
    cache = Path(args.cache) if args.cache else _cache_next_to(args.ranges, config.algo)
    recorded = table.data if table is not None else {}
    shapes, shape_note = shapes_for(graph_inputs(model), args.shapes,
                                    recorded.get("preprocessing"), recorded.get("batch_size"))
    commands = trt_commands(output, cache_path=cache, pins=result.summary.pins,
                            fp32_model=args.model, shapes=shapes)
    text = commands_text(commands, versions, cache) + (f"{shape_note}\n" if shape_note else "")
    accuracy = None
    if source is not None and args.quiet == 0:  # everything is measured before anything is written
        bs = fixed_batch(graph_inputs(model)) or args.batch_size or 16
        with progress_bar(args, len(source), "evaluating") as update:
            accuracy = accuracy_report(args.model, result.model, source.batches(bs),
                                       providers=args.providers, optimization="disable",
                                       progress=update, specs=specs)
        _check_finite(accuracy.outputs, source)
    txt = output.with_suffix(".trtexec.txt")
    replace_set(output.parent, {output.name: lambda path: save_model(result.model, path),
                                txt.name: encode_text(text)})  # the model and its lines as one set
    if args.quiet == 0:
        _print_summary(result.summary, output, txt)
        _print_accuracy(accuracy, source, why)
        print(text, end="")
    return 0


def _check_finite(outputs: dict[str, dict[str, float]], source) -> None:
    """NaN/Inf scores mean NaN/Inf outputs (usually NaN/Inf in the data): an error, not a score."""
    bad = [f"{metric} {value}" + (f" [{name}]" if len(outputs) > 1 else "")
           for name, metrics in outputs.items() for metric, value in metrics.items()
           if not math.isfinite(value)]
    if bad:
        raise DataError(f"the evaluation gives non-finite scores ({', '.join(bad[:4])}): the FP32 "
                        "or quantized outputs contain NaN/Inf", path=source.describe().get("source"),
                        hint="check the evaluation data for NaN/Inf values, or pass --no-eval")


def _versions(spec: str) -> tuple[str, ...]:
    if spec == "all":
        return ("trt11", "trt10")
    try:
        major = version_major(spec)
    except ConfigError:
        raise ConfigError(f"bad --trt-version {spec!r}",
                          hint="use 11, 10, 10.3.0, 8.6 or all") from None
    return ("trt11",) if major >= 11 else ("trt10",)


def _eval_source(args: argparse.Namespace, model, table: CalibrationTable | None):
    """(data source, or None and why), opened and validated before anything is written.
    Without --eval: the calibration data recorded in ranges.json, same preprocessing/subset."""
    if args.eval and args.data:
        raise ConfigError("--eval and --data name the same thing", hint="pass only --eval")
    recorded = table.data if table is not None else {}
    data = args.eval or args.data
    if data is None:
        data = recorded.get("source")
        if data is None or recorded.get("kind") == "iterable":
            return None, "no evaluation data on disk; pass --eval DIR"
        if not Path(data).exists():
            return None, f"the calibration data {data} is gone; pass --eval DIR"
    same = data == recorded.get("source") and args.max_images is None
    config = CalibrateConfig(
        preprocess=_preprocess(args, recorded.get("preprocessing")), strict=args.strict,
        max_images=recorded.get("max_images") if same else args.max_images,
        seed=recorded.get("seed", 0) if same else args.seed)
    return open_model_data(Path(args.model), model, data, config), ""


def _preprocess(args: argparse.Namespace, recorded: dict | None) -> PreprocessOptions:
    """The flags when any is given, else what ranges.json recorded, else the imagenet preset."""
    opts = preprocess_options(args)
    if any(getattr(opts, f.name) is not None for f in fields(opts)):
        return opts if opts.preset else replace(opts, preset="imagenet")
    if recorded:
        names = [f.name for f in fields(PreprocessOptions)]
        return PreprocessOptions(**{k: tuple(v) if isinstance(v, list) else v
                                    for k, v in recorded.items() if k in names})
    return replace(opts, preset="imagenet")


def _cache_next_to(ranges: str | None, algo: str) -> Path | None:
    """The calib.<algo>.cache `ptq calibrate` wrote beside ranges.json, if it is there."""
    if ranges is None:
        return None
    path = Path(ranges).parent / f"calib.{algo}.cache"
    return path if path.is_file() else None


def _print_summary(summary, output: Path, txt: Path) -> None:
    c = summary.counts
    print(f"wrote {output} ({summary.qdq_pairs} Q/DQ pairs, {summary.weight_pairs} on weights; "
          f"{summary.casts} Cast nodes; algo {summary.algo}; {summary.seconds:.2f} s)")
    print(f"  layers: {c['int8']} INT8, {c['fp16']} FP16, {c['fp32']} FP32")
    for pin in summary.pins:
        print(f"  pinned {pin.node}: {pin.precision.value} ({pin.reason})")
    for note in summary.notes:
        print(f"  note: {note}")
    print(f"  wrote {txt}")


def _print_accuracy(accuracy, source, why: str) -> None:
    if accuracy is None:
        print(f"accuracy: not measured ({why})")
        return
    print("\n".join(accuracy_lines(accuracy, source.describe().get("source", "the evaluation data"))))
