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
  qdq-no-zero-point / qdq-no-axis / qdq-uint8 / qdq-nonzero-zero-point / qdq-unsupported-type
                             attributes that TensorRT and ONNX read differently, or refuses
  not-quantized              no Q/DQ at all (the FP32 model was passed?)
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
            nodes = f" [{', '.join(f.nodes[:6])}{' ...' if len(f.nodes) > 6 else ''}]" \
                if f.nodes else ""
            out += textwrap.wrap(f"- {f.message}{nodes}"
                                 + (f" -> {state}" if state else ""), 96,
                                 initial_indent="  ", subsequent_indent="      ")
    return "\n".join(out)


def _check_options(args: argparse.Namespace) -> None:
    """Contradictory or meaningless options fail before any work, naming the model."""
    from ptq.cli.outputs import plan_outputs
    from ptq.errors import ConfigError

    model = args.model
    if args.fix and not args.output:
        raise ConfigError("--fix needs -o OUT.onnx", path=model,
                          hint="ptq lint M.onnx --fix -o fixed.onnx")
    if args.output and not args.fix:
        raise ConfigError("-o is only used with --fix", path=model, hint="add --fix")
    if (args.data or args.fp32) and not args.fix:
        raise ConfigError(f"{'--data' if args.data else '--fp32'} is only used with --fix (it "
                          "checks the fixed model's accuracy)", path=model,
                          hint="add --fix -o fixed.onnx, or drop the option")
    if args.fp32 and not args.data:
        raise ConfigError("--fp32 needs --data (the images both models are run on)",
                          path=args.fp32, hint="add --data images/")
    for flag, value in (("--batch-size", args.batch_size), ("--max-images", args.max_images)):
        if value is not None and value <= 0:
            raise ConfigError(f"{flag} must be positive, got {value}", path=args.data or model,
                              hint=f"leave {flag} out for the default")
    inputs = [model, args.fp32]
    if args.output:
        out = Path(args.output)
        if out.resolve() == Path(model).resolve() or (out.exists() and Path(model).exists()
                                                      and out.samefile(model)):
            raise ConfigError("-o must differ from the input model", path=args.output,
                              hint="write the fixed model to a new file")
    plan_outputs({"-o": args.output, "--json": args.json}, inputs)


def run(args: argparse.Namespace) -> int:
    from ptq.lint import fix_model, lint_model

    _check_options(args)
    if not args.fix:
        result = lint_model(args.model)
        if args.json:
            from ptq.atomic import write_json
            from ptq.cli.outputs import write_outputs
            payload = result.to_dict()
            write_outputs([("--json", args.json, lambda p: write_json(p, payload))])
        if args.quiet == 0:
            print(render(result))
        return 0
    return _run_fix(args, fix_model)


def _run_fix(args: argparse.Namespace, fix_model) -> int:
    from ptq.atomic import write_json
    from ptq.cli.outputs import write_outputs
    from ptq.quantization import save_model

    fixed, before, done = fix_model(args.model)
    done_ids = {id(f) for f in done}
    fixed_idx = {i for i, f in enumerate(before.findings) if id(f) in done_ids}
    verification = None
    if args.data:
        verification = _verify(args, fixed)
    writes = [("-o", args.output, lambda p: save_model(fixed, p))]
    if args.json:
        payload = {**before.to_dict(), "fixed": sorted(fixed_idx), "output": args.output,
                   "verification": verification}
        writes.append(("--json", args.json, lambda p: write_json(p, payload)))
    write_outputs(writes)
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
    from ptq.errors import PtqError
    from ptq.graph.model import load_model
    from ptq.lint import verify_fix

    original = load_model(args.model)
    config = CalibrateConfig(preprocess=preprocess_options(args), max_images=args.max_images,
                             seed=args.seed, strict=args.strict)
    source = open_model_data(Path(args.fp32 or args.model), load_model(args.fp32 or args.model),
                             args.data, config)
    batches = list(source.batches(args.batch_size or 32))
    try:
        return verify_fix(original, fixed, batches, fp32=args.fp32)
    except PtqError as exc:
        if exc.path is not None:
            raise
        raise PtqError(f"checking the fix on --data failed: {exc.message}",
                       path=args.fp32 or args.model,
                       hint="--data and --fp32 must fit the Q/DQ model's inputs (same input "
                            "names, dtypes and sizes)") from None


def _verification_text(v: dict) -> str:
    fmt = lambda d: ", ".join(f"{k} {x:.4g}" for k, x in d.items())  # noqa: E731
    if v["reference"] == "original":
        return ("ONNX Runtime CPU, graph optimizations disabled; fixed vs original: "
                + fmt(v["fixed"]))
    return ("ONNX Runtime CPU, graph optimizations disabled; against FP32 " + v["reference"]
            + f":\n  original: {fmt(v['original'])}\n  fixed:    {fmt(v['fixed'])}")
