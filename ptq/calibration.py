"""`ptq.calibration`: model + data -> CalibrationTable, and the files it is saved as.

    load model -> open data (images/npz/iterable) -> one streaming statistics pass
    -> every requested algorithm on the same statistics -> CalibrationTable
    -> ranges.json + calib.<algo>.cache (all rendered first, then written atomically)
"""
from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import onnx

from ptq import kernels
from ptq.backends.ort import default_threads
from ptq.cache import ENTROPY_HEADER, MINMAX_HEADER, DEFAULT_TRT_VERSION, render_cache
from ptq.calibrators import (AMAX_FLOOR, DEFAULT_METHOD, AlgorithmSettings, Method, compute_amax,
                             explain_auto)
from ptq.batch_size import activation_bytes_per_sample, auto_batch_size, batch_for
from ptq.collect import Statistics, collect_statistics, planned_device
from ptq.datasets import fixed_batch, make_preprocess, open_data
from ptq.errors import CalibrationError, ConfigError, DataError
from ptq.graph.model import activations_after_input, float_inputs, graph_inputs, load_model, model_sha256
from ptq.histogram import DEFAULT_NUM_BINS
from ptq.atomic import encode_text, replace_set
from ptq.table import CalibrationTable, TensorRange
from ptq.version import __version__

log = logging.getLogger(__name__)


# num_bins bounds: the entropy search starts at 128 bins (TensorRT's INT8 levels); above
# 65536 a histogram (which may grow 16x per tensor) and the searches stop being cheap
MIN_NUM_BINS, MAX_NUM_BINS = 128, 65536


def check_num_bins(num_bins: int) -> None:
    if not MIN_NUM_BINS <= num_bins <= MAX_NUM_BINS:
        raise ConfigError(f"--num-bins must be in {MIN_NUM_BINS}..{MAX_NUM_BINS}, got {num_bins}",
                          hint=f"the default {DEFAULT_NUM_BINS} is what TensorRT uses")


@dataclass(frozen=True)
class PreprocessOptions:
    """User-facing preprocessing choices; unset fields come from the preset and the model."""

    preset: str = "imagenet"
    size: tuple[int, int] | None = None
    resize: int | None = None
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    layout: str | None = None
    channel_order: str | None = None
    letterbox: bool | None = None      # keep aspect, pad to --size (detectors, recognizers)
    pad_value: float | None = None     # letterbox padding in pixel units (default 0)
    multiple: int | None = None        # round --size up to a multiple (DBNet: 32)


@dataclass(frozen=True)
class CalibrateConfig:
    algorithms: tuple[Method, ...] = (DEFAULT_METHOD,)
    num_bins: int = DEFAULT_NUM_BINS
    settings: AlgorithmSettings = AlgorithmSettings()
    batch_size: int | None = None   # None: fit ~128 MB of activations per batch (collect.py)
    max_images: int | None = None
    providers: str = "auto"
    stats_device: str = "auto"      # "cuda": histograms on the GPU (needs the CUDA EP + torch)
    seed: int = 0
    strict: bool = False
    preprocess: PreprocessOptions = field(default_factory=PreprocessOptions)


def open_model_data(model_path: Path, model: onnx.ModelProto, data: Any, config: CalibrateConfig):
    """The data source for `model`, with preprocessing fitted to its (single) image input."""
    inputs = graph_inputs(model)
    float_inputs(model, model_path)
    pre = None
    if isinstance(data, (str, Path)) and Path(data).is_dir() and len(inputs) == 1:
        p = config.preprocess
        pre = make_preprocess(inputs[0], p.preset, size=p.size, resize=p.resize, mean=p.mean,
                              std=p.std, layout=p.layout, channel_order=p.channel_order,
                              letterbox=p.letterbox, pad_value=p.pad_value, multiple=p.multiple)
    return open_data(data, inputs, preprocess=pre, max_images=config.max_images,
                     seed=config.seed, strict=config.strict)


