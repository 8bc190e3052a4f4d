"""`ptq calibrate --algo all` against plain FP32 inference, whole process against whole process.

Issue 11's ratios from one run, on the machine at hand (a GPU box with onnxruntime-gpu, or a
CPU box): EfficientNet-Lite0, the 20 bundled real photos preprocessed once and repeated to
N samples in a .npy (memory-mapped by both sides), for each N of --images:

    fp32         python: import onnxruntime, open the .npy, create the session, run every batch
    calibrate    python -m ptq calibrate model.onnx --data calib.npy --algo all --providers P
    ort_entropy  ONNX Runtime's Entropy calibrator, 2048 bins (first N only: it keeps every
                 activation of every batch, so it grows with N)

Each runs in its own process, timed from start to exit; its peak RSS is its own (wait4).
Both sides use the same batch size (ptq's automatic one for the device it will use).

    python bench/gpu_calibrate.py --providers cuda --images 256 2048 [--json out.json]
    python bench/gpu_calibrate.py --providers cpu --images 256 1024 --ort-images 64

Goals (issue 11): calibrate <= 1.5x FP32 (GPU, CPU with all cores), <= 2.5x on a 2-core
CPU; peak RSS flat (+-10%) from the first N to the last; >= 10x faster than ORT's
2048-bin entropy calibrator at <= 1/10 of its memory.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

FP32 = """
import sys, numpy as np, onnxruntime as ort
model, data, providers, batch = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
if providers == "cuda":
    ort.preload_dlls()
    names = ["CUDAExecutionProvider", "CPUExecutionProvider"]
    opts = [{"cudnn_conv_algo_search": "HEURISTIC", "use_tf32": "0"}, {}]   # as ptq's sessions
else:
    names, opts = ["CPUExecutionProvider"], [{}]
session = ort.InferenceSession(model, providers=names, provider_options=opts)
x = np.load(data, mmap_mode="r")   # read per batch with file reads, as ptq does
row = int(np.prod(x.shape[1:]))
for s in range(0, len(x), batch):
    n = min(batch, len(x) - s)
    b = np.fromfile(data, np.float32, count=n * row, offset=x.offset + s * row * 4)
    session.run(None, {"input": b.reshape(n, *x.shape[1:])})
print(session.get_providers()[0])
"""

ORT_ENTROPY = """
import sys, numpy as np, onnxruntime as ort
from onnxruntime.quantization import CalibrationDataReader
from onnxruntime.quantization.calibrate import CalibrationMethod, create_calibrator
model, data, providers, batch, work = sys.argv[1:6]
batch = int(batch)
if providers == "cuda":
    ort.preload_dlls()
names = ["CUDAExecutionProvider", "CPUExecutionProvider"] if providers == "cuda" else ["CPUExecutionProvider"]
x = np.load(data, mmap_mode="r")
class Reader(CalibrationDataReader):
    def __init__(self):
        self.s = 0
    def get_next(self):
        if self.s >= len(x):
            return None
        self.s += batch
        row = int(np.prod(x.shape[1:]))
        b = np.fromfile(data, np.float32, count=batch * row, offset=x.offset + (self.s - batch) * row * 4)
        return {"input": b.reshape(batch, *x.shape[1:])}
cal = create_calibrator(model, None, work + "/augmented.onnx", calibrate_method=CalibrationMethod.Entropy,
                        providers=names, extra_options={"num_bins": 2048, "num_quantized_bins": 128,
                                                        "symmetric": True})
cal.collect_data(Reader())
print(len(cal.compute_data().data))
"""


def timed(cmd: list[str], env: dict | None = None) -> dict:
    """Wall seconds from spawn to exit and the child's own peak RSS."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    out, err = proc.communicate()
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd[:4])} failed ({proc.returncode}):\n{err[-3000:]}")
    return {"seconds": seconds, "stdout": out.strip().splitlines()[-1:] if out.strip() else [],
            "rss_mb": _last_rss(err)}


def _last_rss(err: str) -> float:
    for line in reversed(err.splitlines()):
        if line.startswith("PEAK_RSS_MB "):
            return float(line.split()[1])
    return float("nan")


# Every child reports its own peak RSS on exit (stderr): VmHWM, which starts afresh at exec,
# not ru_maxrss, which Linux carries over from the forking parent (this script, whose RSS
# holds the prepared data) and so would hide the child's own figure.
RSS_HOOK = ("import atexit, re, sys; atexit.register(lambda: print('PEAK_RSS_MB', int(re.search("
            "r'VmHWM:\\s+(\\d+)', open('/proc/self/status').read()).group(1)) / 1024, "
            "file=sys.stderr))\n")


