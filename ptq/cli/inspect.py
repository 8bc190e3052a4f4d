"""`ptq inspect`: what TensorRT did with the graph, from trtexec's layer and profile JSON."""
from __future__ import annotations

import argparse
from pathlib import Path

from ptq.cli.common import new_parser

DESCRIPTION = """\
Read the engine description TensorRT writes and answer "what did TensorRT do with my
graph": per layer its type, the ONNX nodes it fused, the precision it ran in, the
tactic, and (with --profile) its time and share of the total; the reformat layers
(how many, how much time, what made TensorRT add each); with --onnx, the nodes the
Q/DQ model meant to run in INT8 that ran in FP16/FP32, and the reverse; with
--compare, a second engine (e.g. the FP16 build) layer by layer.

Write the inputs with:
  trtexec --onnx=model.int8.onnx --saveEngine=model.plan --profilingVerbosity=detailed \\
          --exportLayerInfo=model.graph.json --exportProfile=model.profile.json
Both the TensorRT 8.x/10 schema (Bindings, Format/Datatype, TensorRT 10 Metadata) and
the TensorRT 11 schema (I/O Tensors, split Format and Datatype) are read."""

EPILOG = """\
examples:
  ptq inspect model.graph.json --profile model.profile.json
  ptq inspect int8.graph.json --profile int8.profile.json --onnx model.int8.onnx \\
              --compare fp16.graph.json --compare-profile fp16.profile.json --json out.json
  ptq inspect int8.graph.json --svg engine.svg"""


def add_parser(subparsers, name: str, summary: str) -> argparse.ArgumentParser:
    p = new_parser(subparsers, name, summary, DESCRIPTION, EPILOG)
    p.add_argument("engine", metavar="ENGINE.graph.json",
                   help="layer JSON from trtexec --exportLayerInfo (or IEngineInspector)")
    p.add_argument("--profile", metavar="JSON", help="per-layer times from trtexec --exportProfile")
    p.add_argument("--onnx", metavar="MODEL", help="the Q/DQ ONNX the engine was built from")
    p.add_argument("--compare", metavar="JSON", help="a second engine's layer JSON (e.g. FP16)")
    p.add_argument("--compare-profile", metavar="JSON", help="the second engine's profile")
    p.add_argument("--top", type=int, default=15, metavar="N",
                   help="layers shown in the table, slowest first when profiled (default: 15; "
                        "0 = all)")
    p.add_argument("--json", metavar="OUT", help="write the whole analysis as JSON")
    p.add_argument("--svg", metavar="OUT", help="draw the engine graph, coloured by precision")
    p.set_defaults(run=run)
    return p


def run(args: argparse.Namespace) -> int:
    from ptq.atomic import write_json, write_text
    from ptq.cli.outputs import plan_outputs, write_outputs
    from ptq.engine.report import inspect_engine, render_text
    from ptq.errors import ConfigError

    if args.compare_profile and not args.compare:
        raise ConfigError("--compare-profile needs --compare (the second engine's layer JSON)",
                          path=args.compare_profile, hint="add --compare OTHER.graph.json")
    plan_outputs({"--json": args.json, "--svg": args.svg},
                 [args.engine, args.profile, args.onnx, args.compare, args.compare_profile])
    result = inspect_engine(args.engine, profile=args.profile, onnx_path=args.onnx,
                            compare=args.compare, compare_profile=args.compare_profile)
    text = render_text(result, top=args.top)
    writes = []                            # everything is computed before anything is written
    if args.json:
        payload = result.to_dict()
        writes.append(("--json", args.json, lambda p: write_json(p, payload)))
    if args.svg:
        from ptq.engine.draw import engine_svg
        svg = engine_svg(result.engine)
        writes.append(("--svg", args.svg, lambda p: write_text(p, svg)))
    write_outputs(writes)
    if args.quiet == 0:
        print(text)
        for out in (args.json, args.svg):
            if out:
                print(f"wrote {Path(out)}")
    return 0
