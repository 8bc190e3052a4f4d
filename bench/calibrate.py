"""Benchmark `ptq calibrate` against plain FP32 inference and ONNX Runtime's calibrators.

One run, one model (the demo's real EfficientNet-Lite0), one set of images (the bundled real
photos, repeated to --images), one set of preprocessed batches saved once and fed to every
contender. Each measurement runs in its own subprocess so its peak RSS (ru_maxrss) is its own.

    python bench/calibrate.py                 # ~2-3 minutes on 2 cores
    python bench/calibrate.py --images 100    # less noise; ORT then needs ~5 GB of RAM
    python bench/calibrate.py --skip-ort      # ptq only

Goals (issue 2): statistics pass <= 1.5x FP32 inference; >= 5x faster than ORT's Entropy
calibrator with 2048 bins; peak RSS <= 1/3 of it; entropy search ~1 s for ~100 tensors.
"""
from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

TASKS = ("baseline", "fp32", "exposed", "ptq", "cli", "ort_minmax", "ort_percentile", "ort_entropy",
         "ort_quantize_static")


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


def load_batches(work: Path) -> list[np.ndarray]:
    data = np.load(work / "batches.npz")
    return [data[k] for k in sorted(data.files, key=lambda k: int(k[1:]))]


# --- tasks (each runs in a fresh interpreter) ---------------------------------------------------

def task_baseline(work: Path) -> dict:
    import onnxruntime  # noqa: F401  (same imports as the others: the RSS floor)

    import ptq.collect  # noqa: F401
    load_batches(work)
    return {"seconds": 0.0}


def task_fp32(work: Path) -> dict:
    from ptq.backends.ort import OrtRunner

    batches = load_batches(work)
    start = time.perf_counter()
    with OrtRunner(work / "model.onnx") as runner:
        session = time.perf_counter() - start
        for x in batches:
            runner.infer({"input": x})
    return {"seconds": time.perf_counter() - start, "session": session}


def task_exposed(work: Path) -> dict:
    """Inference alone with every activation exposed (what the statistics pass must run)."""
    from ptq.backends.ort import OrtRunner
    from ptq.graph.edit import add_outputs
    from ptq.graph.model import activations, load_model

    batches = load_batches(work)
    model = load_model(work / "model.onnx")
    acts = [a for a in activations(model) if a.producer is not None]
    start = time.perf_counter()
    with OrtRunner(add_outputs(model, [a.info for a in acts])) as runner:
        for x in batches:
            runner.infer({"input": x}, [a.name for a in acts])
    return {"seconds": time.perf_counter() - start}


def task_ptq(work: Path) -> dict:
    """The statistics pass, then every algorithm on the same statistics (timed per algorithm)."""
    from ptq.calibrators import AlgorithmSettings, Method, compute_amax
    from ptq.collect import collect_statistics
    from ptq.datasets import Batch
    from ptq.graph.model import load_model

    batches = load_batches(work)
    model = load_model(work / "model.onnx")
    start = time.perf_counter()
    stats = collect_statistics(model, (Batch({"input": x}) for x in batches))
    stats_time = time.perf_counter() - start
    algo = {}
    for method in Method:
        t0 = time.perf_counter()
        for st in stats.tensors.values():
            counts, width = st.histogram.finalized()
            compute_amax(method, counts, width, st.min, st.max, AlgorithmSettings())
        algo[method.value] = time.perf_counter() - t0
    return {"seconds": time.perf_counter() - start, "stats": stats_time, "algorithms": algo,
            "tensors": len(stats.tensors), "samples": stats.num_samples}


def task_cli(work: Path) -> dict:
    from ptq.cli import main

    start = time.perf_counter()
    code = main(["calibrate", str(work / "model.onnx"), "--data", str(work / "images"), "--preset",
                 "efficientnet-lite", "--algo", "all", "-q", "-o", str(work / "cli_out")])
    if code != 0:
        raise SystemExit(f"ptq calibrate failed with exit code {code}")
    return {"seconds": time.perf_counter() - start}


def _ort_calibrator(work: Path, method: str, extra: dict) -> dict:
    from onnxruntime.quantization.calibrate import CalibrationMethod, create_calibrator

    reader = _reader(work)
    start = time.perf_counter()
    cal = create_calibrator(work / "model.onnx", None, str(work / f"augmented_{method}.onnx"),
                            calibrate_method=getattr(CalibrationMethod, method), extra_options=extra)
    cal.collect_data(reader)
    ranges = cal.compute_data()
    return {"seconds": time.perf_counter() - start, "tensors": len(ranges.data)}


def _reader(work: Path):
    from onnxruntime.quantization import CalibrationDataReader

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.items = iter(load_batches(work))

        def get_next(self):
            x = next(self.items, None)
            return None if x is None else {"input": x}
    return Reader()


def task_ort_minmax(work: Path) -> dict:
    return _ort_calibrator(work, "MinMax", {"symmetric": True})


def task_ort_percentile(work: Path) -> dict:
    return _ort_calibrator(work, "Percentile", {"num_bins": 2048, "percentile": 99.99, "symmetric": True})


def task_ort_entropy(work: Path) -> dict:
    return _ort_calibrator(work, "Entropy", {"num_bins": 2048, "num_quantized_bins": 128, "symmetric": True})


