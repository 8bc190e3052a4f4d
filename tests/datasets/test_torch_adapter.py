"""torch DataLoader adapter with plain torch (TensorDataset + DataLoader; no torchvision)."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from ptq.calibration import CalibrateConfig, calibrate
from ptq.calibrators import Method
from ptq.datasets import from_dataloader
from ptq.datasets.torch_adapter import to_numpy
from ptq.graph.model import graph_inputs, load_model
from zoo import digits_arrays

torch = pytest.importorskip("torch")
from torch.utils.data import DataLoader, TensorDataset  # noqa: E402

X, Y = digits_arrays("calib")


def test_labelled_dataloader_becomes_numpy_batches(digits_model_path: Path) -> None:
    inputs = graph_inputs(load_model(digits_model_path))
    loader = DataLoader(TensorDataset(torch.from_numpy(X[:45]), torch.from_numpy(Y[:45])), batch_size=7)
    source = from_dataloader(loader, inputs, max_images=40)
    batches = list(source.batches(16))
    assert [b.size for b in batches] == [16, 16, 8]
    assert all(isinstance(b.feeds["image"], np.ndarray) and b.feeds["image"].dtype == np.float32
               for b in batches)
    np.testing.assert_array_equal(np.concatenate([b.feeds["image"] for b in batches]), X[:40])
    np.testing.assert_array_equal(np.concatenate([b.labels for b in batches]), Y[:40])
    assert source.describe() == {"kind": "iterable", "source": "<DataLoader>", "num_files": 40}


def test_dict_batches_and_distinct_arrays(digits_model_path: Path) -> None:
    class Dicts(torch.utils.data.Dataset):
        def __len__(self) -> int:
            return 10

        def __getitem__(self, i: int) -> dict:
            return {"image": torch.from_numpy(X[i]), "labels": int(Y[i])}

    inputs = graph_inputs(load_model(digits_model_path))
    batches = list(from_dataloader(DataLoader(Dicts(), batch_size=4), inputs).batches(5))
    np.testing.assert_array_equal(np.concatenate([b.labels for b in batches]), Y[:10])
    tensor = torch.zeros(3)
    array = to_numpy(tensor)
    assert isinstance(array, np.ndarray) and to_numpy(array) is array
    batches[0].feeds["image"][:] = -1  # a batch owns its memory: the dataset is unchanged
    assert (X[:5] >= 0).all() and (batches[1].feeds["image"] >= 0).all()


def test_calibrating_from_a_dataloader_equals_calibrating_from_npz(digits_model_path: Path,
                                                                  tmp_path: Path) -> None:
    # Same samples in the same order and batch size -> bit-identical statistics and ranges.
    np.save(tmp_path / "calib.npy", X)
    config = CalibrateConfig(algorithms=tuple(Method), batch_size=32)
    from_npy = calibrate(digits_model_path, tmp_path / "calib.npy", config)
    loader = DataLoader(TensorDataset(torch.from_numpy(X), torch.from_numpy(Y)), batch_size=10)
    from_torch = calibrate(digits_model_path, loader, config)
    assert from_torch.data["num_samples"] == len(X) == 300
    a, b = from_npy.to_dict()["tensors"], from_torch.to_dict()["tensors"]
    assert a == b


def test_importing_ptq_does_not_import_torch() -> None:
    code = ("import sys, ptq.calibration, ptq.datasets, ptq.cli.calibrate; "
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
