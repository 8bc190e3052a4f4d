"""On-disk cache of the FP32 reference outputs (one .npz per model + data + runtime).

Key = sha256 of: the model file hash, the data description (source, file names,
preprocessing), the runtime (providers, optimization level) and the exact bytes of
every preprocessed input array. Hashing the arrays themselves makes the key exact:
a changed image, crop or mean can never reuse stale outputs, and it costs ~30 ms
for 20 ImageNet-size images.

Where: the CLI uses `OUTDIR/.ptq-cache/` (override with --cache-dir, disable with
--no-cache). It sits next to the results it produced, so nothing is written
outside the folder the user named, and deleting the run deletes its cache; a
shared `--cache-dir` reuses references across output folders. The Python API
caches only when given a directory.
"""
from __future__ import annotations

import hashlib
import io
import json
import logging
from pathlib import Path
from typing import Sequence

import numpy as np

from ptq.atomic import write_bytes
from ptq.datasets.base import Batch

log = logging.getLogger(__name__)

CACHE_DIRNAME = ".ptq-cache"
_KEY_VERSION = "ptq.reference/1"


def reference_key(model_sha256: str, batches: Sequence[Batch], data: dict, runtime: dict) -> str:
    h = hashlib.sha256()
    head = {"v": _KEY_VERSION, "model": model_sha256, "data": data, "runtime": runtime}
    h.update(json.dumps(head, sort_keys=True, default=str).encode())
    for batch in batches:
        h.update("\0".join(batch.files).encode())
        for name in sorted(batch.feeds):
            arr = np.ascontiguousarray(batch.feeds[name])
            h.update(f"{name}|{arr.dtype.str}|{arr.shape}".encode())
            h.update(memoryview(arr).cast("B"))
    return h.hexdigest()


class ReferenceCache:
    """`load(key)` / `store(key, outputs)`; a missing directory (None) disables caching."""

    def __init__(self, directory: str | Path | None) -> None:
        self.directory = None if directory is None else Path(directory)

    def path(self, key: str) -> Path | None:
        return None if self.directory is None else self.directory / f"reference-{key[:32]}.npz"

    def load(self, key: str) -> dict[str, np.ndarray] | None:
        path = self.path(key)
        if path is None or not path.is_file():
            return None
        try:
            with np.load(path, allow_pickle=False) as data:
                stored_key = str(data["__key__"])
                outputs = {k[4:]: data[k] for k in data.files if k.startswith("out:")}
        except (OSError, ValueError, KeyError) as exc:
            log.warning("ignoring unreadable reference cache %s (%s)", path, exc)
            return None
        if stored_key != key:
            return None
        log.info("reference outputs loaded from %s", path)
        return outputs

    def store(self, key: str, outputs: dict[str, np.ndarray]) -> Path | None:
        path = self.path(key)
        if path is None:
            return None
        buf = io.BytesIO()
        np.savez(buf, __key__=np.asarray(key), **{f"out:{k}": v for k, v in outputs.items()})
        try:
            return write_bytes(path, buf.getvalue())
        except OSError as exc:  # a read-only output folder must not fail the analysis
            log.warning("could not cache the reference outputs in %s (%s)", path, exc)
            return None
