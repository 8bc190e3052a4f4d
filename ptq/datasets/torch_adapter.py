"""torch interop: tensors become numpy arrays; torch is imported only if one is seen.

`from_dataloader(loader, model)` wraps a `torch.utils.data.DataLoader` (or any
iterable) as a ptq data source.
"""
from __future__ import annotations

import sys
from typing import Any

import numpy as np


def to_numpy(x: Any) -> Any:
    """torch.Tensor -> ndarray (detached, on CPU); anything else unchanged."""
    if type(x).__module__.startswith("torch") and "torch" in sys.modules:
        import torch  # already imported by whoever made the tensor

        if isinstance(x, torch.Tensor):
            return x.detach().cpu().numpy()
    return x


def from_dataloader(loader: Any, inputs: list, *, max_images: int | None = None):
    """A ptq data source over a torch DataLoader: items `x`, `(x, y)` or `{name: x}`."""
    from ptq.datasets.iterable import IterableData

    return IterableData(loader, inputs, max_images=max_images,
                        origin=f"<{type(loader).__name__}>")


__all__ = ["from_dataloader", "to_numpy", "np"]
