"""The statistics pass's batch when --batch-size is not given: a budget of activation bytes,
so that its memory is bounded whatever the number of images (ptq.collect)."""
from __future__ import annotations

import logging

import numpy as np

from ptq.backends.ort import default_threads
from ptq.graph.model import Activation

log = logging.getLogger(__name__)

# Exposed activations per batch when the batch size is auto; two batches are alive at
# once (one in inference, one in the statistics threads). 128 MB, and 32 MB a core beyond
# 4 cores: each batch costs a fixed ~60 Python tasks and an ORT run whose per-op thread
# hand-offs grow with the cores. Measured in-process, EfficientNet-Lite0, 256 images
# (bench/results/h200-2026-12-02-host-batch-cpu16.log): 16 cores, batches of 8 instead of
# 2 took the pass from 2.5 s to 1.4-1.7 s; 2 cores gained nothing and held 400 MB more.
ACTIVATION_BUDGET_BYTES = 128 << 20
ACTIVATION_BUDGET_PER_CORE_BYTES = 32 << 20
# With statistics on the GPU the activations never reach the host: a batch may fill 1 GiB
# of device memory (larger batches keep the GPU busy between kernel launches).
DEVICE_ACTIVATION_BUDGET_BYTES = 1 << 30


def activation_bytes_per_sample(acts: list[Activation]) -> int | None:
    """Bytes one sample adds to the exposed outputs, when every shape is static."""
    total = 0
    for a in acts:
        dims = a.info.shape
        if dims is None or not all(isinstance(d, int) and d > 0 for d in dims[1:]):
            return None
        total += int(np.prod(dims[1:], dtype=np.int64)) * a.info.dtype.itemsize
    return total


def auto_batch_size(acts: list[Activation], fixed: int | None, requested: int | None,
                    device: str = "cpu") -> int:
    if fixed is not None:
        if requested and requested != fixed:
            log.warning("model has a fixed batch of %d; ignoring --batch-size %d", fixed, requested)
        return fixed
    if requested:
        return requested
    per_sample = activation_bytes_per_sample(acts)
    if not per_sample:
        return 8
    return batch_for(per_sample, device)


def batch_for(per_sample: int, device: str = "cpu") -> int:
    """The automatic batch: as many samples as the activation budget holds, 1 to 32."""
    if device == "cuda":
        budget = DEVICE_ACTIVATION_BUDGET_BYTES
    else:
        budget = max(ACTIVATION_BUDGET_BYTES, ACTIVATION_BUDGET_PER_CORE_BYTES * default_threads())
    return int(min(32, max(1, budget // max(1, per_sample))))
