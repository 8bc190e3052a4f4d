"""The runner protocol every backend implements."""
from __future__ import annotations

from typing import Protocol

import numpy as np

from ptq.graph.model import TensorInfo


class Runner(Protocol):
    """Build lazily in `__enter__`, run `infer` many times, release in `__exit__`."""

    def __enter__(self) -> Runner: ...

    def __exit__(self, *exc: object) -> None: ...

    def input_metadata(self) -> list[TensorInfo]: ...

    def infer(self, feeds: dict[str, np.ndarray],
              outputs: list[str] | None = None) -> dict[str, np.ndarray]: ...
