"""`ptq` command line: a thin layer over the Python API.

Subcommands live in their own modules and are imported only when used, so
`ptq --help` stays fast. Each module has `add_parser(subparsers)` and `run(args) -> int`.
"""
from __future__ import annotations

import argparse
import importlib
import logging
import sys
import warnings
from typing import NamedTuple

from ptq.errors import PtqError
from ptq.version import __version__

EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_INTERNAL = 0, 1, 2, 3


class Command(NamedTuple):
    module: str
    summary: str


COMMANDS: dict[str, Command] = {
    "calibrate": Command("ptq.cli.calibrate", "collect activation statistics and compute INT8 ranges"),
    "quantize": Command("ptq.cli.quantize", "write an explicitly quantized (Q/DQ) ONNX for TensorRT"),
    "sensitivity": Command("ptq.cli.sensitivity", "rank layers by how much pinning them to FP16/FP32 helps"),
    "report": Command("ptq.cli.report", "write a self-contained HTML review page"),
    "lint": Command("ptq.cli.lint", "check Q/DQ placement against TensorRT's rules, before a build"),
    "inspect": Command("ptq.cli.inspect", "what TensorRT did with the graph: layers, precisions, "
                                          "reformats, from trtexec's JSON"),
    "bench": Command("ptq.cli.bench", "latency and throughput with trtexec's metric names"),
    "demo": Command("ptq.cli.demo", "run the whole workflow on a real EfficientNet-Lite0 and real photos"),
}

EPILOG = """\
typical workflow:
  ptq calibrate model.onnx --data images/ --algo all -o out/
  ptq quantize model.onnx --ranges out/ranges.json -o out/model.int8.onnx
  ptq sensitivity model.onnx --data images/ --ranges out/ranges.json --topk 10 -o out/
  ptq report --ranges out/ranges.json --sensitivity out/sensitivity.json -o out/report.html
  ptq lint out/model.int8.onnx                      # Q/DQ placement vs TensorRT's rules
  ptq inspect model.graph.json --profile model.profile.json   # after trtexec --exportLayerInfo
  ptq bench model.onnx out/model.int8.onnx --json bench.json  # trtexec's metrics
Run `ptq demo` to see all of it on a real model. `ptq COMMAND --help` explains each step.
"""


def build_parser(argv: list[str] | None = None) -> argparse.ArgumentParser:
    """The parser; only the subcommand named in `argv` is imported (all for --help)."""
    parser = argparse.ArgumentParser(
        prog="ptq", description="Post-training INT8 quantization workbench for ONNX vision "
                                "models deployed on NVIDIA TensorRT.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"ptq {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    wanted = _wanted_command(argv or [])
    for name, cmd in COMMANDS.items():
        if wanted in (None, name):
            module = _import(cmd.module)
            if module is not None:
                module.add_parser(sub, name, cmd.summary)
                continue
        sub.add_parser(name, help=cmd.summary)
    return parser


def _wanted_command(argv: list[str]) -> str | None:
    words = [a for a in argv if not a.startswith("-")]
    return words[0] if words and words[0] in COMMANDS else None


def _import(module: str):
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as exc:
        if exc.name == module:
            return None
        raise


def setup_logging(verbosity: int) -> None:
    level = {-1: logging.ERROR, 0: logging.WARNING, 1: logging.INFO}.get(verbosity, logging.DEBUG)
    logging.basicConfig(level=level, format="ptq: %(levelname)s: %(message)s", force=True)


def one_line_warnings(prog: str) -> None:
    """Python warnings (from numpy, Pillow, onnx...) as one `<prog>: warning:` line each,
    like ptq's own messages, instead of the two-line file:line + source format."""
    def show(message, category, filename, lineno, file=None, line=None) -> None:
        text = " ".join(str(message).split())
        print(f"{prog}: warning: {text} ({category.__name__})", file=file or sys.stderr)

    warnings.showwarning = show


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(argv)
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        return int(exc.code or 0)
    if not args.command:
        parser.print_help()
        return EXIT_USAGE
    if not hasattr(args, "run"):
        print(f"ptq: error: '{args.command}' is not available in this installation", file=sys.stderr)
        return EXIT_USAGE
    setup_logging(getattr(args, "verbose", 0) - getattr(args, "quiet", 0))
    one_line_warnings(f"ptq {args.command}")
    for stream in (sys.stdout, sys.stderr):  # a file name that is not UTF-8 prints as its bytes
        if getattr(stream, "errors", None) == "strict" and hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="surrogateescape")
    try:
        return int(args.run(args) or EXIT_OK)
    except PtqError as exc:
        print(f"ptq {args.command}: error: {exc}", file=sys.stderr)
        if getattr(args, "verbose", 0) > 1:
            raise
        return EXIT_ERROR
    except KeyboardInterrupt:
        print("ptq: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # a bug: short message, traceback with -vv
        if getattr(args, "verbose", 0) > 1:
            raise
        print(f"ptq {args.command}: internal error: {type(exc).__name__}: {exc} "
              "(rerun with -vv for the traceback and report it)", file=sys.stderr)
        return EXIT_INTERNAL


if __name__ == "__main__":
    sys.exit(main())
