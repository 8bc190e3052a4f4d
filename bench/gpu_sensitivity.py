"""Where a sensitivity variant's time goes, on the EP at hand (CUDA or CPU), and the demo total.

EfficientNet-Lite0, the 20 bundled real photos repeated to --images (256: the issue's
figure), ranges from one `ptq calibrate`. Anchor, measured in the same run: one FP32
evaluation (session creation and inference apart) at ORT level "all", as the reference runs.
Then, per leave-one-out variant (minimum over --repeat rounds):

    build    ptq.quantization with the pin (graph edit + full onnx.checker)
    session  ONNX Runtime session creation (CUDA: includes cuDNN set-up)
    infer    inference over the images
and where the QDQ model's nodes ran (ORT's profiler: nodes per EP; any CPU fallback
costs two copies per fallback), first-run vs steady-state inference, and the whole
leave-one-out analysis (60 variants) with --jobs 1 (pipelined build) and in processes. The
variants run at the sensitivity default, "nchwc" (the CPU EP; other EPs run "disable").

    python bench/gpu_sensitivity.py --providers cuda [--images 256] [--json out.json]
"""
from __future__ import annotations

import argparse
import collections
import datetime
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def prepare(work: Path, images: int, providers: str) -> tuple[Path, Path, Path]:
    from ptq.calibration import CalibrateConfig, PreprocessOptions, calibrate, open_model_data, write_outputs
    from ptq.datasets.samples import write_sample_photos
    from ptq.graph.model import load_model
    from ptq.models.efficientnet_lite import save_efficientnet_lite0

    model = save_efficientnet_lite0(work / "efficientnet_lite0.onnx")
    photos = work / "photos"
    photos.mkdir(exist_ok=True)
    write_sample_photos(photos)
    pre = PreprocessOptions(preset="efficientnet-lite")
    table = calibrate(model, photos, CalibrateConfig(preprocess=pre, providers=providers))
    ranges = write_outputs(table, work / "calib")["ranges.json"]
    source = open_model_data(model, load_model(model), photos, CalibrateConfig(preprocess=pre))
    base = np.concatenate([b.feeds["input"] for b in source.batches(8)])
    data = np.concatenate([base] * (images // len(base) + 1))[:images]
    np.save(work / "eval.npy", data)
    return model, work / "eval.npy", ranges


def placement(model, providers: str, optimization: str, batches) -> dict:
    """Nodes per execution provider, and the op types that fell back to the CPU."""
    import onnxruntime as ort

    from ptq.backends.ort import CUDA_OPTIONS, OPT_LEVELS, resolve_providers

    opts = ort.SessionOptions()
    opts.graph_optimization_level = OPT_LEVELS[optimization]
    opts.enable_profiling = True
    opts.profile_file_prefix = str(Path(tempfile.mkdtemp()) / "prof")
    names = resolve_providers(providers)
    session = ort.InferenceSession(model.SerializeToString(), opts, providers=names,
                                   provider_options=[CUDA_OPTIONS if n.startswith("CUDA") else {}
                                                     for n in names])
    session.run(None, batches[0].feeds)
    events = json.loads(Path(session.end_profiling()).read_text())
    by_ep: collections.Counter = collections.Counter()
    cpu_ops: collections.Counter = collections.Counter()
    seen = set()
    for e in events:
        args = e.get("args", {})
        if e.get("cat") == "Node" and "provider" in args and e["name"] not in seen:
            seen.add(e["name"])
            by_ep[args["provider"]] += 1
            if args["provider"] == "CPUExecutionProvider":
                cpu_ops[args.get("op_name", "?")] += 1
    return {"nodes_by_ep": dict(by_ep), "cpu_ops": dict(cpu_ops)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--providers", choices=["cpu", "cuda"], default="cpu")
    p.add_argument("--images", type=int, default=256)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--variants", type=int, default=6, help="variants timed per round")
    p.add_argument("--jobs", type=int, nargs="*", default=[1, 4],
                   help="full analyses to run: 1 = threads (pipelined), N>1 = N at once (--executor)")
    p.add_argument("--executor", choices=["thread", "process"], default="process",
                   help="how --jobs N>1 runs its variants (ptq's default is thread)")
    p.add_argument("--json", type=Path, default=None)
    p.add_argument("--cudnn", choices=["HEURISTIC", "DEFAULT", "EXHAUSTIVE"], default=None,
                   help="override ptq's cuDNN convolution algorithm search (to compare)")
    args = p.parse_args(argv)
    if args.cudnn:
        from ptq.backends import ort as ptq_ort
        ptq_ort.CUDA_OPTIONS["cudnn_conv_algo_search"] = args.cudnn
    from ptq.backends.ort import OrtRunner
    from ptq.calibration import PreprocessOptions
    from ptq.evaluate import run_batches
    from ptq.quantization import Pin, Precision
    from ptq.sensitivity import Analysis, SensitivityConfig, analyze

    work = Path(tempfile.mkdtemp(prefix="ptq-bench-gsens-"))
    model, data, ranges = prepare(work, args.images, args.providers)
    pre = PreprocessOptions(preset="efficientnet-lite")
    config = SensitivityConfig(metrics=("cosine", "top1"), preprocess=pre, providers=args.providers)
    t0 = time.perf_counter()
    analysis = Analysis(model, data, config, ranges)
    prepare_s = time.perf_counter() - t0
    batches = analysis.eval.batches
    out: dict = {"date": datetime.date.today().isoformat(), "cores": os.cpu_count(),
                 "cudnn": args.cudnn or "HEURISTIC",
                 "providers": args.providers, "images": analysis.eval.num_samples,
                 "batch": analysis.eval.batch_size, "nodes": len(analysis.nodes),
                 "prepare_s": prepare_s, "timing": dict(analysis.timing),
                 "variant_level": config.optimization}
    try:
        import torch
        out["gpu"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    except ImportError:
        out["gpu"] = None
    best: dict[str, float] = {}

    def keep(key: str, value: float) -> None:
        best[key] = min(best.get(key, 1e9), value)

    nodes = analysis.targets[:: max(1, len(analysis.targets) // args.variants)][: args.variants]
    qdq = analysis.evaluator.build(())
    for _ in range(args.repeat):
        for name, m, opt in (("fp32_all", analysis.model, "all"), ("fp32_disable", analysis.model, "disable"),
                             ("qdq_disable", qdq, "disable"), ("qdq_nchwc", qdq, "nchwc")):
            t0 = time.perf_counter()
            with OrtRunner(m, providers=args.providers, optimization=opt) as runner:
                t1 = time.perf_counter()
                run_batches(runner, batches)
                t2 = time.perf_counter()
                run_batches(runner, batches)
                t3 = time.perf_counter()
            keep(f"{name}_session", t1 - t0)
            keep(f"{name}_first", t2 - t1)
            keep(f"{name}_steady", t3 - t2)
        parts = collections.defaultdict(list)
        for node in nodes:
            run = analysis.evaluator.evaluate((Pin(node, Precision.FP16),))
            for k in ("build_s", "session_s", "infer_s", "seconds"):
                parts[k].append(getattr(run, k))
        for k, v in parts.items():
            keep(f"variant_{k}", sum(v) / len(v))
    out["best"] = best
    for name, m, opt in (("fp32_all", analysis.model, "all"), ("qdq_disable", qdq, "disable")):
        try:
            out[f"placement_{name}"] = placement(m, args.providers, opt, batches)
        except Exception as exc:  # profiling is a diagnostic: never lose the timings for it
            out[f"placement_{name}"] = {"error": str(exc)}
    out["full"] = {}
    for jobs in args.jobs:
        cfg = SensitivityConfig(metrics=("cosine", "top1"), preprocess=pre, providers=args.providers,
                                jobs=jobs, executor="thread" if jobs == 1 else args.executor)
        t0 = time.perf_counter()
        result = analyze(model, data, cfg, ranges=ranges).result
        wall = time.perf_counter() - t0
        out["full"][jobs] = {"wall_s": wall, "executor": cfg.executor, "variants": len(result.layers),
                             **{k: v for k, v in result.timing.items() if isinstance(v, (int, float))}}
        print(f"  full analysis --jobs {jobs}: {wall:.1f} s", file=sys.stderr, flush=True)
    report(out)
    if args.json:
        args.json.write_text(json.dumps(out, indent=1, default=str))
    return 0


def report(o: dict) -> None:
    b = o["best"]
    fp32 = b["fp32_all_session"] + b["fp32_all_first"]  # one fresh FP32 evaluation, as a variant is
    print(f"\nptq sensitivity on {o['providers']} ({o['gpu'] or 'no GPU'}, {o['cores']} cores, {o['date']}, "
          f"cuDNN search {o['cudnn']}): EfficientNet-Lite0, {o['images']} images, batch {o['batch']}, "
          f"{o['nodes']} nodes")
    for name in ("fp32_all", "fp32_disable", "qdq_disable", "qdq_nchwc"):
        print(f"  {name:13s} session {b[name + '_session']:.3f} s, first run {b[name + '_first']:.3f} s, "
              f"steady {b[name + '_steady']:.3f} s")
    print(f"  variant: build {b['variant_build_s']:.3f} s, session {b['variant_session_s']:.3f} s, "
          f"infer {b['variant_infer_s']:.3f} s, total {b['variant_seconds']:.3f} s")
    print(f"  whole variant / one FP32 evaluation (fresh session + run, 'all') = "
          f"{b['variant_seconds'] / fp32:.2f}x  (goal <= 2); variant infer / FP32 first run = "
          f"{b['variant_infer_s'] / b['fp32_all_first']:.2f}x; QDQ steady / FP32 steady = "
          f"{b['qdq_disable_steady'] / b['fp32_all_steady']:.2f}x at 'disable', "
          f"{b['qdq_nchwc_steady'] / b['fp32_all_steady']:.2f}x at 'nchwc' (the variants' level "
          f"on the CPU EP: {o.get('variant_level')})")
    for key in ("placement_fp32_all", "placement_qdq_disable"):
        print(f"  {key[10:]}: {o.get(key)}")
    for jobs, f in o["full"].items():
        each = f.get("variants_s", float("nan")) / max(1, f.get("variants", 0))
        print(f"  full demo analysis, --jobs {jobs}{' (' + f.get('executor', 'process') + 's)' if int(jobs) > 1 else ''}: "
              f"{f['wall_s']:.1f} s wall (variants {f.get('variants_s', float('nan')):.1f} s; "
              f"goal < 15 s on the GPU); per variant {each:.3f} s = {each / fp32:.2f}x one FP32 "
              f"evaluation (goal <= 2)")


if __name__ == "__main__":
    sys.exit(main())
