"""Benchmark `ptq quantize` on the demo model: EfficientNet-Lite0, 20 real photos, CPU.

Measured in one run, against anchors measured in the same run:

  accuracy   top-1 agreement / mean logit cosine / max-abs vs FP32 on the 20 photos, for ptq's
             QDQ model (each calibration algorithm) and for ONNX Runtime's own quantize_static QDQ
             model calibrated on the same photos (QDQ, per-channel symmetric INT8 weights,
             symmetric INT8 activations; MinMax, plus Entropy/Percentile with --ort-all).
             Every model runs in ORT with graph optimizations off ("disable"): higher levels
             rewrite QDQ graphs and change the numbers (TENSORRT.md §5.1).
  time       ptq calibrate (all four algorithms, one pass) + one quantize call vs quantize_static
             (which calibrates and quantizes); and the per-call cost of `quantize` on an in-memory
             model, which the sensitivity analyzer pays once per variant, against one FP32 ORT
             inference pass over the 20 photos.

    python bench/quantize.py [--outdir DIR] [--repeat 10] [--ort-all]
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path


def timed(fn, repeat: int = 1) -> tuple[float, object]:
    """(median seconds, last result)."""
    times, result = [], None
    for _ in range(repeat):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def ort_quantize(model: Path, out: Path, images, method_name: str) -> None:
    from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat,
                                          QuantType, quantize_static)

    class Photos(CalibrationDataReader):
        def __init__(self) -> None:
            self.items = iter([{"input": x[None]} for x in images])

        def get_next(self):  # type: ignore[no-untyped-def]
            return next(self.items, None)

    quantize_static(str(model), str(out), Photos(), quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
                    calibrate_method=getattr(CalibrationMethod, method_name),
                    extra_options={"ActivationSymmetric": True, "WeightSymmetric": True})


def print_per_call(proto, model_path: Path, table, fp32_s: float, repeat: int) -> None:
    """What one sensitivity variant costs: quantize() on the in-memory model, several pin sets."""
    from ptq.quantization import Pin, quantizable_nodes, quantize

    nodes = quantizable_nodes(proto)
    per_call = {
        "in-memory model, no pins": lambda: quantize(proto, table),
        "in-memory model, 1 FP16 pin": lambda: quantize(proto, table, pins=[Pin(nodes[10], "fp16")]),
        f"in-memory, {len(nodes) - 1} FP32 pins": lambda: quantize(
            proto, table, pins=[Pin(n, "fp32") for n in nodes[1:]]),
        "model path (load + hash file)": lambda: quantize(model_path, table),
    }
    print(f"quantize per call (median of {repeat}; anchor: one FP32 ORT pass over the photos "
          f"= {fp32_s:.3f} s)")
    for label, fn in per_call.items():
        seconds, _ = timed(fn, repeat)
        print(f"  {label:34s} {seconds * 1000:7.1f} ms  = {seconds / fp32_s:5.2f}x the FP32 pass")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--outdir", type=Path, default=None)
    parser.add_argument("--repeat", type=int, default=10)
    parser.add_argument("--ort-all", action="store_true",
                        help="also ORT Entropy (128 bins) and Percentile (~1.7 GB RAM each)")
    args = parser.parse_args(argv)
    import logging

    logging.getLogger().setLevel(logging.ERROR)  # quantize_static's preprocessing advice
    from ptq.calibration import (CalibrateConfig, PreprocessOptions, calibrate, open_model_data,
                               write_outputs)
    from ptq.calibrators import Method
    from ptq.datasets.samples import write_sample_photos
    from ptq.evaluate import run_model
    from ptq.graph.model import load_model
    from ptq.models.efficientnet_lite import save_efficientnet_lite0
    from ptq.evaluate import measure_accuracy
    from ptq.quantization import QuantizeConfig, quantize, save_model

    outdir = args.outdir or Path(tempfile.mkdtemp(prefix="ptq-bench-quantize-"))
    outdir.mkdir(parents=True, exist_ok=True)
    model_path = save_efficientnet_lite0(outdir / "efficientnet_lite0.onnx")
    photos = outdir / "photos"
    write_sample_photos(photos)
    pre = PreprocessOptions(preset="efficientnet-lite")
    proto = load_model(model_path)
    batches = list(open_model_data(model_path, proto, photos, CalibrateConfig(preprocess=pre)).batches(20))
    images = batches[0].feeds["input"]
    fp32_s, _ = timed(lambda: run_model(proto, batches, optimization="disable"), 3)

    calib_s, table = timed(lambda: calibrate(model_path, photos, CalibrateConfig(
        algorithms=tuple(Method), preprocess=pre)))
    write_outputs(table, outdir)
    rows = []
    for method in Method:
        config = QuantizeConfig(algo=method.value)
        q_s, qdq = timed(lambda: quantize(model_path, table, config=config))
        save_model(qdq, outdir / f"ptq_{method.value}.onnx")
        rows.append((f"ptq {method.value}", calib_s + q_s,
                     measure_accuracy(proto, qdq, batches, optimization="disable")))
    for name in (["MinMax", "Entropy", "Percentile"] if args.ort_all else ["MinMax"]):
        out = outdir / f"ort_{name}.onnx"
        ort_s, _ = timed(lambda: ort_quantize(model_path, out, images, name))
        rows.append((f"ORT quantize_static {name}", ort_s,
                     measure_accuracy(proto, out, batches, optimization="disable")))

    print(f"EfficientNet-Lite0, {len(images)} real photos, ORT optimizations off; outputs in {outdir}")
    print(f"{'model':32s} {'time s':>8s} {'top-1 agr':>9s} {'cosine':>8s} {'max-abs':>8s}")
    for name, seconds, acc in rows:
        print(f"{name:32s} {seconds:8.2f} {acc['top1']:9.2f} {acc['cosine']:8.4f} {acc['max-abs']:8.3f}")
    print("  (ptq time = calibrate with all four algorithms in one pass + one quantize call)")
    ours, ort = rows[0][2], next(r for r in rows if r[0].endswith("MinMax"))
    print(f"ptq entropy vs ORT MinMax: top-1 agreement {ours['top1']:.2f} vs {ort[2]['top1']:.2f} "
          f"(difference {ours['top1'] - ort[2]['top1']:+.2f}); time ratio "
          f"{rows[0][1] / ort[1]:.2f}x of quantize_static")

    print_per_call(proto, model_path, table, fp32_s, args.repeat)
    return 0


if __name__ == "__main__":
    sys.exit(main())