def probe_batch_size(proto: onnx.ModelProto, acts: list, source: Any, providers: str) -> int | None:
    """Dynamic-shape models (DBNet [N,3,H,W]): the activation bytes of ONE sample at the
    size the data really has (--size), measured by running it, -> a batch that fits the
    same budget as static models. (The static estimate cannot see H and W: DBNet at
    640x640 took 9.45 GB RSS with the old fallback of 8.)"""
    from ptq.evaluate import run_model
    from ptq.graph.edit import add_outputs

    first = next(iter(source.batches(1)), None)
    if first is None:
        return None
    outs = run_model(add_outputs(proto, [a.info for a in acts if a.producer is not None]), [first],
                     providers=providers, optimization="disable")
    per_sample = sum(v.nbytes for v in outs.values()) + sum(v.nbytes for v in first.feeds.values())
    batch = batch_for(per_sample)  # the host budget, as for static shapes on the CPU
    log.info("dynamic shapes: %.1f MB of activations per sample -> batch size %d",
             per_sample / 2**20, batch)
    return batch


def calibrate(model: str | Path, data: Any, config: CalibrateConfig = CalibrateConfig(), *,
              progress: Callable[[int], None] | None = None) -> CalibrationTable:
    """Calibrate `model` on `data` (image folder, .npy/.npz, or an iterable of arrays/dicts)."""
    check_num_bins(config.num_bins)
    device = planned_device(config.providers, config.stats_device)  # starts torch's import
    if device == "cpu":  # numba loads while the model, the data and the session are prepared
        kernels.warm_up()  # (not beside torch's import: the two fight for the GIL, +3 s on H200)
    model_path = Path(model)
    proto = load_model(model_path)
    source = open_model_data(model_path, proto, data, config)
    acts = activations_after_input(proto, model_path)
    fixed = fixed_batch(graph_inputs(proto))
    requested = config.batch_size
    if requested is None and fixed is None and activation_bytes_per_sample(acts) is None \
            and isinstance(data, (str, Path)):
        requested = probe_batch_size(proto, acts, source, config.providers)
    batch_size = auto_batch_size(acts, fixed, requested, device)
    if progress is not None and hasattr(progress, "set_total") and hasattr(source, "__len__"):
        progress.set_total(len(source))  # the CLI's bar learns its total here
    try:
        stats = collect_statistics(proto, source.batches(batch_size), num_bins=config.num_bins,
                                   providers=config.providers, fixed_batch=fixed, acts=acts,
                                   progress=progress, device=config.stats_device)
    except CalibrationError as exc:  # raised per tensor; name the model it belongs to
        exc.path = exc.path or str(model_path)
        raise
    if stats.num_samples == 0:
        skipped = len(source.skipped)
        raise DataError(f"no usable samples ({skipped} skipped"
                        + (f", model batch fixed at {fixed}" if fixed else "") + ")",
                        path=str(data) if isinstance(data, (str, Path)) else None,
                        hint="provide readable images" + (f" (at least {fixed})" if fixed else ""))
    if source.skipped:
        log.warning("%d input(s) skipped as unreadable", len(source.skipped))
    described = source.describe()
    data_meta = {**described, "num_samples": stats.num_samples, "files": stats.files,
                 "skipped": source.skipped.to_list(), "batch_size": batch_size,
                 "seed": config.seed, "max_images": config.max_images}
    model_meta = {"path": str(model_path), "sha256": model_sha256(model_path),
                  "inputs": [i.to_dict() for i in graph_inputs(proto)],
                  "opset": next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), None)}
    settings = {"algorithms": [m.value for m in config.algorithms], "num_bins": config.num_bins,
                **config.settings.to_dict(), "providers": config.providers,
                "provider_used": stats.provider, "statistics_device": stats.device,
                "histogram_kernel": stats.kernel}
    return build_table(stats, config, model_meta, data_meta, settings)


