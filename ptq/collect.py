"""The streaming statistics pass: run the FP32 model once, update per-tensor accumulators.

Every float activation is exposed as a graph output; each batch's outputs update a
running min/max and a mergeable |x| histogram, then are dropped. Memory is bounded
by one batch of activations, whatever the number of images.
"""
from __future__ import annotations

import logging
import math
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

import numpy as np
import onnx

from ptq.backends.ort import OrtRunner, default_threads, resolve_providers
from ptq.datasets.base import Batch
from ptq.errors import CalibrationError, ConfigError, InternalError
from ptq.graph.derived import ReluOf, relu_like
from ptq.graph.edit import add_outputs
from ptq.graph.model import Activation, activations
from ptq.graph.nchwc import Blocked
from ptq.histogram import DEFAULT_NUM_BINS, Histogram, Scratch
from ptq.kernels import kernel_name, observe, observe_relu, warm_up

log = logging.getLogger(__name__)

@dataclass
class TensorStatistics:
    """Running statistics of one activation (no raw values are kept)."""

    activation: Activation
    histogram: Histogram
    min: float = math.inf
    max: float = -math.inf
    count: int = 0
    sample_shape: tuple[int, ...] | None = None
    # accuracy (issue 10): per-channel (axis 1) sums for the bias correction of the layers this
    # tensor feeds (ptq/graph/bias.py); None for tensors of rank < 2 or with inconsistent channels
    channel_sum: np.ndarray | None = None
    channel_count: int = 0

    def update(self, x: Any, scratch: Scratch | None = None,
               minmax: tuple[float, float] | None = None, lanes: int = 1) -> None:
        """Add one batch: `x` a numpy array (one fused pass, ptq.kernels.observe; `lanes` > 1:
        in ONNX Runtime's NCHWc blocks, ptq.graph.nchwc) or a `ptq.cuda_stats.DeviceTensor`
        with the `minmax` its caller reduced for the whole batch."""
        if x.size == 0:
            return
        sums = self._channel_target(x)
        if isinstance(x, np.ndarray):
            lo, hi = observe(x, self.histogram, sums, scratch, lanes)
            self._check_finite(lo, hi)
        else:
            lo, hi = minmax if minmax is not None else x.minmax()
            self._check_finite(lo, hi)
            self.histogram.update(x, max(-lo, hi))
            if sums is not None:
                x.add_channel_sums(sums)
        self._record(x, lo, hi, sums)

    def update_with_relu(self, y: TensorStatistics, x: np.ndarray, top: float,
                         scratch: Scratch | None = None, lanes: int = 1) -> None:
        """Add this tensor's batch `x` and, from the same pass, the batch of `y` =
        min(max(x, 0), top), which ONNX Runtime then need not copy out (ptq.graph.derived)."""
        if x.size == 0:
            return
        sx, sy = self._channel_target(x), y._channel_target(x)
        (lo, hi), (y_lo, y_hi) = observe_relu(x, top, self.histogram, y.histogram, sx, sy,
                                              scratch, lanes)
        self._check_finite(lo, hi)
        self._record(x, lo, hi, sx)
        y._record(x, y_lo, y_hi, sy)

    def _record(self, x: Any, lo: float, hi: float, sums: np.ndarray | None) -> None:
        self.min, self.max = min(self.min, lo), max(self.max, hi)
        self.count += int(x.size)
        self.sample_shape = tuple(x.shape[1:]) if x.ndim else ()
        if sums is not None:
            self.channel_count += x.size // x.shape[1]

    def _check_finite(self, lo: float, hi: float) -> None:
        if math.isfinite(lo) and math.isfinite(hi):
            return
        kind = "NaN" if math.isnan(lo) or math.isnan(hi) else "Inf"
        where = f"node '{self.activation.producer}' ({self.activation.op_type})" \
            if self.activation.producer else "the graph input"
        raise CalibrationError(f"tensor '{self.activation.name}' from {where} contains {kind}",
                               hint="check the preprocessing (scale/mean/std) and the model's "
                                    "FP32 outputs on these images; ptq never writes NaN/Inf ranges")

    def _channel_target(self, x: Any) -> np.ndarray | None:
        """The float64 per-channel (axis 1) sums this batch adds to, or None: rank < 2, or
        the channel count changed between batches (then there are no means at all)."""
        if x.ndim < 2 or x.shape[1] == 0:
            return None
        if self.channel_sum is None:
            if self.count:  # earlier batches gave up on the means
                return None
            self.channel_sum = np.zeros(x.shape[1], np.float64)
        elif len(self.channel_sum) != x.shape[1]:
            self.channel_sum = None
            return None
        return self.channel_sum

    @property
    def channel_mean(self) -> np.ndarray | None:
        if self.channel_sum is None or self.channel_count == 0:
            return None
        return self.channel_sum / self.channel_count


