"""A .npy is memory-mapped and read batch by batch with file reads: same values as np.load."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ptq.datasets.arrays import load_arrays
from ptq.graph.model import TensorInfo


def test_npy_batches_equal_the_array(tmp_path: Path) -> None:
    x = np.random.default_rng(0).random((23, 3, 5, 4)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    info = TensorInfo("input", 1, (None, 3, 5, 4))  # 1 = TensorProto.FLOAT
    data = load_arrays(tmp_path / "x.npy", [info], max_images=21)
    assert isinstance(data.arrays["input"], np.memmap)  # read by file reads, never touched
    got = np.concatenate([b.feeds["input"] for b in data.batches(4)])
    np.testing.assert_array_equal(got, x[:21])
    # float64 on disk: cast in memory, so the batches come from the cast copy, not the file
    np.save(tmp_path / "y.npy", x.astype(np.float64))
    data = load_arrays(tmp_path / "y.npy", [info])
    got = np.concatenate([b.feeds["input"] for b in data.batches(5)])
    np.testing.assert_array_equal(got, x)
    assert got.dtype == np.float32