def task_ort_quantize_static(work: Path) -> dict:
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, quantize_static

    start = time.perf_counter()
    quantize_static(str(work / "model.onnx"), str(work / "model.qdq.onnx"), _reader(work),
                    quant_format=QuantFormat.QDQ, per_channel=True,
                    calibrate_method=CalibrationMethod.Entropy, extra_options={"ActivationSymmetric": True})
    return {"seconds": time.perf_counter() - start}


# --- orchestration -----------------------------------------------------------------------------

def prepare(work: Path, images: int) -> int:
    """Model, images (the real photos repeated), and the preprocessed batches ptq would feed."""
    from ptq.calibration import CalibrateConfig, PreprocessOptions, open_model_data
    from ptq.batch_size import auto_batch_size
    from ptq.datasets.samples import write_sample_photos
    from ptq.graph.model import activations, load_model
    from ptq.models.efficientnet_lite import save_efficientnet_lite0

    save_efficientnet_lite0(work / "model.onnx")
    photos = write_sample_photos(work / "photos")
    (work / "images").mkdir()
    for i in range(images):
        src = photos[i % len(photos)]
        shutil.copy(src, work / "images" / f"{i:04d}_{src.name}")
    model = load_model(work / "model.onnx")
    config = CalibrateConfig(preprocess=PreprocessOptions(preset="efficientnet-lite"))
    source = open_model_data(work / "model.onnx", model, work / "images", config)
    batch = auto_batch_size(activations(model), None, None)
    arrays = [b.feeds["input"] for b in source.batches(batch)]
    np.savez(work / "batches.npz", **{f"b{i}": x for i, x in enumerate(arrays)})
    return batch


def measure(task: str, work: Path) -> dict:
    cmd = [sys.executable, __file__, "--task", task, "--workdir", str(work)]
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"task {task} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def report(r: dict, images: int, batch: int) -> None:
    fp32, ours, ort = r["fp32"]["seconds"], r["ptq"], r.get("ort_entropy")
    rows = [
        ("plain FP32 inference (ORT, session + batches)", r["fp32"], 1.0, "anchor"),
        ("ptq statistics pass (one pass, all tensors)", {**ours, "seconds": ours["stats"]},
         ours["stats"] / fp32, "<= 1.5x FP32"),
        ("  inference alone with all outputs exposed", r["exposed"], r["exposed"]["seconds"] / fp32,
         "x FP32"),
        ("ptq stats + entropy/minmax/percentile/mse", ours, ours["seconds"] / fp32, "x FP32"),
        ("ptq calibrate --algo all (CLI, from JPEG/PNG)", r["cli"], r["cli"]["seconds"] / fp32, "x FP32"),
    ]
    for key, label in (("ort_minmax", "ORT MinMax calibrator"),
                       ("ort_percentile", "ORT Percentile calibrator (2048 bins)"),
                       ("ort_entropy", "ORT Entropy calibrator (2048 bins, 128 levels)"),
                       ("ort_quantize_static", "ORT quantize_static, Entropy (default 128 bins)")):
        if key in r:
            rows.append((label, r[key], r[key]["seconds"] / ours["seconds"], "x ptq stats+algos"))
    floor = r["baseline"]["peak_mb"]
    print(f"\nEfficientNet-Lite0, {images} real photos, batch {batch}, {ours['tensors']} tensors; "
          f"RSS floor (imports + batches) {floor:.0f} MB\n")
    print(f"{'measurement':50s} {'seconds':>8s} {'ratio':>7s}  {'peak MB':>8s}  ratio meaning")
    for label, res, ratio, meaning in rows:
        print(f"{label:50s} {res['seconds']:8.2f} {ratio:7.2f}  {res['peak_mb']:8.0f}  {meaning}")
    algo = ours["algorithms"]
    print("\nalgorithm time over all tensors: " + ", ".join(f"{k} {v:.2f} s" for k, v in algo.items()))
    print("\ngoals:")
    print(f"  statistics pass / FP32 inference = {ours['stats'] / fp32:.2f}  (goal <= 1.5)")
    if ort:
        speed = ort["seconds"] / ours["seconds"]
        mem = ours["peak_mb"] / ort["peak_mb"]
        print(f"  ORT Entropy(2048) time / ptq stats+algos = {speed:.1f}x  (goal >= 5)")
        print(f"  ptq peak RSS / ORT Entropy peak RSS = {mem:.2f}  (goal <= 0.33; above the "
              f"{floor:.0f} MB floor: {ours['peak_mb'] - floor:.0f} vs {ort['peak_mb'] - floor:.0f} MB)")
    print(f"  entropy search over {ours['tensors']} tensors = {algo['entropy']:.2f} s  (goal ~1 s)")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", type=int, default=40, help="photos repeated to this many (default 40)")
    p.add_argument("--skip-ort", action="store_true", help="measure ptq and FP32 inference only")
    p.add_argument("--task", choices=TASKS, help=argparse.SUPPRESS)
    p.add_argument("--workdir", type=Path, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.task:
        result = globals()[f"task_{args.task}"](args.workdir)
        print(json.dumps({**result, "peak_mb": peak_mb()}))
        return
    with tempfile.TemporaryDirectory(prefix="ptq-bench-") as tmp:
        work = Path(tmp)
        batch = prepare(work, args.images)
        tasks = [t for t in TASKS if not (args.skip_ort and t.startswith("ort_"))]
        results = {}
        for task in tasks:
            results[task] = measure(task, work)
            print(f"  {task}: {results[task]['seconds']:.2f} s, peak {results[task]['peak_mb']:.0f} MB",
                  file=sys.stderr)
        report(results, args.images, batch)


if __name__ == "__main__":
    main()
