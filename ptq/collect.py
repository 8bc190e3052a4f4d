"""The streaming statistics pass: run the FP32 model once, update per-tensor accumulators.

Every float activation is exposed as a graph output; each batch's outputs update a
running min/max and a mergeable |x| histogram, then are dropped. Memory is bounded
by one batch of activations, whatever the number of images.
"""
from __future__ import annotations

import logging
import math
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Callable, Iterable

import numpy as np
import onnx

from ptq.backends.ort import OrtRunner
from ptq.datasets.base import Batch
from ptq.errors import CalibrationError
from ptq.graph.edit import add_outputs
from ptq.graph.model import Activation, activations
from ptq.histogram import DEFAULT_NUM_BINS, Histogram, Scratch

log = logging.getLogger(__name__)

# Exposed activations per batch when the batch size is auto; two batches are alive at
# once (one in inference, one in the statistics thread).
ACTIVATION_BUDGET_BYTES = 128 << 20


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

    def update(self, x: np.ndarray, scratch: Scratch | None = None) -> None:
        if x.size == 0:
            return
        lo, hi = float(x.min()), float(x.max())
        if not (math.isfinite(lo) and math.isfinite(hi)):
            kind = "NaN" if math.isnan(lo) or math.isnan(hi) else "Inf"
            where = f"node '{self.activation.producer}' ({self.activation.op_type})" \
                if self.activation.producer else "the graph input"
            raise CalibrationError(f"tensor '{self.activation.name}' from {where} contains {kind}",
                                   hint="check the preprocessing (scale/mean/std) and the model's "
                                        "FP32 outputs on these images; ptq never writes NaN/Inf ranges")
        self.min, self.max = min(self.min, lo), max(self.max, hi)
        self.count += int(x.size)
        self.sample_shape = tuple(x.shape[1:]) if x.ndim else ()
        self.histogram.update(x, max(-lo, hi), scratch)
        self._update_channel_sum(x)

    def _update_channel_sum(self, x: np.ndarray) -> None:
        if x.ndim < 2 or x.shape[1] == 0 or (self.count > x.size and self.channel_sum is None):
            return
        if self.channel_sum is not None and len(self.channel_sum) != x.shape[1]:
            self.channel_sum = None  # channel count changed between batches: no means
            return
        per_sample = x.reshape(x.shape[0], x.shape[1], -1).sum(axis=2, dtype=np.float32)
        sums = per_sample.sum(axis=0, dtype=np.float64)
        self.channel_sum = sums if self.channel_sum is None else self.channel_sum + sums
        self.channel_count += x.size // x.shape[1]

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


def activation_bytes_per_sample(acts: list[Activation]) -> int | None:
    """Bytes one sample adds to the exposed outputs, when every shape is static."""
    total = 0
    for a in acts:
        dims = a.info.shape
        if dims is None or not all(isinstance(d, int) and d > 0 for d in dims[1:]):
            return None
        total += int(np.prod(dims[1:], dtype=np.int64)) * a.info.dtype.itemsize
    return total


def auto_batch_size(acts: list[Activation], fixed: int | None, requested: int | None) -> int:
    if fixed is not None:
        if requested and requested != fixed:
            log.warning("model has a fixed batch of %d; ignoring --batch-size %d", fixed, requested)
        return fixed
    if requested:
        return requested
    per_sample = activation_bytes_per_sample(acts)
    if not per_sample:
        return 8
    return int(min(32, max(1, ACTIVATION_BUDGET_BYTES // per_sample)))


STATS_THREADS = 2  # numpy releases the GIL in the histogram kernels; measured 1.6x on 2 cores


def collect_statistics(model: onnx.ModelProto, batches: Iterable[Batch], *,
                       num_bins: int = DEFAULT_NUM_BINS, providers: str | list[str] = "auto",
                       fixed_batch: int | None = None, acts: list[Activation] | None = None,
                       progress: Callable[[int], None] | None = None) -> Statistics:
    """One pass of the FP32 model over `batches`, feeding every activation's accumulators.

    Batch k is histogrammed by STATS_THREADS worker threads (tensors split by size)
    while ONNX Runtime computes batch k+1, so at most two batches of activations exist.
    ORT's idle-thread spinning is off for this session: spinning workers would steal the
    cores the histogram threads need (measured: 1.9 s -> 1.2 s for 40 images).
    """
    acts = activations(model) if acts is None else acts
    stats = Statistics({a.name: TensorStatistics(a, Histogram(num_bins)) for a in acts})
    inputs = [a.name for a in acts if a.producer is None]
    names = [a.name for a in acts if a.producer is not None]
    augmented = add_outputs(model, [a.info for a in acts if a.producer is not None])
    scratches = [Scratch() for _ in range(STATS_THREADS)]

    bad: dict[str, CalibrationError] = {}

    def observe(outputs: dict[str, np.ndarray], group: list[str], scratch: Scratch) -> None:
        for name in group:
            try:
                stats.tensors[name].update(outputs[name], scratch)
            except CalibrationError as exc:  # reported in graph order once the batch is done
                bad[name] = exc

    # Exposed tensors cannot be fused away, so each holds the FP32 value of its node.
    with OrtRunner(augmented, providers=providers, optimization="all",
                   session_config={"session.intra_op.allow_spinning": "0"}) as runner, \
            ThreadPoolExecutor(STATS_THREADS, thread_name_prefix="ptq-stats") as pool:
        pending: list[Future] = []
        previous: Batch | None = None
        for batch in batches:
            if fixed_batch is not None and batch.size != fixed_batch:
                log.warning("dropping a final partial batch of %d (model batch is fixed at %d)",
                            batch.size, fixed_batch)
                continue
            outputs = runner.infer(batch.feeds, names)
            outputs.update((n, batch.feeds[n]) for n in inputs)
            _finish(pending, previous, stats, bad, progress)
            pending = [pool.submit(observe, outputs, group, scratch)
                       for group, scratch in zip(_balanced(outputs, STATS_THREADS), scratches)]
            previous = batch
            del outputs
        _finish(pending, previous, stats, bad, progress)
    return stats


def _balanced(outputs: dict[str, np.ndarray], parts: int) -> list[list[str]]:
    """Split tensor names into `parts` groups of about equal element count (largest first)."""
    groups: list[list[str]] = [[] for _ in range(parts)]
    load = [0] * parts
    for name in sorted(outputs, key=lambda n: -outputs[n].size):
        k = load.index(min(load))
        groups[k].append(name)
        load[k] += outputs[name].size
    return groups


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
