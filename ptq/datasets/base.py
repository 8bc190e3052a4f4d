"""What every data source yields: `Batch` objects of model-ready arrays.

Sources (image folders, npy/npz files, any iterable, a torch DataLoader) all turn
into an iterator of batches whose `feeds` map input names to arrays of the model's
dtype and layout; file names and labels ride along for accuracy metrics and hooks.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterator, Protocol

import numpy as np

from ptq.errors import DataError
from ptq.graph.model import TensorInfo


@dataclass(frozen=True)
class Batch:
    feeds: dict[str, np.ndarray]
    files: tuple[str, ...] = ()
    labels: np.ndarray | None = None

    @property
    def size(self) -> int:
        return int(next(iter(self.feeds.values())).shape[0])


@dataclass
class Skipped:
    """Inputs that could not be used, kept for the summary and ranges.json."""

    items: list[tuple[str, str]] = field(default_factory=list)

    def add(self, name: str, reason: str) -> None:
        self.items.append((name, reason))

    def __len__(self) -> int:
        return len(self.items)

    def to_list(self) -> list[dict]:
        return [{"file": f, "reason": r} for f, r in self.items]


class DataSource(Protocol):
    """An iterable of samples that can be re-iterated in batches."""

    skipped: Skipped

    def __len__(self) -> int: ...

    def batches(self, batch_size: int) -> Iterator[Batch]: ...

    def describe(self) -> dict: ...


def fixed_batch(inputs: list[TensorInfo]) -> int | None:
    """The static batch dimension shared by the inputs, or None when it is dynamic."""
    dims = {i.shape[0] for i in inputs if i.shape and isinstance(i.shape[0], int) and i.shape[0] > 0}
    if len(dims) > 1:
        raise DataError(f"inputs disagree on the batch dimension ({sorted(dims)})",
                        hint="export the model with one batch dimension for all inputs")
    return dims.pop() if dims else None


def check_sample_shape(info: TensorInfo, arr: np.ndarray, origin: str) -> None:
    """Fail early, naming the input, when an array cannot feed a static dimension."""
    if info.shape is None:
        return
    if arr.ndim != len(info.shape):
        raise DataError(f"input '{info.name}' expects rank {len(info.shape)} "
                        f"{_fmt(info.shape)}, got shape {tuple(arr.shape)}", path=origin,
                        hint="reshape the data to the model's input layout")
    for axis, (want, got) in enumerate(zip(info.shape[1:], arr.shape[1:]), start=1):
        if isinstance(want, int) and want > 0 and want != got:
            raise DataError(f"input '{info.name}' expects {_fmt(info.shape)}, got "
                            f"{tuple(arr.shape)} (axis {axis})", path=origin,
                            hint="resize the data or export the model with that size")


def _fmt(shape: tuple) -> str:
    return "[" + ",".join(str(d) if d is not None else "?" for d in shape) + "]"
