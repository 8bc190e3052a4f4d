"""`ptq sensitivity`: rank layers by how much keeping them out of INT8 helps."""
from __future__ import annotations

import argparse
from pathlib import Path

from ptq.backends.ort import QDQ_FAITHFUL_LEVELS
from ptq.calibrators import DEFAULT_METHOD, Method
from ptq.cli.common import (add_data_args, add_runtime_args, default_outdir, new_parser,
                            positive, preprocess_options, progress_bar)
from ptq.errors import ConfigError
from ptq.sensitivity import SensitivityConfig

EXIT_TARGET_NOT_MET = 4

DESCRIPTION = """\
Measure, per quantizable node, what INT8 costs. The FP32 model's ONNX Runtime
outputs on the evaluation images are the reference (computed once, cached under
OUTDIR/.ptq-cache); the all-INT8 model is the baseline; each node gets a variant
built by the same code as `ptq quantize`:

  leave-one-out  everything INT8 except the node, pinned to --pin (default)
  quantize-one   everything FP32 except the node in INT8
  both           both rankings (each layer appears once per mode)

Metrics (--metric, several allowed, the first ranks; each scores every output it
applies to and keeps the worst): cosine (pooled over the whole output), max-abs,
mean-abs, mse, snr (dB), top1, top5 (agreement with FP32 on the class axis: axis 1
of [N,C], the last axis of [N,T,C] e.g. per CTC frame, the channel axis of NCHW/NHWC
maps; with --labels: accuracy against the class sub-folders), top1-acc, top5-acc,
map-iou / box-f1 (probability maps [N,1,H,W] such as DBNet's: IoU of the maps
binarized at 0.3, agreement of the boxes of their connected components), map50 /
map (detection, need --decoder and box labels), or a hook PKG.MODULE:FUNCTION called as
fn(outputs, {"files": [...], "labels": array|None}) -> float, whose direction is
declared on the function: fn.higher_is_better = True|False.

Without --ranges, ranges are calibrated first on the same data (--algo, capped
by --max-images) and saved as OUTDIR/ranges.json. --eval-images caps the
evaluation images (a seeded random subset); they are preprocessed once, in
batches of --batch-size (default here: 32; only outputs are kept).

Writes OUTDIR/sensitivity.json (every layer, reference, baseline, settings,
timing) and, with --auto, OUTDIR/<model>.auto.onnx: the best model found with
the reason for each pin, written even when the target is not met."""

EPILOG = f"""\
examples:
  ptq sensitivity model.onnx --data val/ --ranges out/ranges.json --topk 10 -o out/
  ptq sensitivity model.onnx --data val/ --labels --metric top1 cosine --mode both --jobs 2
  ptq sensitivity model.onnx --data val/ --labels --metric top1 --auto --target "top1>=0.99" --max-pins 5
  ptq sensitivity det.onnx --data val.npz --metric map50 --decoder mymodels.yolo:decode
  ptq sensitivity dbnet.onnx --data photos/ --size 640 --metric box-f1 map-iou --fp32 'p2o\\.Conv\\.0'

exit codes: 0 done (with --auto: target met), 1 error, 2 usage,
            {EXIT_TARGET_NOT_MET} --auto finished without meeting the target
              (the best model found is still written)"""