def python(code: str, *args: str) -> list[str]:
    return [sys.executable, "-c", RSS_HOOK + code, *args]


def prepare(work: Path, counts: list[int]) -> tuple[Path, dict[int, Path]]:
    from ptq.calibration import CalibrateConfig, PreprocessOptions, open_model_data
    from ptq.datasets.samples import write_sample_photos
    from ptq.graph.model import load_model
    from ptq.models.efficientnet_lite import save_efficientnet_lite0

    model = save_efficientnet_lite0(work / "model.onnx")
    photos = work / "photos"
    photos.mkdir()
    write_sample_photos(photos)
    config = CalibrateConfig(preprocess=PreprocessOptions(preset="efficientnet-lite"))
    source = open_model_data(model, load_model(model), photos, config)
    base = np.concatenate([b.feeds["input"] for b in source.batches(8)])
    files = {}
    for n in counts:
        files[n] = work / f"calib_{n}.npy"
        out = np.lib.format.open_memmap(files[n], mode="w+", dtype=np.float32,
                                        shape=(n, *base.shape[1:]))
        for s in range(0, n, len(base)):
            out[s:s + len(base)] = base[: min(len(base), n - s)]
        out.flush()
        del out
    return model, files


def breakdown(model: Path, data: Path, providers: str, batch: int) -> dict:
    """In-process seconds of each part (after imports), at the first --images."""
    from ptq.backends.ort import OrtRunner
    from ptq.calibration import CalibrateConfig, build_table
    from ptq.calibrators import Method
    from ptq.collect import collect_statistics, statistics_runner
    from ptq.datasets.arrays import load_arrays
    from ptq.graph.edit import add_outputs
    from ptq.graph.model import activations, graph_inputs, load_model

    from ptq import kernels
    from ptq.graph.derived import relu_like

    proto = load_model(model)
    source = load_arrays(data, graph_inputs(proto))
    every = activations(proto)
    # what the pass exposes: on the host, Relu/Clip outputs are derived, not copied out
    derived = relu_like(proto, every) if providers == "cpu" else {}
    acts = [a for a in every if a.producer is not None and a.name not in derived]
    if providers == "cpu":
        kernels.warm_up()  # as `calibrate` does at its start: the load is not the pass's time
        kernels.kernel_name(wait=True)
    out = {}
    names = [a.name for a in acts]
    t0 = time.perf_counter()
    with OrtRunner(add_outputs(proto, [a.info for a in acts]), providers=providers) as runner:
        t1 = time.perf_counter()
        for b in source.batches(batch):
            runner.infer(b.feeds, names)
    out["exposed_session_s"], out["exposed_infer_s"] = t1 - t0, time.perf_counter() - t1
    if providers == "cpu":  # what the pass runs: NCHWc tensors exposed in their blocks
        t0 = time.perf_counter()
        with statistics_runner(add_outputs(proto, [a.info for a in acts]), names, providers,
                               blocked=True) as runner:
            blocked = runner.blocked
            fetch = [blocked[n].output if n in blocked else n for n in names]
            t1 = time.perf_counter()
            for b in source.batches(batch):
                runner.infer(b.feeds, fetch)
        out["blocked_session_s"], out["blocked_infer_s"] = t1 - t0, time.perf_counter() - t1
        out["blocked_tensors"] = len(blocked)
    t0 = time.perf_counter()
    with OrtRunner(proto, providers=providers) as runner:
        t1 = time.perf_counter()
        for b in source.batches(batch):
            runner.infer(b.feeds)
    out["plain_infer_s"] = time.perf_counter() - t1
    t0 = time.perf_counter()
    stats = collect_statistics(proto, source.batches(batch), providers=providers)
    out["statistics_s"] = time.perf_counter() - t0
    out["kernel"], out["device"] = stats.kernel, stats.device
    t0 = time.perf_counter()
    build_table(stats, CalibrateConfig(algorithms=tuple(Method)), {}, {}, {})
    out["algorithms_s"] = time.perf_counter() - t0
    return out


