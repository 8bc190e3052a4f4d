"""npy/npz data source: one array for a single-input model, or a dict keyed by input name.

Arrays carry the sample axis first. An npz may also hold `labels` (int class per
sample) for accuracy metrics, as long as no model input is called that.
"""
from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Iterator

import numpy as np

from ptq.datasets.base import Batch, Skipped, check_sample_shape
from ptq.errors import DataError
from ptq.graph.model import TensorInfo

LABELS_KEY = "labels"


class ArrayData:
    """In-memory arrays sliced into batches (cast to each input's dtype)."""

    def __init__(self, arrays: dict[str, np.ndarray], inputs: list[TensorInfo], *,
                 origin: str = "<arrays>", labels: np.ndarray | None = None,
                 max_images: int | None = None) -> None:
        names = [i.name for i in inputs]
        missing = [n for n in names if n not in arrays]
        extra = [k for k in arrays if k not in names]
        if missing or extra:
            raise DataError(f"arrays do not match the model inputs: missing {missing}, "
                            f"unexpected {extra} (model inputs: {names})", path=origin,
                            hint="save an npz keyed by input name: np.savez(f, **{name: array})")
        lengths = {len(arrays[n]) for n in names}
        if len(lengths) != 1 or 0 in lengths:
            raise DataError(f"inputs have different or zero sample counts ({sorted(lengths)})",
                            path=origin, hint="give every input the same number of samples")
        self.arrays = {}
        for info in inputs:
            arr = np.asanyarray(arrays[info.name])  # keeps a memory-mapped .npy mapped
            if not np.issubdtype(arr.dtype, np.number):
                raise DataError(f"array '{info.name}' has dtype {arr.dtype}", path=origin,
                                hint="store numeric arrays")
            check_sample_shape(info, arr, origin)
            self.arrays[info.name] = arr[:max_images].astype(info.dtype, copy=False)
        self.labels = None if labels is None else _check_labels(np.asarray(labels),
                                                                 lengths.pop(), origin)[:max_images]
        self.origin = origin
        self.skipped = Skipped()

    def __len__(self) -> int:
        return len(next(iter(self.arrays.values())))

    def batches(self, batch_size: int) -> Iterator[Batch]:
        for s in range(0, len(self), batch_size):
            feeds = {k: _rows(v, s, s + batch_size) for k, v in self.arrays.items()}
            n = len(next(iter(feeds.values())))
            yield Batch(feeds=feeds, files=tuple(f"#{i}" for i in range(s, s + n)),
                        labels=None if self.labels is None else self.labels[s:s + n])

    def describe(self) -> dict:
        return {"kind": "arrays", "source": self.origin, "num_files": len(self),
                "arrays": {k: {"shape": list(v.shape), "dtype": v.dtype.name}
                           for k, v in self.arrays.items()}}


def _check_labels(labels: np.ndarray, count: int, origin: str) -> np.ndarray:
    """Labels ride along per sample: numeric, first axis as long as the data. Their shape is
    checked by whatever consumes them (class metrics want one integer per sample, detection
    metrics box arrays)."""
    if labels.ndim == 0 or not np.issubdtype(labels.dtype, np.number):
        raise DataError(f"'{LABELS_KEY}' must be a numeric array with one entry per sample, got "
                        f"shape {tuple(labels.shape)} dtype {labels.dtype}", path=origin,
                        hint="store class indices (or per-sample box arrays) as 'labels'")
    if len(labels) != count:
        raise DataError(f"'{LABELS_KEY}' has {len(labels)} entries but the data has {count} "
                        "samples", path=origin, hint="give one label per sample")
    return labels


def _rows(array: np.ndarray, start: int, stop: int) -> np.ndarray:
    """array[start:stop] as a fresh array. A memory-mapped .npy is read with plain file reads:
    pages touched through the map stay in the process's RSS until it exits, so 2048 images
    would leave 1.2 GB resident after they were used."""
    if isinstance(array, np.memmap) and array.flags.c_contiguous and array.filename:
        stop = min(stop, len(array))
        row = int(np.prod(array.shape[1:], dtype=np.int64))
        offset = array.offset + start * row * array.dtype.itemsize
        out = np.fromfile(array.filename, array.dtype, count=max(0, stop - start) * row,
                          offset=offset)
        return out.reshape(max(0, stop - start), *array.shape[1:])
    return array[start:stop].copy()


def load_arrays(path: str | Path, inputs: list[TensorInfo], *,
                max_images: int | None = None) -> ArrayData:
    path = Path(path)
    if not path.is_file():
        raise DataError("data file not found", path=path, hint="check the --data path")
    try:  # npz members are read lazily: a bad member fails inside the comprehension
        # .npy is memory-mapped: batches are read as they are used, so host memory does not
        # grow with the number of samples (npz members cannot be mapped).
        loaded = np.load(path, allow_pickle=False, mmap_mode="r")
        if not isinstance(loaded, np.ndarray):
            with loaded:
                loaded = {k: loaded[k] for k in loaded.files}
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as exc:
        raise DataError(f"cannot read array file ({exc})".splitlines()[0], path=path,
                        hint="save with np.save / np.savez (object arrays are not accepted)") from None
    if isinstance(loaded, np.ndarray):
        if len(inputs) != 1:
            raise DataError(f"one array given but the model has {len(inputs)} inputs "
                            f"({', '.join(i.name for i in inputs)})", path=path,
                            hint="save an npz keyed by input name")
        arrays, labels = {inputs[0].name: loaded}, None
    else:
        arrays = loaded
        names = {i.name for i in inputs}
        labels = arrays.pop(LABELS_KEY) if LABELS_KEY in arrays and LABELS_KEY not in names else None
        if len(inputs) == 1 and len(arrays) == 1 and inputs[0].name not in arrays:
            arrays = {inputs[0].name: next(iter(arrays.values()))}
    return ArrayData(arrays, inputs, origin=str(path), labels=labels, max_images=max_images)