@dataclass
class Statistics:
    """The result of one pass: per-tensor statistics in graph order, and what was seen."""

    tensors: dict[str, TensorStatistics]
    num_samples: int = 0
    files: list[str] = field(default_factory=list)
    labels_seen: bool = False
    provider: str = ""       # the execution provider that actually ran (ORT may fall back)
    device: str = "cpu"      # where the statistics were computed: "cpu" or "cuda"
    kernel: str = ""         # the counting kernel: numba / numpy (host), torch (GPU)
    blocked: tuple[str, ...] = ()  # activations read in ONNX Runtime's NCHWc blocks (ptq.graph.nchwc)


def planned_device(providers: str | list[str] = "auto", device: str = "auto") -> str:
    """Where the statistics will be computed, decided before the session exists (for the
    batch size); the pass itself checks again against the EP that actually runs."""
    if device != "auto":
        return device
    if resolve_providers(providers)[0] != "CUDAExecutionProvider":
        return "cpu"
    from ptq import cuda_stats
    if not cuda_stats.installed():
        return "cpu"
    cuda_stats.preload()  # torch imports while the data and the session are prepared
    return "cuda"


def stats_threads() -> int:
    """Host statistics threads: one per core. ORT's spinning is off in the statistics
    session, so inference and histograms share the cores instead of fighting for them."""
    return default_threads()


STATS_DEVICES = ("auto", "cpu", "cuda")


def collect_statistics(model: onnx.ModelProto, batches: Iterable[Batch], *,
                       num_bins: int = DEFAULT_NUM_BINS, providers: str | list[str] = "auto",
                       fixed_batch: int | None = None, acts: list[Activation] | None = None,
                       progress: Callable[[int], None] | None = None,
                       device: str = "auto", threads: int | None = None,
                       derive: bool = True, blocked: bool = True) -> Statistics:
    """One pass of the FP32 model over `batches`, feeding every activation's accumulators.

    device "cuda" (the default "auto" picks it when ONNX Runtime runs on its CUDA EP and
    torch sees the GPU): activations stay on the GPU (IOBinding) and are reduced there;
    only min/max and histogram counts come back (ptq/cuda_stats.py). Otherwise ("cpu")
    batch k is histogrammed by `threads` host threads (default: one per core, one task per
    tensor, largest first) while ONNX Runtime computes batch k+1, so at most two batches of
    activations exist. ORT's idle-thread spinning is off for this session: spinning workers
    would steal the cores the histogram threads need (measured: 1.9 s -> 1.2 s for 40 images).
    On the host, outputs of Relu/Clip(0, top) are not copied out but derived from their
    input's pass (ptq.graph.derived; `derive=False` observes them on their own, as the GPU
    path does: the same statistics, tests/test_derived.py).
    """
    if device not in STATS_DEVICES:
        raise ConfigError(f"statistics device must be one of {', '.join(STATS_DEVICES)}, got {device!r}")
    acts = activations(model) if acts is None else acts
    stats = Statistics({a.name: TensorStatistics(a, Histogram(num_bins)) for a in acts})
    inputs = [a.name for a in acts if a.producer is None]
    plan = "cpu" if device == "cpu" else planned_device(providers, device)  # preloads torch
    derived = relu_like(model, acts) if derive and plan == "cpu" else {}
    exposed = [a for a in acts if a.producer is not None and a.name not in derived]
    names = [a.name for a in exposed]
    augmented = add_outputs(model, [a.info for a in exposed])
    # Exposed tensors cannot be fused away, so each holds the FP32 value of its node.
    with statistics_runner(augmented, names, providers, blocked=blocked and plan == "cpu") as runner:
        if runner.blocked:
            log.info("%d of %d activations read in NCHWc blocks", len(runner.blocked), len(names))
        stats.provider = runner.provider
        stats.blocked = tuple(runner.blocked)
        stats.device = _statistics_device(device, runner)
        log.info("statistics pass on %s, statistics on %s", stats.provider, stats.device)
        if stats.device == "cuda":
            if derived:
                raise InternalError("derived statistics were planned for a host pass")
            stats.kernel = "torch"
            _device_pass(runner, batches, stats, inputs, names, fixed_batch, progress)
            return stats
        _host_pass(runner, batches, stats, inputs, names, derived, fixed_batch, progress,
                   threads or stats_threads(), runner.blocked)
        stats.kernel = kernel_name(wait=False)
    return stats