def add_parser(subparsers, name: str, summary: str) -> argparse.ArgumentParser:
    p = new_parser(subparsers, name, summary, DESCRIPTION, EPILOG)
    p.add_argument("model", help="FP32 ONNX model")
    add_data_args(p)
    g = p.add_argument_group("what to measure")
    g.add_argument("--ranges", default=None, metavar="FILE",
                   help="ranges.json from `ptq calibrate`, or a TensorRT calibration cache "
                        "(default: calibrate now on --data)")
    g.add_argument("--algo", default=DEFAULT_METHOD.value, choices=[m.value for m in Method],
                   help="which range of ranges.json to use, or to calibrate "
                        f"(default: {DEFAULT_METHOD.value})")
    g.add_argument("--mode", default="leave-one-out", choices=["leave-one-out", "quantize-one", "both"],
                   help="variant per node (default: leave-one-out)")
    g.add_argument("--pin", default="fp16", choices=["fp16", "fp32"],
                   help="how a pinned node runs: Cast-typed FP16, or FP32 without Q/DQ (default: fp16)")
    g.add_argument("--metric", nargs="+", default=None, metavar="METRIC",
                   help="metrics, the first ranks (default: cosine, + top1 where an output has a "
                        "class axis, + map-iou box-f1 where an output is a probability map)")
    g.add_argument("--output-kind", dest="output_kind", nargs="+", default=(),
                   metavar="NAME=KIND[:AXIS]",
                   help="how to read an output when its shape misleads: KIND classes|sequence|"
                        "dense (AXIS = class axis), map (AXIS = threshold, default 0.3), "
                        "detection (AXIS = attribute axis), tensor (no top-k)")
    g.add_argument("--labels", action="store_true",
                   help="top1/top5 = accuracy against the labels (class sub-folders / npz 'labels')")
    g.add_argument("--decoder", default=None, metavar="PKG.MODULE:FUNCTION",
                   help="detection decoder for map50/map: outputs -> per-image boxes, scores, classes")
    g.add_argument("--eval-images", type=int, default=None, metavar="N",
                   help="evaluate on a seeded random subset of N images (default: all)")
    g.add_argument("--op-types", nargs="+", default=None, metavar="OP",
                   help="op types to quantize (default: ptq quantize's default set)")
    g.add_argument("--nodes", nargs="+", default=(), metavar="PATTERN",
                   help="make variants only for these quantizable nodes (default: all)")
    g.add_argument("--fp32", "--exclude", dest="fp32", nargs="+", default=(), metavar="PATTERN",
                   help="nodes kept FP32 without Q/DQ in every variant, as `ptq quantize --fp32` "
                        "(exact name or full regex)")
    g.add_argument("--fp16", nargs="+", default=(), metavar="PATTERN",
                   help="nodes pinned FP16 in every variant, as `ptq quantize --fp16`")
    g = p.add_argument_group("auto fallback")
    g.add_argument("--auto", action="store_true",
                   help="greedily pin the most sensitive layers until --target holds")
    g.add_argument("--target", default=None, metavar="EXPR",
                   help='e.g. "top1>=0.99" or "cosine>0.999" (metric op value; implies --auto)')
    g.add_argument("--max-pins", type=int, default=None, metavar="N",
                   help="stop after N pins (default: no limit)")
    g.add_argument("--time-budget", type=float, default=None, metavar="SECONDS",
                   help="stop the greedy search after this long (default: no limit)")
    g = p.add_argument_group("execution")
    g.add_argument("--jobs", type=int, default=None, metavar="N",
                   help="variants evaluated in parallel, each session with cores/N threads "
                        "(default: on the CPU EP half the cores, at most 8; 1 on a GPU or with "
                        "--backend trt). The results do not depend on it")
    g.add_argument("--executor", choices=["thread", "process"], default="thread",
                   help="how --jobs runs variants: threads sharing the batches (default), or "
                        "spawned processes (no GIL during graph building; startup ~1 s each)")
    g.add_argument("--backend", choices=["ort", "trt"], default="ort",
                   help='ort: ONNX Runtime (default); trt: TensorRT engines '
                        '(pip install "ptq[tensorrt]")')
    g.add_argument("--optimization", choices=list(QDQ_FAITHFUL_LEVELS),
                   default=SensitivityConfig.optimization,
                   help="ONNX Runtime graph optimization for the quantized variants (default: "
                        f"{SensitivityConfig.optimization}). Only levels that compute exact Q/DQ "
                        "semantics are offered: 'extended'/'all' fuse integer kernels that corrupt "
                        "QDQ models on CPUs without VNNI. nchwc: Q/DQ stay ONNX ops, convolutions "
                        "run in ORT's fast FP32 NCHWc kernels (CPU EP; 2.4x faster than disable, "
                        "float summation order apart the same); disable: no graph optimization")
    add_runtime_args(p)
    g = p.add_argument_group("output")
    g.add_argument("--topk", type=int, default=10, metavar="K", help="layers to print (default: 10)")
    g.add_argument("-o", "--outdir", default=None, help="output folder (default: ptq-out/<model name>)")
    g.add_argument("--cache-dir", default=None, metavar="DIR",
                   help="reference-output cache (default: OUTDIR/.ptq-cache)")
    g.add_argument("--no-cache", action="store_true", help="do not cache the FP32 reference outputs")
    p.set_defaults(run=run)
    return p


def build_config(args: argparse.Namespace, outdir: Path):
    from ptq.output_kinds import parse_spec_override
    from ptq.quantization import QuantizeConfig
    from ptq.sensitivity import AutoConfig
    from ptq.sensitivity.cache import CACHE_DIRNAME

    for flag in ("batch_size", "max_images", "eval_images", "jobs", "topk"):
        positive(flag.replace("_", "-"), getattr(args, flag))
    if args.max_pins is not None and args.max_pins < 0:
        raise ConfigError(f"--max-pins must be >= 0, got {args.max_pins}")
    if args.time_budget is not None and args.time_budget <= 0:
        raise ConfigError(f"--time-budget must be positive, got {args.time_budget}")
    auto = None
    if args.auto or args.target is not None:
        if not args.target:
            raise ConfigError("--auto needs --target", hint='e.g. --target "top1>=0.99"')
        auto = AutoConfig(args.target, args.max_pins, args.time_budget)
    elif args.max_pins is not None or args.time_budget is not None:
        raise ConfigError("--max-pins/--time-budget only apply with --auto --target")
    qconfig = QuantizeConfig(algo=args.algo, exclude=tuple(args.fp32),
                             op_types=None if args.op_types is None else tuple(args.op_types))
    cache_dir = None if args.no_cache else Path(args.cache_dir or outdir / CACHE_DIRNAME)
    return SensitivityConfig(
        mode=args.mode, pin=args.pin, metrics=tuple(args.metric or ()), labels=args.labels,
        decoder=args.decoder, quantize=qconfig, nodes=tuple(args.nodes), fp16=tuple(args.fp16),
        outputs=tuple(parse_spec_override(t) for t in args.output_kind),
        eval_images=args.eval_images, calib_images=args.max_images, batch_size=args.batch_size,
        jobs=args.jobs, executor=args.executor, backend=args.backend, providers=args.providers,
        optimization=args.optimization,
        preprocess=preprocess_options(args), seed=args.seed, strict=args.strict, auto=auto,
        cache_dir=cache_dir)