def device_split(model: Path, data: Path, batch: int) -> dict:
    """Milliseconds a batch of each part of the GPU statistics pass (ptq.collect._device_pass's
    steps), the device synchronised after each part so that its GPU time is its own: the
    parts add up to more than the unsynchronised pass. The first batch (cuDNN's set-up) apart."""
    import torch

    from ptq.backends.ort import OrtRunner
    from ptq.collect import TensorStatistics
    from ptq.cuda_stats import DeviceOutputs
    from ptq.datasets.arrays import load_arrays
    from ptq.graph.edit import add_outputs
    from ptq.graph.model import activations, graph_inputs, load_model
    from ptq.histogram import Histogram

    proto = load_model(model)
    acts = activations(proto)
    names = [a.name for a in acts if a.producer is not None]
    inputs = [a.name for a in acts if a.producer is None]
    stats = {a.name: TensorStatistics(a, Histogram()) for a in acts}
    keys = ("ort_run", "upload", "minmax", "count_and_sums", "transfer")
    rows = []
    augmented = add_outputs(proto, [a.info for a in acts if a.producer is not None])
    with OrtRunner(augmented, providers="cuda", optimization="all",
                   session_config={"session.intra_op.allow_spinning": "0"}) as runner:
        outputs = DeviceOutputs(runner.session, names, runner.device_id)
        for b in load_arrays(data, graph_inputs(proto)).batches(batch):
            marks = [time.perf_counter()]

            def lap() -> None:
                torch.cuda.synchronize()
                marks.append(time.perf_counter())

            values = outputs.run(b.feeds)
            lap()
            values.update((n, outputs.upload(b.feeds[n])) for n in inputs)
            lap()
            minmax = outputs.minmax(values)
            lap()
            for name, st in stats.items():
                st.update(values[name], minmax=minmax[name])
            lap()
            outputs.add_pending(values, {n: st.histogram for n, st in stats.items()})
            lap()
            rows.append([1e3 * (t1 - t0) for t0, t1 in zip(marks, marks[1:])])
    rest = np.array(rows[1:]) if len(rows) > 1 else np.array(rows)
    return {"batches": len(rows), "values_per_batch": int(sum(v.size for v in values.values())),
            "first_batch_ms": dict(zip(keys, np.round(rows[0], 2).tolist())),
            "per_batch_ms": dict(zip(keys, np.round(rest.mean(axis=0), 3).tolist())),
            "total_s": round(float(np.sum(rows)) / 1e3, 3)}


def machine(providers: str) -> dict:
    info = {"date": datetime.date.today().isoformat(), "cores": os.cpu_count(),
            "providers": providers, "gpu": None}
    if providers == "cuda":
        try:
            out = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"],
                                 capture_output=True, text=True, timeout=30)
            info["gpu"] = out.stdout.strip().splitlines()[0]
        except (OSError, subprocess.SubprocessError, IndexError):
            info["gpu"] = "unknown"
    import onnxruntime
    info["onnxruntime"] = onnxruntime.__version__
    return info


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--providers", choices=["cpu", "cuda"], default="cpu")
    p.add_argument("--images", type=int, nargs="+", default=[256, 2048])
    p.add_argument("--ort-images", type=int, default=None,
                   help="images for ORT's entropy calibrator (default: the first --images; 0 skips it)")
    p.add_argument("--repeat", type=int, default=1, help="runs of each measurement (minimum kept)")
    p.add_argument("--batch", type=int, default=None,
                   help="batch size of both sides (default: ptq's automatic one for the device)")
    p.add_argument("--json", type=Path, default=None, help="also write the figures here")
    p.add_argument("--workdir", type=Path, default=None)
    p.add_argument("--breakdown", action="store_true",
                   help="also time the parts in-process at the first --images: exposed inference "
                        "alone, the statistics pass, the algorithms; with statistics on the GPU, "
                        "the per-batch parts of that pass at every --images")
    args = p.parse_args(argv)
    from ptq.batch_size import auto_batch_size
    from ptq.collect import planned_device
    from ptq.graph.model import activations, load_model

    ort_n = args.images[0] if args.ort_images is None else args.ort_images
    work = args.workdir or Path(tempfile.mkdtemp(prefix="ptq-bench-gpu-"))
    work.mkdir(parents=True, exist_ok=True)
    model, files = prepare(work, sorted({*args.images, *([ort_n] if ort_n else [])}))
    device = planned_device(args.providers)
    batch = args.batch or auto_batch_size(activations(load_model(model)), None, None, device)
    env = dict(os.environ)
    results: dict = {"machine": machine(args.providers), "batch": batch, "statistics_device": device,
                     "runs": {}}
    print(f"# {results['machine']}; batch {batch}; statistics on {device}", file=sys.stderr)

    def best(cmd: list[str]) -> dict:
        runs = [timed(cmd, env) for _ in range(args.repeat)]
        return min(runs, key=lambda r: r["seconds"]) | {"rss_mb": max(r["rss_mb"] for r in runs)}

    for n in args.images:
        fp32 = best(python(FP32, str(model), str(files[n]), args.providers, str(batch)))
        cal = best(python("import sys; from ptq.cli import main; sys.exit(main(sys.argv[1:]))",
                          "calibrate", str(model), "--data", str(files[n]), "--algo", "all",
                          "--providers", args.providers, "--batch-size", str(batch),
                          "-o", str(work / f"out_{n}")))
        ranges = json.loads((work / f"out_{n}" / "ranges.json").read_text())
        results["runs"][str(n)] = {"fp32": fp32, "calibrate": cal,
                                   **{k: ranges["settings"].get(k) for k in
                                      ("provider_used", "statistics_device", "histogram_kernel")}}
        print(f"  {n} images: fp32 {fp32['seconds']:.2f} s ({fp32['stdout']}), calibrate "
              f"{cal['seconds']:.2f} s", file=sys.stderr)
    if ort_n:
        if str(ort_n) not in results["runs"]:
            fp32 = best(python(FP32, str(model), str(files[ort_n]), args.providers, str(batch)))
            cal = best(python("import sys; from ptq.cli import main; sys.exit(main(sys.argv[1:]))",
                              "calibrate", str(model), "--data", str(files[ort_n]), "--algo", "all",
                              "--providers", args.providers, "--batch-size", str(batch), "-q",
                              "-o", str(work / f"out_{ort_n}")))
            results["runs"][str(ort_n)] = {"fp32": fp32, "calibrate": cal}
        # ORT stacks every batch's outputs into one array: all its batches must be equal.
        ort_batch = max(d for d in range(1, batch + 1) if ort_n % d == 0)
        results["ort_entropy"] = {"images": ort_n, "batch": ort_batch, **timed(
            python(ORT_ENTROPY, str(model), str(files[ort_n]), args.providers, str(ort_batch),
                   str(work)), env)}
    if args.breakdown:
        results["breakdown"] = {"images": args.images[0],
                                **breakdown(model, files[args.images[0]], args.providers, batch)}
        if device == "cuda":
            results["device_split"] = {str(n): device_split(model, files[n], batch)
                                       for n in args.images}
    report(results)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1, default=str))
    return 0