def statistics_runner(augmented: onnx.ModelProto, names: list[str], providers: str | list[str],
                      *, blocked: bool) -> OrtRunner:
    """The session of the pass, to open. Host statistics on the CPU EP run at ptq's level
    `nchwc` (ptq.backends.ort): tensors ORT computes in NCHWc blocks come out without their
    reorder to NCHW (ptq.graph.nchwc); once open, `runner.blocked` says which."""
    level = "nchwc" if blocked and resolve_providers(providers)[0] == "CPUExecutionProvider" else "all"
    return OrtRunner(augmented, providers=providers, optimization=level,
                     session_config={"session.intra_op.allow_spinning": "0"},
                     expose_blocked=names)


def _device_pass(runner: OrtRunner, batches: Iterable[Batch], stats: Statistics,
                 inputs: list[str], names: list[str], fixed_batch: int | None,
                 progress: Callable[[int], None] | None, *, on_host: bool = False) -> None:
    """Per batch: one run, one min/max transfer, one transfer of the counts and channel sums
    (ptq/cuda_stats.py). A second thread launches batch k's statistics kernels while ONNX
    Runtime computes batch k + 1 (its run releases the GIL; the launches, ~750 a batch, cost
    as much CPU time as the run), and they run beside it on a stream of their own; k's counts
    are added before batch k + 1 can grow a histogram. on_host: the same pass by torch on the
    CPU over host outputs, so that machines without a GPU can check it against the host pass."""
    from ptq.cuda_stats import DeviceOutputs

    outputs = DeviceOutputs(runner.session, names, None if on_host else runner.device_id)
    with ThreadPoolExecutor(1, thread_name_prefix="ptq-gpu-stats") as launcher:
        counting = None  # (future of the totals before, values, batch): counts still on the device
        for batch in _usable(batches, fixed_batch):
            values = outputs.run(batch.feeds)
            if counting is not None:
                _settle(outputs, stats, *counting, progress)
            launched = launcher.submit(_launch, outputs, stats, values, inputs, batch, progress)
            counting = (launched, values, batch)
        if counting is not None:
            _settle(outputs, stats, *counting, progress)


def _launch(outputs: Any, stats: Statistics, values: dict[str, Any], inputs: list[str],
            batch: Batch, progress: Callable[[int], None] | None) -> dict[str, int]:
    """Upload the inputs, take every min/max (one sync), then launch the counting and sum
    kernels without waiting; returns each histogram's total, for `_settle`'s check."""
    bad: dict[str, CalibrationError] = {}
    before = {}
    with outputs.statistics_stream():
        values.update((n, outputs.upload(batch.feeds[n])) for n in inputs)
        minmax = outputs.minmax(values)
        for name in stats.tensors:  # graph order: the first NaN/Inf is reported
            before[name] = stats.tensors[name].histogram.total
            try:
                stats.tensors[name].update(values[name], minmax=minmax[name])
            except CalibrationError as exc:
                bad[name] = exc
    if bad:
        _finish([], batch, stats, bad, progress)  # raises
    return before


def _settle(outputs: Any, stats: Statistics, launched: Future, values: dict[str, Any],
            batch: Batch, progress: Callable[[int], None] | None) -> None:
    """Once a batch's kernels are launched, bring its counts and sums back (one transfer)
    and account for it."""
    before = launched.result()  # raises the launch's NaN/Inf error
    with outputs.statistics_stream():
        outputs.add_pending(values, {n: stats.tensors[n].histogram for n in values})
    for name, x in values.items():  # the deferred counts must add up to the batch
        if stats.tensors[name].histogram.total != before[name] + x.size:
            raise InternalError(f"GPU histogram of '{name}' lost counts")
    _finish([], batch, stats, {}, progress)


