"""Benchmark `ptq sensitivity` on the demo model: EfficientNet-Lite0, the 20 real photos, CPU.

Anchor, measured in the same run over the same preprocessed images: one FP32 evaluation
in ONNX Runtime (session creation and inference timed apart), at the level the
reference uses ("all") and at "disable". The variants run at the sensitivity default,
"nchwc" (exact ONNX Q/DQ ops, FP32 NCHWc convolutions; see README). Per leave-one-out variant:

    build    ptq.quantization with the pin (graph edit + full onnx.checker)
    session  ONNX Runtime session creation
    infer    inference over the images + nothing else
    score    metrics against the reference

and the ratio  infer / FP32 infer  (the issue's goal: <= 1.2x, session creation apart),
plus the wall time per variant with --jobs 1 / 2 (threads) / 2 (processes), and the total
for the full demo analysis (all 60 quantizable nodes, leave-one-out).
Timings are minima over --repeat rounds, interleaved, because the machine is shared.

    python bench/sensitivity.py [--outdir DIR] [--repeat 3] [--variants 8] [--skip-total]
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path


def prepare(outdir: Path) -> tuple[Path, Path, Path]:
    from ptq.calibration import CalibrateConfig, PreprocessOptions, calibrate, write_outputs
    from ptq.datasets.samples import write_sample_photos
    from ptq.models.efficientnet_lite import save_efficientnet_lite0

    outdir.mkdir(parents=True, exist_ok=True)
    model = save_efficientnet_lite0(outdir / "efficientnet_lite0.onnx")
    photos = outdir / "photos"
    photos.mkdir(exist_ok=True)
    write_sample_photos(photos)
    pre = PreprocessOptions(preset="efficientnet-lite")
    table = calibrate(model, photos, CalibrateConfig(preprocess=pre))
    ranges = write_outputs(table, outdir / "calib")["ranges.json"]
    return model, photos, ranges


def fp32_eval(model, batches, optimization: str) -> tuple[float, float]:
    """(session creation s, inference s) of one FP32 evaluation."""
    from ptq.backends.ort import OrtRunner
    from ptq.evaluate import run_batches

    t0 = time.perf_counter()
    with OrtRunner(model, optimization=optimization) as runner:
        t1 = time.perf_counter()
        run_batches(runner, batches)
        t2 = time.perf_counter()
    return t1 - t0, t2 - t1


def per_variant(analysis, repeat: int, count: int) -> dict[str, float]:
    """Minimum over rounds of each part of a variant's cost, and FP32 anchors interleaved."""
    from ptq.quantization import Pin, Precision

    nodes = analysis.targets[:: max(1, len(analysis.targets) // count)][:count]
    best: dict[str, float] = {}
    for _ in range(repeat):
        for opt in ("all", "disable"):
            s, i = fp32_eval(analysis.model, analysis.eval.batches, opt)
            best[f"fp32_{opt}_session"] = min(best.get(f"fp32_{opt}_session", 1e9), s)
            best[f"fp32_{opt}_infer"] = min(best.get(f"fp32_{opt}_infer", 1e9), i)
        parts = {"build": [], "session": [], "infer": [], "total": []}
        for node in nodes:
            run = analysis.evaluator.evaluate((Pin(node, Precision.FP16),))
            for k, v in (("build", run.build_s), ("session", run.session_s), ("infer", run.infer_s),
                         ("total", run.seconds)):
                parts[k].append(v)
        for k, v in parts.items():
            best[k] = min(best.get(k, 1e9), sum(v) / len(v))
    best["score"] = best["total"] - best["build"] - best["session"] - best["infer"]
    return best


def cpu_seconds(model, batches, optimization: str, repeat: int) -> float:
    """Single-thread CPU seconds of one inference pass (robust to other load on the machine)."""
    from ptq.backends.ort import OrtRunner
    from ptq.evaluate import run_batches

    with OrtRunner(model, optimization=optimization, threads=1) as runner:
        run_batches(runner, batches)
        times = []
        for _ in range(repeat):
            t0 = time.process_time()
            run_batches(runner, batches)
            times.append(time.process_time() - t0)
    return min(times)


def wall_per_variant(model: Path, photos: Path, ranges: Path, jobs: int, executor: str,
                     nodes: tuple[str, ...]) -> tuple[float, float]:
    """(wall seconds per variant of the ranking phase, total seconds) for a node subset."""
    from ptq.calibration import PreprocessOptions
    from ptq.sensitivity import SensitivityConfig, analyze

    config = SensitivityConfig(metrics=("cosine", "top1"), jobs=jobs, executor=executor,
                               preprocess=PreprocessOptions(preset="efficientnet-lite"),
                               nodes=nodes)
    t = analyze(model, photos, config, ranges=ranges).result.timing
    return t["variants_s"] / len(nodes), t["total_s"]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--outdir", type=Path, default=None)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--variants", type=int, default=8, help="variants timed per round")
    p.add_argument("--skip-total", action="store_true", help="skip the full 60-variant analysis")
    args = p.parse_args(argv)
    outdir = args.outdir or Path(tempfile.mkdtemp(prefix="ptq-bench-sens-"))
    from ptq.calibration import PreprocessOptions
    from ptq.sensitivity import Analysis, SensitivityConfig

    model, photos, ranges = prepare(outdir)
    pre = PreprocessOptions(preset="efficientnet-lite")
    analysis = Analysis(model, photos, SensitivityConfig(metrics=("cosine", "top1"), preprocess=pre),
                        ranges)
    n = analysis.eval.num_samples
    b = per_variant(analysis, args.repeat, args.variants)
    print(f"EfficientNet-Lite0, {n} photos, batch {analysis.eval.batch_size}, "
          f"{len(analysis.nodes)} quantizable nodes, min of {args.repeat} rounds")
    print(f"FP32 evaluation  'all':     session {b['fp32_all_session']:.3f} s, "
          f"infer {b['fp32_all_infer']:.3f} s")
    print(f"FP32 evaluation  'disable': session {b['fp32_disable_session']:.3f} s, "
          f"infer {b['fp32_disable_infer']:.3f} s")
    print(f"variant (QDQ, '{analysis.config.optimization}'):   build {b['build']:.3f} s, session {b['session']:.3f} s, "
          f"infer {b['infer']:.3f} s, score {b['score']:.4f} s, total {b['total']:.3f} s")
    print(f"ratio infer / FP32 infer:  {b['infer'] / b['fp32_all_infer']:.2f}x vs 'all', "
          f"{b['infer'] / b['fp32_disable_infer']:.2f}x vs 'disable'   (goal <= 1.2x)")
    print(f"ratio (build+infer+score) / FP32 infer ('all'): "
          f"{(b['total'] - b['session']) / b['fp32_all_infer']:.2f}x; "
          f"whole variant / whole FP32 evaluation ('all'): "
          f"{b['total'] / (b['fp32_all_session'] + b['fp32_all_infer']):.2f}x")
    qdq = analysis.evaluator.build(())
    cpu = {name: cpu_seconds(m, analysis.eval.batches, opt, args.repeat)
           for name, m, opt in (("fp32 all", analysis.model, "all"),
                                ("fp32 disable", analysis.model, "disable"),
                                ("qdq disable", qdq, "disable"), ("qdq nchwc", qdq, "nchwc"))}
    print("single-thread CPU s per pass: " + ", ".join(f"{k} {v:.3f}" for k, v in cpu.items())
          + f"; qdq/fp32 'all': disable {cpu['qdq disable'] / cpu['fp32 all']:.2f}x, "
          f"nchwc {cpu['qdq nchwc'] / cpu['fp32 all']:.2f}x")
    subset = tuple(analysis.targets[:12])
    for jobs, executor in ((1, "thread"), (2, "thread"), (2, "process")):
        wall, _ = wall_per_variant(model, photos, ranges, jobs, executor, subset)
        print(f"wall per variant, 12 variants, --jobs {jobs} ({executor}): {wall:.3f} s "
              f"= {wall / b['fp32_all_infer']:.2f}x FP32 infer")
    if not args.skip_total:
        cfg = SensitivityConfig(metrics=("cosine", "top1"), preprocess=pre)
        from ptq.sensitivity import analyze
        t = analyze(model, photos, cfg, ranges=ranges).result.timing
        print(f"full demo analysis (leave-one-out, 60 variants, --jobs 1): total {t['total_s']:.1f} s "
              f"(reference {t['reference_s']:.2f} s, baseline {t['baseline_s']:.2f} s, "
              f"variants {t['variants_s']:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
