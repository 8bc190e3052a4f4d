"""Peak memory of `ptq calibrate` against the number of images: it should not grow.

The statistics pass keeps nothing per image and the image loader decodes a bounded number of
images ahead (ptq/datasets/images.py LOOKAHEAD), so peak RSS at 3,200 images should be within
±10% of the peak at 200 (issue 8; before the fix it grew ~0.57 MB per image).

One model (the demo's real EfficientNet-Lite0), one image folder per size: the ~20 real photos
bundled with scikit-image/scikit-learn (ptq.datasets.samples), augmented into distinct JPEGs
(random crop, flip, brightness) and repeated as hard links up to the size. Each size runs as
its own `python -m ptq calibrate` process; its peak RSS is read from os.wait4 (that child only).
The anchor is the smallest size, measured in the same run.

    python bench/memory.py                         # 200, 800, 3200 images: ~5-10 min on 2 cores
    python bench/memory.py --counts 100 400 --algo entropy minmax
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

DISTINCT = 200  # distinct augmented JPEGs; larger sizes repeat them as hard links


def make_images(photos: Path, distinct: Path, dest: Path, count: int, seed: int = 0) -> Path:
    """`count` files: DISTINCT augmented photos (made once in `distinct`), then hard links
    to them under new names."""
    dest.mkdir(parents=True)
    sources = sorted(photos.iterdir())
    rng = np.random.default_rng(seed)
    if not distinct.exists():
        distinct.mkdir()
        for i in range(DISTINCT):
            img = Image.open(sources[i % len(sources)]).convert("RGB")
            w, h = img.size
            s = rng.uniform(0.6, 1.0)
            cw, ch = int(w * s), int(h * s)
            x, y = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
            img = img.crop((x, y, x + cw, y + ch))
            if rng.random() < 0.5:
                img = img.transpose(Image.FLIP_LEFT_RIGHT)
            arr = np.clip(np.asarray(img, np.float32) * rng.uniform(0.8, 1.2), 0, 255)
            Image.fromarray(arr.astype(np.uint8)).save(distinct / f"{i:04d}.jpg", quality=90)
    files = sorted(distinct.iterdir())
    for i in range(count):
        os.link(files[i % len(files)], dest / f"img_{i:05d}.jpg")
    return dest


def peak_rss_mb(cmd: list[str]) -> tuple[float, float, str]:
    """(peak RSS in MB of that one child, seconds, stderr tail)."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    err = proc.stderr.read()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode}):\n{err[-2000:]}")
    return usage.ru_maxrss / 1024.0, time.perf_counter() - start, err  # Linux: KiB


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--counts", type=int, nargs="+", default=[200, 800, 3200])
    ap.add_argument("--algo", nargs="+", default=["entropy"])
    ap.add_argument("--model", type=Path, default=None, help="default: EfficientNet-Lite0")
    ap.add_argument("--providers", default="cpu")
    args = ap.parse_args()
    from ptq.datasets.samples import write_sample_photos

    with tempfile.TemporaryDirectory(prefix="ptq-bench-memory-") as tmp:
        work = Path(tmp)
        model = args.model
        if model is None:
            from ptq.models.efficientnet_lite import save_efficientnet_lite0

            model = save_efficientnet_lite0(work / "efficientnet_lite0.onnx")
        write_sample_photos(work / "photos")
        rows = []
        for count in args.counts:
            folder = make_images(work / "photos", work / "distinct", work / f"images_{count}", count)
            cmd = [sys.executable, "-m", "ptq", "calibrate", str(model), "--data", str(folder),
                   "--preset", "efficientnet-lite", "--algo", *args.algo, "--providers",
                   args.providers, "-o", str(work / f"out_{count}"), "-q"]
            mb, seconds, _ = peak_rss_mb(cmd)
            rows.append((count, mb, seconds))
            print(f"{count:6d} images: peak RSS {mb:8.1f} MB  ({seconds:6.1f} s)", flush=True)
    base = rows[0]
    print(f"\nanchor: {base[0]} images, peak RSS {base[1]:.1f} MB (model {Path(model).name}, "
          f"--algo {' '.join(args.algo)}, --providers {args.providers})")
    for count, mb, _ in rows[1:]:
        ratio = mb / base[1]
        print(f"  {count:6d} / {base[0]} images: RSS ratio {ratio:.3f} "
              f"({'within' if abs(ratio - 1) <= 0.10 else 'OUTSIDE'} the ±10% goal; "
              f"{(mb - base[1]) / (count - base[0]) * 1024:.1f} KB per extra image)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
