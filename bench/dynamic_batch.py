"""Benchmark: peak memory of calibrating a dynamic-shape model, auto batch vs a fixed batch.

PaddleOCR's DBNet (rapidocr-onnxruntime 1.4.4) has input [N,3,H,W] with every dim dynamic, so
the static activation estimate cannot size the batch. ptq now runs one sample at the real
--size and sizes the batch to its ~128 MB activation budget. The anchor, measured in the same
script on the same photos: `--batch-size 8`, the fixed fallback ptq used before for every
dynamic-shape model. Each run is a fresh process; peak RSS is its ru_maxrss.

    python bench/dynamic_batch.py [--size 608] [--images 6]
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import subprocess
import sys
import tempfile
from pathlib import Path

CHILD = r"""
import json, resource, sys, time
from ptq.calibration import CalibrateConfig, PreprocessOptions, calibrate
model, data, size, batch = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
pre = PreprocessOptions(size=(size, size), multiple=32, letterbox=True,
                        mean=(123.675, 116.28, 103.53), std=(58.395, 57.12, 57.375))
t0 = time.perf_counter()
table = calibrate(model, data, CalibrateConfig(preprocess=pre,
                                               batch_size=None if batch == "auto" else int(batch)))
print(json.dumps({"seconds": time.perf_counter() - t0, "batch": table.data["batch_size"],
                  "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=608)
    ap.add_argument("--images", type=int, default=6)
    args = ap.parse_args()
    spec = importlib.util.find_spec("rapidocr_onnxruntime")
    if spec is None:
        sys.exit("pip install --no-deps rapidocr-onnxruntime==1.4.4")
    model = Path(spec.origin).parent / "models" / "ch_PP-OCRv4_det_infer.onnx"
    from PIL import Image
    from skimage import data

    with tempfile.TemporaryDirectory() as tmp:
        names = ["page", "text", "coffee", "rocket", "astronaut", "camera", "chelsea", "coins"]
        for name in names[:args.images]:
            Image.fromarray(getattr(data, name)()).save(Path(tmp) / f"{name}.png")
        runs = {}
        for batch in ("8", "auto"):
            out = subprocess.run([sys.executable, "-c", CHILD, str(model), tmp, str(args.size), batch],
                                 check=True, capture_output=True, text=True).stdout
            runs[batch] = json.loads(out.strip().splitlines()[-1])
            r = runs[batch]
            print(f"--batch-size {batch:>4}: batch {r['batch']}, peak RSS {r['rss_mb']:.0f} MB, "
                  f"{r['seconds']:.1f} s")
    print(f"DBNet {args.size}x{args.size}, {args.images} photos: auto batch peak RSS = "
          f"{runs['auto']['rss_mb'] / runs['8']['rss_mb']:.2f}x the fixed batch of 8 "
          f"(time {runs['auto']['seconds'] / runs['8']['seconds']:.2f}x)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
