"""`ptq lint`: check Q/DQ placement against TensorRT's rules before any engine build."""
from __future__ import annotations

import argparse
import textwrap
from pathlib import Path

from ptq.cli.common import add_data_args, new_parser, preprocess_options

DESCRIPTION = """\
Check an explicitly quantized (Q/DQ) ONNX model against TensorRT's placement rules,
before spending minutes on an engine build. Works on ptq's own output, ONNX Runtime
quantize_static (QDQ format), ModelOpt, pytorch-quantization and torch.ao exports.

Each finding names the nodes, the rule, why TensorRT cares and the expected effect:
  qdq-in-epilogue            Q/DQ between a Conv/Gemm and its BN/bias/ReLU/Clip epilogue
  residual-fused-input-qdq   Q/DQ on the conv-branch input of a residual Add
  residual-skip-unquantized  no Q/DQ on the skip input of a residual Add after an INT8 conv
  unquantized-pooling        pooling left in float after an INT8 producer
  concat-scale-mismatch      Concat inputs with different scales (or some not quantized)
  reformat-pair              DQ -> op without an INT8 kernel -> Q (two reformat layers)
  qdq-no-zero-point / qdq-no-axis / qdq-uint8 / qdq-nonzero-zero-point
                             attributes that TensorRT and ONNX read differently, or refuses
  unsupported-quant-op       QLinearConv & co. (operator format: TensorRT needs Q/DQ)
  cast-in-epilogue           a precision Cast between a conv and its activation
  cast-island                one op alone in FP16/FP32 between Cast pairs

--fix -o OUT.onnx rewrites what is safe: it removes a pair, or rewires an input to a
Q/DQ of the same tensor that the model already has; it never invents a scale. With
--data it then runs both models in ONNX Runtime (graph optimizations disabled, so the
Q/DQ arithmetic is simulated faithfully) and prints their agreement and accuracy."""

EPILOG = """\
examples:
  ptq lint model.int8.onnx
  ptq lint model.int8.onnx --json lint.json
  ptq lint ort.qdq.onnx --fix -o fixed.onnx --data images/ --fp32 model.onnx"""


def add_parser(subparsers, name: str, summary: str) -> argparse.ArgumentParser:
    p = new_parser(subparsers, name, summary, DESCRIPTION, EPILOG)
    p.add_argument("model", metavar="MODEL.onnx", help="the Q/DQ model to check")
    p.add_argument("--json", metavar="OUT", help="write the findings as JSON")
    g = p.add_argument_group("fixing")
    g.add_argument("--fix", action="store_true", help="write a fixed copy (needs -o)")
    g.add_argument("-o", "--output", metavar="OUT.onnx", help="where --fix writes the model")
    g.add_argument("--fp32", metavar="MODEL", help="the FP32 model: accuracy of both Q/DQ "
                   "models is measured against it (default: fixed vs original)")
    add_data_args(p, required=False)
    p.set_defaults(run=run)
    return p


def _wrap(label: str, text: str) -> list[str]:
    return textwrap.wrap(text, 96, initial_indent=f"    {label:<8}",
                         subsequent_indent=" " * 12) or [f"    {label}"]


def render(result, fixed: set[int] | None = None) -> str:
    """Findings grouped by rule: why and effect once per rule, then each occurrence."""
    counts = result.counts()
    out = [f"{result.path or 'model'}: {result.qdq_pairs} activation Q/DQ pairs; "
           + (", ".join(f"{v} {k}(s)" for k, v in counts.items()) if counts else "no findings")]
    groups: dict[str, list[int]] = {}
    for i, f in enumerate(result.findings):
        groups.setdefault(f.rule, []).append(i)
    for rule, idx in groups.items():
        first = result.findings[idx[0]]
        out.append("")
        out.append(f"{first.severity} {rule} ({len(idx)})")
        out += _wrap("why", first.why)
        out += _wrap("effect", first.effect)
        for i in idx:
            f = result.findings[i]
            if fixed is not None:
                state = "fixed" if i in fixed else f"not fixed: {f.fix_note or 'no safe rewrite'}"
            elif f.fix is not None:
                state = "fixable with --fix"
            else:
                state = f"manual: {f.fix_note}" if f.fix_note else ""
            out += textwrap.wrap(f"- {f.message} [{', '.join(f.nodes[:6])}"
                                 f"{' ...' if len(f.nodes) > 6 else ''}]"
                                 + (f" -> {state}" if state else ""), 96,
                                 initial_indent="  ", subsequent_indent="      ")
    return "\n".join(out)


def run(args: argparse.Namespace) -> int:
    from ptq.errors import ConfigError
    from ptq.lint import fix_model, lint_model

    if args.fix and not args.output:
        raise ConfigError("--fix needs -o OUT.onnx", hint="ptq lint M.onnx --fix -o fixed.onnx")
    if args.output and not args.fix:
        raise ConfigError("-o is only used with --fix", hint="add --fix")
    if args.fix and Path(args.output).resolve() == Path(args.model).resolve():
        raise ConfigError("-o must differ from the input model", hint="write a new file")
    if not args.fix:
        result = lint_model(args.model)
        if args.json:
            from ptq.atomic import write_json
            write_json(args.json, result.to_dict())
        if args.quiet == 0:
            print(render(result))
        return 0
    return _run_fix(args, fix_model)


def _run_fix(args: argparse.Namespace, fix_model) -> int:
    from ptq.atomic import write_json
    from ptq.quantization import save_model

    fixed, before, done = fix_model(args.model)
    done_ids = {id(f) for f in done}
    fixed_idx = {i for i, f in enumerate(before.findings) if id(f) in done_ids}
    verification = None
    if args.data:
        verification = _verify(args, fixed)
    save_model(fixed, args.output)
    if args.json:
        write_json(args.json, {**before.to_dict(), "fixed": sorted(fixed_idx),
                               "output": args.output, "verification": verification})
    if args.quiet == 0:
        print(render(before, fixed_idx))
        print(f"\nfixed {len(done)} of {len(before.findings)} finding(s); wrote {args.output}")
        if verification is None:
            print("accuracy not checked (pass --data to run both models in ONNX Runtime)")
        else:
            print(_verification_text(verification))
    return 0


def _verify(args: argparse.Namespace, fixed):
    from ptq.calibration import CalibrateConfig, open_model_data
    from ptq.graph.model import load_model
    from ptq.lint import verify_fix

    original = load_model(args.model)
    config = CalibrateConfig(preprocess=preprocess_options(args), max_images=args.max_images,
                             seed=args.seed, strict=args.strict)
    source = open_model_data(Path(args.fp32 or args.model), load_model(args.fp32 or args.model),
                             args.data, config)
    batches = list(source.batches(args.batch_size or 32))
    return verify_fix(original, fixed, batches, fp32=args.fp32)


def _verification_text(v: dict) -> str:
    fmt = lambda d: ", ".join(f"{k} {x:.4g}" for k, x in d.items())  # noqa: E731
    if v["reference"] == "original":
        return ("ONNX Runtime CPU, graph optimizations disabled; fixed vs original: "
                + fmt(v["fixed"]))
    return ("ONNX Runtime CPU, graph optimizations disabled; against FP32 " + v["reference"]
            + f":\n  original: {fmt(v['original'])}\n  fixed:    {fmt(v['fixed'])}")
