"""npy/npz sources: single and multi-input, labels, dtype casts, shape checks, bad files."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from onnx import TensorProto

from ptq.datasets import ArrayData, load_arrays, open_data
from ptq.errors import DataError
from ptq.graph.model import TensorInfo, graph_inputs
from zoo import build_two_input_model, digits_arrays

IMAGE = TensorInfo("image", TensorProto.FLOAT, ("N", 3, 16, 16))
TWO = graph_inputs(build_two_input_model())  # a, b: [N,3,16,16]


@pytest.fixture(scope="module")
def digits() -> tuple[np.ndarray, np.ndarray]:
    x, y = digits_arrays("calib")
    return x[:50], y[:50]


def collect(source, batch_size: int):
    batches = list(source.batches(batch_size))
    feeds = {k: np.concatenate([b.feeds[k] for b in batches]) for k in batches[0].feeds}
    labels = None if batches[0].labels is None else np.concatenate([b.labels for b in batches])
    return batches, feeds, labels


def test_npy_for_a_single_input(tmp_path: Path, digits) -> None:
    x, _ = digits
    np.save(tmp_path / "x.npy", x.astype(np.float64))  # cast to the model's float32
    source = open_data(tmp_path / "x.npy", [IMAGE])
    batches, feeds, labels = collect(source, 16)
    assert [b.size for b in batches] == [16, 16, 16, 2] and labels is None
    assert feeds["image"].dtype == np.float32
    np.testing.assert_array_equal(feeds["image"], x)
    assert batches[1].files == tuple(f"#{i}" for i in range(16, 32))
    d = source.describe()
    assert d["kind"] == "arrays" and d["num_files"] == 50
    assert d["arrays"] == {"image": {"shape": [50, 3, 16, 16], "dtype": "float32"}}


def test_npz_keyed_or_single_unnamed_array_with_labels(tmp_path: Path, digits) -> None:
    x, y = digits
    np.savez(tmp_path / "keyed.npz", image=x, labels=y)
    np.savez(tmp_path / "unnamed.npz", x)  # stored as arr_0: fine for a one-input model
    for name in ("keyed.npz", "unnamed.npz"):
        _, feeds, labels = collect(load_arrays(tmp_path / name, [IMAGE]), 32)
        np.testing.assert_array_equal(feeds["image"], x)
    _, _, labels = collect(load_arrays(tmp_path / "keyed.npz", [IMAGE]), 32)
    np.testing.assert_array_equal(labels, y)


def test_npz_for_a_two_input_model(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((2, 10, 3, 16, 16)).astype(np.float32)
    np.savez(tmp_path / "two.npz", a=a, b=b, labels=np.arange(10))
    batches, feeds, labels = collect(open_data(tmp_path / "two.npz", TWO, max_images=7), 4)
    assert [bt.size for bt in batches] == [4, 3]
    np.testing.assert_array_equal(feeds["a"], a[:7])
    np.testing.assert_array_equal(feeds["b"], b[:7])
    np.testing.assert_array_equal(labels, np.arange(7))


def test_an_input_named_labels_is_not_taken_for_labels() -> None:
    inputs = [TensorInfo("labels", TensorProto.FLOAT, ("N", 2))]
    source = ArrayData({"labels": np.ones((3, 2))}, inputs)
    batch = next(source.batches(8))
    assert batch.labels is None and batch.feeds["labels"].shape == (3, 2)


@pytest.mark.parametrize("arrays, match", [
    ({"a": np.zeros((4, 3, 16, 16))}, r"missing \['b'\]"),
    ({"a": np.zeros((4, 3, 16, 16)), "b": np.zeros((4, 3, 16, 16)), "c": np.zeros(4)}, r"unexpected \['c'\]"),
    ({"a": np.zeros((4, 3, 16, 16)), "b": np.zeros((5, 3, 16, 16))}, "different or zero sample counts"),
    ({"a": np.zeros((0, 3, 16, 16)), "b": np.zeros((0, 3, 16, 16))}, "different or zero sample counts"),
    ({"a": np.zeros((4, 3, 16, 16)), "b": np.zeros((4, 16, 16, 3))}, r"input 'b' expects \[N,3,16,16\]"),
    ({"a": np.zeros((4, 3, 16)), "b": np.zeros((4, 3, 16, 16))}, "input 'a' expects rank 4"),
    ({"a": np.array([["x"] * 4] * 2), "b": np.zeros((2, 3, 16, 16))}, "dtype"),
])
def test_arrays_that_do_not_fit_the_model(tmp_path: Path, arrays: dict, match: str) -> None:
    path = tmp_path / "data.npz"
    np.savez(path, **arrays)
    with pytest.raises(DataError, match=match) as err:
        load_arrays(path, TWO)
    assert str(path) in str(err.value) and "fix:" in str(err.value)


def test_bad_files(tmp_path: Path) -> None:
    np.save(tmp_path / "one.npy", np.zeros((2, 3, 16, 16), np.float32))
    with pytest.raises(DataError, match="one array given but the model has 2 inputs"):
        load_arrays(tmp_path / "one.npy", TWO)
    np.save(tmp_path / "objects.npy", np.array([{"a": 1}, None], dtype=object), allow_pickle=True)
    with pytest.raises(DataError, match="cannot read array file") as err:
        load_arrays(tmp_path / "objects.npy", [IMAGE])
    assert "object arrays" in str(err.value)
    np.savez(tmp_path / "objects.npz", image=np.array([{"a": 1}, None], dtype=object))
    with pytest.raises(DataError, match="cannot read array file"):
        load_arrays(tmp_path / "objects.npz", [IMAGE])
    whole = (tmp_path / "one.npy").read_bytes()
    (tmp_path / "truncated.npy").write_bytes(whole[: len(whole) // 2])
    with pytest.raises(DataError, match="cannot read array file"):
        load_arrays(tmp_path / "truncated.npy", [IMAGE])
    (tmp_path / "junk.npz").write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(DataError, match="cannot read array file"):
        load_arrays(tmp_path / "junk.npz", [IMAGE])
    with pytest.raises(DataError, match="not found"):
        open_data(tmp_path / "missing.npz", [IMAGE])


def test_batches_are_copies(tmp_path: Path, digits) -> None:
    x, _ = digits
    np.save(tmp_path / "x.npy", x)
    source = load_arrays(tmp_path / "x.npy", [IMAGE])
    first, second = list(source.batches(25))
    assert not np.shares_memory(first.feeds["image"], second.feeds["image"])
    assert not np.shares_memory(first.feeds["image"], source.arrays["image"])
    first.feeds["image"][:] = 42.0
    np.testing.assert_array_equal(next(source.batches(25)).feeds["image"], x[:25])
