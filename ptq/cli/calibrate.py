"""`ptq calibrate`: one statistics pass, every algorithm, ranges.json + TensorRT caches."""
from __future__ import annotations

import argparse
import time
from pathlib import Path

from ptq.atomic import check_writable
from ptq.cache import DEFAULT_TRT_VERSION, ENTROPY_HEADER, MINMAX_HEADER, version_int
from ptq.calibration import (MAX_NUM_BINS, MIN_NUM_BINS, CalibrateConfig, calibrate,
                             check_num_bins, disagreement, write_outputs)
from ptq.calibrators import DEFAULT_METHOD, AlgorithmSettings, Method
from ptq.cli.common import (add_data_args, add_runtime_args, default_outdir, new_parser,
                            positive, preprocess_options, progress_bar)
from ptq.errors import ConfigError
from ptq.histogram import DEFAULT_NUM_BINS

DESCRIPTION = """\
Run the FP32 model in ONNX Runtime over calibration data, stream every float
activation into a running min/max and a 2048-bin |x| histogram (nothing is kept
between batches), and compute INT8 ranges with one or more algorithms:

  auto        (default) per tensor, whichever of the four below loses least when the
              tensor is rounded to INT8 (expected squared error on its histogram; the
              choice and every candidate's error are in ranges.json and the report),
              plus per-channel means so `ptq quantize` can correct the FP32 biases for
              the mean shift of INT8 weight rounding
  entropy     KL-divergence search as in TensorRT's EntropyCalibrator2
  minmax      max |x| seen (TensorRT MinMaxCalibrator)
  percentile  the --percentile of |x| (default 99.99)
  mse         the threshold with least INT8 quantization error on the histogram
  all         all of them from the same statistics, with a comparison

The histogram's range is the next power of two above max|x|, doubled (bins merged
pairwise, losslessly) when a later batch exceeds it: ranges do not depend on the
batch size or the order of the images.

Writes to OUTDIR: ranges.json (per tensor: producer node, shape, min/max, amax per
algorithm, histogram) and calib.<algo>.cache in TensorRT's calibration-cache
format (trtexec --int8 --calib=..., TensorRT <= 10, or ModelOpt's
--calibration_cache_path)."""

EPILOG = """\
examples:
  ptq calibrate model.onnx --data val_images/ --algo all -o out/
  ptq calibrate model.onnx --data calib.npz --algo entropy percentile --percentile 99.9
  ptq calibrate yolo.onnx --data imgs/ --preset raw --std 255 --size 640 --max-images 500

cache header: trtexec's built-in calibrator is EntropyCalibrator2 and skips caches
with another header; use --cache-header entropy2 to feed a minmax cache to trtexec."""


def add_parser(subparsers, name: str, summary: str) -> argparse.ArgumentParser:
    p = new_parser(subparsers, name, summary, DESCRIPTION, EPILOG)
    p.add_argument("model", help="FP32 ONNX model (external data files next to it are fine)")
    add_data_args(p)
    g = p.add_argument_group("algorithms")
    g.add_argument("--algo", nargs="+", default=[DEFAULT_METHOD.value], metavar="ALGO",
                   help="auto, entropy, minmax, percentile, mse or all (several allowed; "
                        f"default: {DEFAULT_METHOD.value})")
    g.add_argument("--percentile", type=float, default=AlgorithmSettings().percentile,
                   help="percentile for --algo percentile (default: %(default)s)")
    g.add_argument("--num-bins", type=int, default=DEFAULT_NUM_BINS,
                   help=f"histogram bins over a power-of-two range, {MIN_NUM_BINS}..{MAX_NUM_BINS} "
                        "(default: %(default)s)")
    add_runtime_args(p)
    g = p.add_argument_group("output")
    g.add_argument("-o", "--outdir", default=None,
                   help="output folder (default: ptq-out/<model name>)")
    g.add_argument("--trt-version", default=DEFAULT_TRT_VERSION,
                   help="TensorRT version named in the cache header, e.g. 8.6.1 or 10.3.0 "
                        "(default: %(default)s; TensorRT may skip a cache from another version)")
    g.add_argument("--cache-header", choices=["auto", "entropy2", "minmax"], default="auto",
                   help="auto: MinMaxCalibration for minmax, EntropyCalibration2 otherwise")
    p.set_defaults(run=run)
    return p


def parse_algorithms(names: list[str]) -> tuple[Method, ...]:
    out: list[Method] = []
    for name in (n for item in names for n in item.split(",") if n):
        if name.lower() == "all":
            return tuple(Method)
        try:
            method = Method.parse(name)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        if method not in out:
            out.append(method)
    return tuple(out)


def run(args: argparse.Namespace) -> int:
    for flag in ("batch_size", "max_images"):
        positive(flag.replace("_", "-"), getattr(args, flag))
    check_num_bins(args.num_bins)
    if not 0 < args.percentile <= 100:
        raise ConfigError(f"--percentile must be in (0, 100], got {args.percentile}")
    config = CalibrateConfig(
        algorithms=parse_algorithms(args.algo), num_bins=args.num_bins,
        settings=AlgorithmSettings(percentile=args.percentile), batch_size=args.batch_size,
        max_images=args.max_images, providers=args.providers, seed=args.seed,
        strict=args.strict, preprocess=preprocess_options(args))
    outdir = Path(args.outdir or default_outdir(args.model))
    if outdir.exists() and not outdir.is_dir():  # checked before the (long) statistics pass
        raise ConfigError("the output folder is an existing file", path=outdir,
                          hint="pass -o a folder (it is created if missing)")
    check_writable(outdir)  # read-only, under a file: fail now, not after the pass
    version_int(args.trt_version)  # a bad --trt-version fails now, not after calibrating
    start = time.perf_counter()
    with progress_bar(args, None, "calibrating") as update:
        table = calibrate(args.model, args.data, config, progress=update)
    header = {"auto": None, "entropy2": ENTROPY_HEADER, "minmax": MINMAX_HEADER}[args.cache_header]
    written = write_outputs(table, outdir, trt_version=args.trt_version, header=header)
    if args.quiet == 0:
        print_summary(table, written, time.perf_counter() - start)
    return 0


def print_summary(table, written, seconds: float) -> None:
    d = table.data
    flagged = {n: t.flags for n, t in table.tensors.items() if t.flags}
    print(f"calibrated {len(table.tensors)} tensors on {d['num_samples']} samples "
          f"(batch {d['batch_size']}, {len(d['skipped'])} skipped) in {seconds:.1f} s"
          + _where(table.settings))
    for name, path in written.items():
        print(f"  wrote {path}")
    if flagged:
        print(f"  {len(flagged)} tensor(s) flagged (floored ranges never become zero scales):")
        for name, flags in list(flagged.items())[:8]:
            print(f"    {name}: {', '.join(flags)}")
    rows = disagreement(table, top=5)
    if rows:
        methods = table.methods
        print("  where the algorithms disagree most (amax):")
        print("    " + f"{'tensor':40s} {'ratio':>6s} " + " ".join(f"{m:>10s}" for m in methods))
        for name, ratio, amax in rows:
            print(f"    {name[:40]:40s} {ratio:6.2f} " + " ".join(f"{amax[m]:10.4g}" for m in methods))


def _where(settings: dict) -> str:
    """Which execution provider actually ran (ORT may have fallen back) and where the
    histograms were computed."""
    used = settings.get("provider_used")
    if not used:
        return ""
    device = " (statistics on the GPU)" if settings.get("statistics_device") == "cuda" else ""
    return f" on {used}{device}"
