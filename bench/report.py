"""Time `ptq report` on the demo model: EfficientNet-Lite0 (95 activation tensors), 20 real photos.

Goal (issue 5): generating the report for a ~100-tensor model takes under 10 s.

The artifacts are made with the real steps first (calibrate with all four algorithms,
quantize with entropy ranges, and unless --no-sensitivity a leave-one-out sensitivity run
with an auto fallback), then the report is timed three ways:

  cold CLI     `python -m ptq report ...` in a fresh process: what a user waits for,
               imports (numpy, onnx, matplotlib) included
  in-process   write_report() with everything imported, split into load+checks / render
  ranges-only  the same with ranges.json alone

Ratios are printed against the 10 s goal and against the calibration step measured in
this same run (the anchor: the step that produced the ranges on the same machine).

    python bench/report.py [--outdir DIR] [--no-sensitivity] [--repeat 3]
"""
from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

GOAL_S = 10.0


def build_artifacts(outdir: Path, with_sensitivity: bool) -> dict[str, Path | float | None]:
    from ptq.calibration import CalibrateConfig, PreprocessOptions, calibrate, write_outputs
    from ptq.calibrators import Method
    from ptq.datasets.samples import write_sample_photos
    from ptq.models.efficientnet_lite import save_efficientnet_lite0
    from ptq.quantization import quantize, save_model

    model = save_efficientnet_lite0(outdir / "efficientnet_lite0.onnx")
    photos = outdir / "photos"
    write_sample_photos(photos)
    pre = PreprocessOptions(preset="efficientnet-lite")
    start = time.perf_counter()
    table = calibrate(model, photos, CalibrateConfig(algorithms=tuple(Method), preprocess=pre))
    calib_s = time.perf_counter() - start
    ranges = write_outputs(table, outdir)["ranges.json"]
    qdq = save_model(quantize(model, table), outdir / "efficientnet_lite0.int8.onnx")
    out: dict[str, Path | float | None] = {"ranges": ranges, "model": qdq, "sensitivity": None,
                                           "calib_s": calib_s, "tensors": len(table.tensors)}
    if with_sensitivity:
        from ptq.sensitivity import AutoConfig, SensitivityConfig, analyze
        from ptq.sensitivity import write_outputs as write_sensitivity

        config = SensitivityConfig(metrics=("cosine", "top1", "max-abs"), preprocess=pre,
                                   auto=AutoConfig(target="top1>=0.95", max_pins=3))
        start = time.perf_counter()
        result, files = write_sensitivity(analyze(model, photos, config, ranges=ranges), outdir)
        out["sens_s"] = time.perf_counter() - start
        out["sensitivity"] = files["sensitivity.json"]
        out["model"] = Path(result.auto.model_path)
    return out


def cold_cli(args: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "ptq", "report", "-q", *args], check=True)
    return time.perf_counter() - start


def in_process(ranges: Path, sensitivity: Path | None, model: Path | None,
               out: Path) -> tuple[float, float, float, int]:
    from ptq.atomic import write_text
    from ptq.reports import build_report, load_inputs

    start = time.perf_counter()
    inputs = load_inputs(ranges, sensitivity, model)
    loaded = time.perf_counter()
    html, _, _ = build_report(inputs)
    rendered = time.perf_counter()
    write_text(out, html)
    return loaded - start, rendered - loaded, time.perf_counter() - start, len(html.encode())


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--outdir", type=Path, default=None)
    ap.add_argument("--no-sensitivity", action="store_true")
    ap.add_argument("--repeat", type=int, default=3)
    a = ap.parse_args()
    outdir = a.outdir or Path(tempfile.mkdtemp(prefix="ptq-bench-report-"))
    outdir.mkdir(parents=True, exist_ok=True)
    art = build_artifacts(outdir, not a.no_sensitivity)
    print(f"EfficientNet-Lite0: {art['tensors']} activation tensors; calibration (4 algorithms, "
          f"20 photos) {art['calib_s']:.2f} s" + (f"; sensitivity {art['sens_s']:.1f} s"
                                                 if art.get("sens_s") else ""))
    full = ["--ranges", str(art["ranges"]), "--model", str(art["model"])]
    if art["sensitivity"]:
        full += ["--sensitivity", str(art["sensitivity"])]
    cold = [cold_cli([*full, "-o", str(outdir / "report.html")]) for _ in range(a.repeat)]
    warm = [in_process(art["ranges"], art["sensitivity"], art["model"], outdir / "report.html")
            for _ in range(a.repeat)]
    lean = [in_process(art["ranges"], None, None, outdir / "report_ranges.html")
            for _ in range(a.repeat)]
    med = statistics.median
    print(f"cold CLI (fresh process, imports included): median {med(cold):.2f} s "
          f"(runs {', '.join(f'{c:.2f}' for c in cold)}) = {med(cold) / GOAL_S:.2f}x the 10 s goal, "
          f"{med(cold) / art['calib_s']:.2f}x calibration")
    for name, runs in (("full report", warm), ("ranges only", lean)):
        print(f"{name:12s} in-process: median {med(r[2] for r in runs):.2f} s (load+checks "
              f"{med(r[0] for r in runs):.2f} s, render {med(r[1] for r in runs):.2f} s), "
              f"{runs[0][3] / 1024:.0f} KB")
    print(f"goal < {GOAL_S:.0f} s: {'met' if med(cold) < GOAL_S else 'NOT met'}; pages in {outdir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