def _statistics_device(device: str, runner: OrtRunner) -> str:
    on_cuda = runner.provider == "CUDAExecutionProvider"
    if device == "cpu" or (device == "auto" and not on_cuda):
        return "cpu"
    if not on_cuda:
        raise ConfigError(f"statistics on the GPU need ONNX Runtime's CUDA EP, but it runs on "
                          f"{runner.provider}", hint="use --providers cuda with onnxruntime-gpu, "
                          "or compute the statistics on the CPU")
    from ptq.cuda_stats import unavailable
    reason = unavailable()
    if reason is None:
        return "cuda"
    if device == "cuda":
        raise ConfigError(f"statistics on the GPU need torch with CUDA: {reason}",
                          hint="pip install torch (a CUDA build) or compute statistics on the CPU")
    log.warning("ONNX Runtime runs on CUDA but %s: activations are copied to the host "
                "for statistics (slower)", reason)
    return "cpu"


def _usable(batches: Iterable[Batch], fixed_batch: int | None) -> Iterable[Batch]:
    for batch in batches:
        if fixed_batch is not None and batch.size != fixed_batch:
            log.warning("dropping a final partial batch of %d (model batch is fixed at %d)",
                        batch.size, fixed_batch)
            continue
        yield batch


def _host_pass(runner: OrtRunner, batches: Iterable[Batch], stats: Statistics, inputs: list[str],
               names: list[str], derived: dict[str, ReluOf], fixed_batch: int | None,
               progress: Callable[[int], None] | None, threads: int,
               blocked: dict[str, Blocked] | None = None) -> None:
    # numba's kernels, once loaded (ptq/kernels.py; started by `calibrate`): their numpy
    # fallback is 3-5x slower and, with bincount holding the GIL, serialises many cores
    # (H200 machine, 16 cores: a 4 s load spent on the fallback doubled the pass). The wait
    # comes after the first run, which releases the GIL to the loader.
    warm_up()
    local = threading.local()
    bad: dict[str, CalibrationError] = {}
    pairs = {d.source: (y, d.top) for y, d in derived.items()}
    blocked = blocked or {}
    fetch = [blocked[n].output if n in blocked else n for n in names]

    def task(outputs: dict[str, np.ndarray], name: str) -> None:
        scratch = getattr(local, "scratch", None)
        if scratch is None:
            scratch = local.scratch = Scratch()
        lanes = blocked[name].block if name in blocked else 1
        try:
            if name in pairs:
                y, top = pairs[name]
                stats.tensors[name].update_with_relu(stats.tensors[y], outputs[name], top, scratch,
                                                     lanes)
            else:
                stats.tensors[name].update(outputs[name], scratch, lanes=lanes)
        except CalibrationError as exc:  # reported in graph order once the batch is done
            bad[name] = exc

    with ThreadPoolExecutor(threads, thread_name_prefix="ptq-stats") as pool:
        pending: list[Future] = []
        previous: Batch | None = None
        for batch in _usable(batches, fixed_batch):
            outputs = dict(zip(names, runner.infer(batch.feeds, fetch).values()))
            outputs.update((n, batch.feeds[n]) for n in inputs)
            if previous is None:
                kernel_name(wait=True)
            _finish(pending, previous, stats, bad, progress)
            # One task per tensor, largest first: the pool balances the cores by itself.
            # (Counting the largest in chunks on several threads was no faster on 16 cores:
            # bench/results/h200-2026-12-02-split-vs-whole-cpu16.log.)
            sizes = {n: v.size for n, v in outputs.items()}
            order = sorted(sizes, key=lambda n: -sizes[n])
            pending = [pool.submit(task, outputs, name) for name in order]
            previous = batch
            del outputs
        _finish(pending, previous, stats, bad, progress)


def _finish(pending: list[Future], batch: Batch | None, stats: Statistics,
            bad: dict[str, CalibrationError], progress: Callable[[int], None] | None) -> None:
    for future in pending:
        future.result()
    if bad:  # the first NaN/Inf in graph order is the one that explains the others
        raise bad[next(n for n in stats.tensors if n in bad)]
    if batch is None:
        return
    stats.num_samples += batch.size
    stats.files.extend(batch.files)
    stats.labels_seen = stats.labels_seen or batch.labels is not None
    if progress:
        progress(batch.size)