def report(r: dict) -> None:
    m = r["machine"]
    print(f"\nptq calibrate --algo all vs plain FP32 inference, whole processes; EfficientNet-Lite0, "
          f"{'GPU ' + m['gpu'] if m['gpu'] else 'no GPU'}, {m['cores']} cores, providers "
          f"{m['providers']}, onnxruntime {m['onnxruntime']}, batch {r['batch']}, {m['date']}\n")
    print(f"{'images':>7s} {'FP32 s':>8s} {'ptq s':>8s} {'ratio':>6s} {'FP32 MB':>8s} {'ptq MB':>8s}  EP used / stats on")
    runs = r["runs"]
    for n in sorted(runs, key=int):
        f, c = runs[n]["fp32"], runs[n]["calibrate"]
        print(f"{n:>7} {f['seconds']:8.2f} {c['seconds']:8.2f} {c['seconds'] / f['seconds']:6.2f} "
              f"{f['rss_mb']:8.0f} {c['rss_mb']:8.0f}  {runs[n].get('provider_used')} / "
              f"{runs[n].get('statistics_device')} ({runs[n].get('histogram_kernel')})")
    ns = sorted(runs, key=int)
    goal = 1.5 if (m["gpu"] or (m["cores"] or 0) > 2) else 2.5
    print("\ngoals:")
    for n in ns:
        ratio = runs[n]["calibrate"]["seconds"] / runs[n]["fp32"]["seconds"]
        print(f"  calibrate / FP32 at {n} images = {ratio:.2f}  (goal <= {goal})")
    if len(ns) > 1:
        lo, hi = runs[ns[0]]["calibrate"]["rss_mb"], runs[ns[-1]]["calibrate"]["rss_mb"]
        print(f"  peak RSS {ns[0]} -> {ns[-1]} images: {lo:.0f} -> {hi:.0f} MB = {hi / lo - 1:+.1%}  "
              f"(goal within +-10%)")
    if "breakdown" in r:
        print(f"  in-process parts: {r['breakdown']}")
    for n, split in r.get("device_split", {}).items():
        print(f"  GPU statistics pass at {n} images, ms a batch (synchronised parts): {split}")
    if "ort_entropy" in r:
        o = r["ort_entropy"]
        c = runs[str(o["images"])]["calibrate"]
        print(f"  ORT Entropy(2048) at {o['images']} images: {o['seconds']:.1f} s, {o['rss_mb']:.0f} MB; "
              f"ORT / ptq time = {o['seconds'] / c['seconds']:.1f}x (goal >= 10), "
              f"ptq / ORT peak RSS = {c['rss_mb'] / o['rss_mb']:.2f} (goal <= 0.10)")


if __name__ == "__main__":
    sys.exit(main())