def run(args: argparse.Namespace) -> int:
    from ptq.atomic import check_writable
    from ptq.sensitivity import Analysis, SensitivityRun, write_outputs

    outdir = Path(args.outdir) if args.outdir else default_outdir(args.model)
    check_writable(outdir)  # read-only, under a file: fail now, not after the analysis
    config = build_config(args, outdir)
    analysis = Analysis(Path(args.model), args.data, config, args.ranges)
    with progress_bar(args, analysis.num_variants, "variants", unit="variant") as update:
        layers = analysis.rank(update)
    auto, auto_model = None, None
    if config.auto is not None:
        with progress_bar(args, None, "auto fallback", unit="step") as update:
            auto, auto_model = analysis.auto(layers, update)
    run_ = SensitivityRun(analysis.result(layers, auto), auto_model, analysis.ranges)
    result, written = write_outputs(run_, outdir)
    if args.quiet == 0:
        print_summary(result, written, args.topk)
    return EXIT_TARGET_NOT_MET if result.auto is not None and not result.auto.met else 0


def print_summary(result, written: dict, topk: int) -> None:
    s, t = result.settings, result.timing
    ref = " ".join(f"{k} {v:.4g}" for k, v in result.reference["metrics"].items())
    base = " ".join(f"{k} {v:.4g}" for k, v in result.baseline["metrics"].items())
    print(f"{s['quantizable_nodes']} quantizable nodes, {s['eval_images']} images, "
          f"backend {s['backend']}; FP32: {ref}; all-INT8 baseline: {base}")
    outputs = result.baseline.get("outputs")
    if outputs:
        print("all-INT8 baseline per output (worst named; LOW = far from FP32):")
        for line in _comparison_lines(outputs):
            print(line)
    for mode in dict.fromkeys(r.mode for r in result.layers):
        print_table(result, mode, topk)
    if result.auto is not None:
        print_auto(result.auto)
    print(f"time: reference {t.get('reference_s', 0):.2f} s, baseline {t.get('baseline_s', 0):.2f} s, "
          f"{len(result.layers)} variants {t.get('variants_s', 0):.1f} s "
          f"({t.get('per_variant_s', 0):.2f} s each, {s['jobs']} at a time), "
          f"total {t.get('total_s', 0):.1f} s")
    for path in written.values():
        print(f"  wrote {path}")


def _comparison_lines(d: dict) -> list[str]:
    """The per-output block of sensitivity.json's baseline, as `ptq.metrics.Comparison.lines`."""
    lines = [f"  {name} [{d['specs'].get(name, '')}]: "
             + ", ".join(f"{k} {v:.4g}" for k, v in metrics.items())
             for name, metrics in d["outputs"].items()]
    if len(d["outputs"]) > 1:
        lines.append("  worst output per metric: " + ", ".join(
            f"{m} {w['value']:.4g} ({w['output']})" for m, w in d["worst"].items()))
    if d.get("flags"):
        lines.append("  LOW (far from FP32; check before deploying): " + "; ".join(d["flags"]))
    return lines


def print_table(result, mode: str, topk: int) -> None:
    s = result.settings
    m, others = s["rank_metric"], [x for x in s["metrics"] if x != s["rank_metric"]]
    lo = mode == "leave-one-out"
    base_label, var_label = ("all-INT8", f"{s['pin']} pin") if lo else ("FP32", "only INT8")
    base = result.baseline["metrics"] if lo else result.reference["metrics"]
    rows = result.ranking(mode)[:topk]
    print(f"\n{mode}: top {len(rows)} by {m} (delta = gain from keeping the node out of INT8)")
    head = (f"  {'#':>3} {'node':36s} {'op':18s} {base_label:>10s} {var_label:>10s} {'delta':>10s}"
            + "".join(f" {'d ' + o:>10s}" for o in others))
    print(head)
    for r in rows:
        print(f"  {r.rank:>3} {r.node[:36]:36s} {r.op_type[:18]:18s} {base[m]:>10.4g} "
              f"{r.metrics[m]:>10.4g} {r.delta[m]:>+10.3g}"
              + "".join(f" {r.delta[o]:>+10.3g}" for o in others))


def print_auto(auto) -> None:
    status = "met" if auto.met else "NOT met"
    metrics = " ".join(f"{k} {v:.4g}" for k, v in auto.metrics.items())
    print(f"\nauto: target {auto.target} {status} with {len(auto.pins)} pin(s) "
          f"(stopped by {auto.stopped_by}); {metrics}")
    for pin in auto.pins:
        print(f"  {pin.node}: {pin.precision.value} ({pin.reason})")
