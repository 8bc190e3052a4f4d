"""Any iterable of arrays/dicts/tuples as a source: re-chunking, labels, errors, aliasing."""
from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto

from ptq.datasets import IterableData, open_data
from ptq.errors import DataError
from ptq.graph.model import TensorInfo, graph_inputs
from zoo import build_two_input_model, digits_arrays

IMAGE = TensorInfo("image", TensorProto.FLOAT, ("N", 3, 16, 16))
TWO = graph_inputs(build_two_input_model())
X, Y = (a[:23] for a in digits_arrays("calib"))


def gather(source, batch_size):
    batches = list(source.batches(batch_size))
    x = np.concatenate([b.feeds["image"] for b in batches])
    labels = None if batches[0].labels is None else np.concatenate([b.labels for b in batches])
    return [b.size for b in batches], x, labels


def test_single_samples_and_uneven_chunks_are_rebatched() -> None:
    sizes, x, labels = gather(open_data(list(X), [IMAGE]), 8)  # samples without a batch axis
    assert sizes == [8, 8, 7] and labels is None
    np.testing.assert_array_equal(x, X)
    chunks = [X[i:i + 3] for i in range(0, 23, 3)]  # 3-sample chunks into batches of 5
    sizes, x, _ = gather(IterableData(chunks, [IMAGE]), 5)
    assert sizes == [5, 5, 5, 5, 3]
    np.testing.assert_array_equal(x, X)


def test_labels_from_pairs_or_dicts() -> None:
    pairs = [(X[i:i + 4], Y[i:i + 4]) for i in range(0, 23, 4)]
    _, x, labels = gather(IterableData(pairs, [IMAGE]), 6)
    np.testing.assert_array_equal(x, X)
    np.testing.assert_array_equal(labels, Y)
    dicts = [{"image": X[i], "labels": int(Y[i])} for i in range(23)]  # scalar label per sample
    _, x, labels = gather(IterableData(dicts, [IMAGE]), 10)
    np.testing.assert_array_equal(labels, Y)


def test_two_inputs_as_tuples_or_dicts() -> None:
    a, b = np.random.default_rng(0).standard_normal((2, 6, 3, 16, 16)).astype(np.float32)
    tuples = [(a[i], b[i]) for i in range(6)]
    dicts = [{"b": b[i:i + 2], "a": a[i:i + 2]} for i in range(0, 6, 2)]
    for items in (tuples, dicts):
        batches = list(IterableData(items, TWO).batches(4))
        assert [bt.size for bt in batches] == [4, 2]
        np.testing.assert_array_equal(np.concatenate([bt.feeds["a"] for bt in batches]), a)
        np.testing.assert_array_equal(np.concatenate([bt.feeds["b"] for bt in batches]), b)


def test_max_images_stops_early_and_describe_counts() -> None:
    source = IterableData(iter(list(X)), [IMAGE], max_images=10)
    sizes, x, _ = gather(source, 4)
    assert sizes == [4, 4, 2] and source.describe()["num_files"] == 10
    np.testing.assert_array_equal(x, X[:10])


@pytest.mark.parametrize("items, inputs, match", [
    ([(X[0], X[1], X[2])], [IMAGE], "cannot interpret a 3-tuple"),
    ([X[:2]], TWO, "an array was given but the model has inputs"),
    ([{"a": X[:2]}], TWO, "no array for input 'b'"),
    ([X[:2, :, :8]], [IMAGE], r"expects \[N,3,16,16\]"),
    ([X[0, 0]], [IMAGE], "expects rank 4"),
])
def test_items_that_do_not_fit(items, inputs, match) -> None:
    with pytest.raises(DataError, match=match) as err:
        list(IterableData(items, inputs).batches(4))
    assert "<iterable>" in str(err.value) and "fix:" in str(err.value)


def test_batches_are_distinct_even_when_the_producer_reuses_one_buffer() -> None:
    # A reader that refills one buffer per sample (as ModelOpt's `[{}] * n` bug did implicitly):
    # every batch must still hold the values as they were when yielded.
    def reader():
        buf = np.empty((1, 3, 16, 16), np.float32)
        for sample in X:
            buf[0] = sample
            yield buf
    batches = list(IterableData(reader(), [IMAGE]).batches(4))
    np.testing.assert_array_equal(np.concatenate([b.feeds["image"] for b in batches]), X)
    batches[0].feeds["image"][:] = -7
    assert not any(np.shares_memory(batches[0].feeds["image"], b.feeds["image"]) for b in batches[1:])
    assert (batches[1].feeds["image"] >= 0).all()