def build_table(stats: Statistics, config: CalibrateConfig, model_meta: dict, data_meta: dict,
                settings: dict) -> CalibrationTable:
    def amaxes(st) -> tuple[list[tuple[float, bool]], dict | None]:
        counts, width = st.histogram.finalized()
        lo, hi = (st.min, st.max) if st.count else (0.0, 0.0)
        out = {m: compute_amax(m, counts, width, lo, hi, config.settings)
               for m in config.algorithms if m is not Method.AUTO}
        choice = None
        if Method.AUTO in config.algorithms:  # the choice and its reason, for the report
            choice = explain_auto(counts, width, lo, hi, config.settings,
                                  known={m.value: v for m, (v, _) in out.items()})
            value = choice.pop("amax")
            out[Method.AUTO] = (value, False) if value > AMAX_FLOOR else (AMAX_FLOOR, True)
        return [out[m] for m in config.algorithms], choice

    # Pure functions of each histogram: one task per tensor on every core (numpy releases
    # the GIL in the mse/entropy sweeps).
    with ThreadPoolExecutor(default_threads(), thread_name_prefix="ptq-amax") as pool:
        results = dict(zip(stats.tensors, pool.map(amaxes, stats.tensors.values())))
    tensors = {}
    for name, st in stats.tensors.items():
        lo, hi = (st.min, st.max) if st.count else (0.0, 0.0)
        flags = []
        if st.count == 0:
            flags.append("empty")
        elif lo == 0.0 and hi == 0.0:
            flags.append("all_zero")
        amax = {}
        choice = results[name][1]
        for method, (value, floored) in zip(config.algorithms, results[name][0]):
            amax[method.value] = value
            if floored:
                flags.append(f"floored:{method.value}")
        mean = getattr(st, "channel_mean", None) if choice is not None else None
        act = st.activation
        shape = list(act.info.shape) if act.info.shape is not None else (
            [None, *st.sample_shape] if st.sample_shape is not None else None)
        tensors[name] = TensorRange(name=name, producer=act.producer, op_type=act.op_type,
                                    shape=shape, dtype=act.info.dtype.name, min=lo, max=hi,
                                    count=st.count, histogram=st.histogram, amax=amax, flags=flags,
                                    choice=choice,
                                    channel_mean=None if mean is None else mean.tolist())
    return CalibrationTable(tensors, model_meta, data_meta, settings, __version__)


def cache_header(method: Method | str) -> str:
    """MinMax ranges carry TensorRT's MinMax header; the histogram methods the entropy one
    (trtexec's built-in calibrator is EntropyCalibrator2 and rejects other headers)."""
    return MINMAX_HEADER if Method(method) is Method.MINMAX else ENTROPY_HEADER


def is_calibration_output(name: str) -> bool:
    """The files one `ptq calibrate` run owns in its output folder (replaced as a set)."""
    return name == "ranges.json" or (name.startswith("calib.") and name.endswith(".cache"))


def write_outputs(table: CalibrationTable, outdir: str | Path, *,
                  trt_version: str = DEFAULT_TRT_VERSION,
                  header: str | None = None) -> dict[str, Path]:
    """ranges.json and one calib.<algo>.cache per algorithm, rendered first, then switched
    in as one set (ptq.atomic.replace_set): after a failure or an interruption the folder
    holds the whole old set or the whole new one; caches of algorithms this run did not
    compute are removed in the same switch so none is left beside ranges it does not match."""
    texts = {"ranges.json": table.to_json()}
    for method in table.methods:
        texts[f"calib.{method}.cache"] = render_cache(
            table.amaxes(method), header=header or cache_header(method), trt_version=trt_version)
    return replace_set(outdir, {name: encode_text(text) for name, text in texts.items()},
                       owned=is_calibration_output)


def disagreement(table: CalibrationTable, top: int = 10) -> list[tuple[str, float, dict[str, float]]]:
    """Tensors whose algorithms disagree most: (name, max amax / min amax, amaxes); equal
    ratios keep graph order (the sort is stable)."""
    rows = []
    for name, t in table.tensors.items():
        vals = [v for v in t.amax.values()]
        if len(vals) > 1:
            rows.append((name, max(vals) / min(vals), dict(t.amax)))
    rows.sort(key=lambda r: -r[1])
    return rows[:top]
