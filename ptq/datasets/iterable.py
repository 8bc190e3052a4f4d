"""Adapter for any iterable of arrays or dicts (a torch DataLoader included).

Each item may be: an array (one input; a batch, or one sample without the batch
axis), a dict keyed by input name (optionally with `labels`), a tuple of arrays in
input order (multi-input models), or an `(inputs, labels)` pair as a torch
DataLoader over a labelled dataset yields. Items are re-chunked to `batch_size`.
"""
from __future__ import annotations

from typing import Any, Iterable, Iterator

import numpy as np

from ptq.datasets.arrays import LABELS_KEY
from ptq.datasets.base import Batch, Skipped, check_sample_shape
from ptq.datasets.torch_adapter import to_numpy
from ptq.errors import DataError
from ptq.graph.model import TensorInfo


class IterableData:
    def __init__(self, items: Iterable[Any], inputs: list[TensorInfo], *,
                 max_images: int | None = None, origin: str = "<iterable>") -> None:
        self.items = items
        self.inputs = inputs
        self.max_images = max_images
        self.origin = origin
        self.skipped = Skipped()
        self.seen = 0

    def _split(self, item: Any) -> tuple[dict[str, np.ndarray], np.ndarray | None]:
        names = [i.name for i in self.inputs]
        labels = None
        if isinstance(item, (tuple, list)):
            if len(item) == len(names) and len(names) > 1 and not isinstance(item[0], dict):
                item = dict(zip(names, item))
            elif len(item) == 2:
                item, labels = item
            else:
                raise DataError(f"cannot interpret a {len(item)}-tuple for inputs {names}",
                                path=self.origin,
                                hint="yield arrays, dicts keyed by input name, or (inputs, labels)")
        if not isinstance(item, dict):
            if len(names) != 1:
                raise DataError(f"an array was given but the model has inputs {names}",
                                path=self.origin, hint="yield dicts keyed by input name")
            item = {names[0]: item}
        item = dict(item)
        if LABELS_KEY in item and LABELS_KEY not in names:
            labels = item.pop(LABELS_KEY)
        feeds = {}
        for info in self.inputs:
            if info.name not in item:
                raise DataError(f"item has no array for input '{info.name}' (keys: {sorted(item)})",
                                path=self.origin, hint="key each array by the model's input name")
            arr = np.asarray(to_numpy(item[info.name]))
            if info.shape is not None and arr.ndim == len(info.shape) - 1:
                arr = arr[None]
            check_sample_shape(info, arr, self.origin)
            # a copy: items wait in `pending`, and a producer may refill the array it yielded
            feeds[info.name] = arr.astype(info.dtype, copy=True)
        if labels is not None:
            labels = np.atleast_1d(np.array(to_numpy(labels)))  # a copy, as above
        return feeds, labels

    def batches(self, batch_size: int) -> Iterator[Batch]:
        pending: list[tuple[dict[str, np.ndarray], np.ndarray | None]] = []
        count = 0
        self.seen = 0
        for item in self.items:
            feeds, labels = self._split(item)
            pending.append((feeds, labels))
            count += next(iter(feeds.values())).shape[0]
            while count >= batch_size or (self.max_images and self.seen + count >= self.max_images):
                batch, pending, count = _take(pending, min(batch_size, self._room(count)))
                self.seen += batch.size
                yield batch
                if self.max_images and self.seen >= self.max_images:
                    return
        if count and not (self.max_images and self.seen >= self.max_images):
            batch, _, _ = _take(pending, self._room(count))
            self.seen += batch.size
            yield batch

    def _room(self, count: int) -> int:
        return count if not self.max_images else min(count, self.max_images - self.seen)

    def describe(self) -> dict:
        return {"kind": "iterable", "source": self.origin, "num_files": self.seen}


def _take(pending, n):
    """Concatenate the pending pieces, cut the first n samples, keep the rest pending."""
    names = list(pending[0][0])
    feeds = {k: np.concatenate([p[0][k] for p in pending]) for k in names}
    have_labels = all(p[1] is not None for p in pending)
    labels = np.concatenate([p[1] for p in pending]) if have_labels else None
    total = feeds[names[0]].shape[0]
    batch = Batch(feeds={k: v[:n].copy() for k, v in feeds.items()},
                  files=(), labels=None if labels is None else labels[:n].copy())
    rest = [] if n >= total else [({k: v[n:] for k, v in feeds.items()},
                                    None if labels is None else labels[n:])]
    return batch, rest, total - n
