"""Data sources for calibration and evaluation (`ptq.datasets`, not the HF `datasets`).

`open_data` turns what the user passed (`--data` path, or an iterable in Python)
into a source of model-ready `Batch`es.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from ptq.datasets.arrays import ArrayData, load_arrays
from ptq.datasets.base import Batch, DataSource, Skipped, fixed_batch
from ptq.datasets.images import IMAGE_SUFFIXES, ImageFolder
from ptq.datasets.iterable import IterableData
from ptq.datasets.preprocess import PRESETS, Preprocess, make_preprocess
from ptq.datasets.torch_adapter import from_dataloader
from ptq.errors import DataError
from ptq.graph.model import TensorInfo

__all__ = ["ArrayData", "Batch", "DataSource", "IMAGE_SUFFIXES", "ImageFolder", "IterableData",
           "PRESETS", "Preprocess", "Skipped", "fixed_batch", "from_dataloader", "load_arrays",
           "make_preprocess", "open_data"]


def open_data(data: str | Path | Any, inputs: list[TensorInfo], *,
              preprocess: Preprocess | None = None, max_images: int | None = None,
              seed: int = 0, strict: bool = False) -> DataSource:
    """Folder of images, .npy/.npz file, an existing source, or any iterable."""
    if hasattr(data, "batches") and hasattr(data, "describe"):
        return data
    if isinstance(data, (str, Path)):
        path = Path(data)
        if path.suffix.lower() in (".npy", ".npz"):
            return load_arrays(path, inputs, max_images=max_images)
        if not path.exists():
            raise DataError("data path not found", path=path,
                            hint="pass an image folder or a .npy/.npz file to --data")
        if path.is_file():
            raise DataError("expected an image folder or a .npy/.npz file", path=path,
                            hint="put the images in a folder and pass the folder")
        if len(inputs) != 1:
            raise DataError(f"an image folder feeds one input, but the model has "
                            f"{len(inputs)} ({', '.join(i.name for i in inputs)})", path=path,
                            hint="give an npz keyed by input name, or a Python iterable")
        pre = preprocess or make_preprocess(inputs[0])
        return ImageFolder(path, inputs[0].name, pre, max_images=max_images, seed=seed,
                           strict=strict)
    return IterableData(data, inputs, max_images=max_images)
