"""Graph-edit primitives shared by every pass (statistics outputs, Q/DQ, Cast), and the
two ways a model leaves ptq: an ONNX Runtime session source and a file.

Each public edit takes a ModelProto and returns a new one; none mutates its argument.
`finalize` is the single exit of a pass: it fixes the IR version for ONNX Runtime and
runs the full ONNX checker (on the weightless skeleton, so >2 GB and external-data
models are checked too). `save_model` streams external weights into `<name>.data`
tensor by tensor, so a model of any size is written without holding it twice.
"""
from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import onnx
from onnx import TensorProto, helper

from ptq.atomic import write_bytes
from ptq.errors import InternalError
from ptq.graph.model import (DATA_DIR_KEY, PROTOBUF_LIMIT, TensorInfo, copy_fields, data_dir,
                             set_data_dir, skeleton, uses_external_data, weight_bytes)

# ONNX Runtime refuses IR versions newer than it knows; recent onnx writes newer
# ones by default. IR 8 covers opsets up to 18; finalize picks the minimum needed.
ORT_MAX_IR_VERSION = 10
_INLINE_MAX = 1024      # bytes; smaller initializers stay inside the .onnx of an external-data model
_ALIGN = 4096           # external tensors start on page boundaries so ONNX Runtime can mmap them
_ORT_DATA_DIR = "session.model_external_initializers_file_folder_path"


def copy_model(model: onnx.ModelProto) -> onnx.ModelProto:
    out = onnx.ModelProto()
    out.CopyFrom(model)
    return out


def add_outputs(model: onnx.ModelProto, tensors: list[TensorInfo]) -> onnx.ModelProto:
    """Expose intermediate tensors as graph outputs (existing outputs are kept)."""
    out = copy_model(model)
    present = {o.name for o in out.graph.output}
    for t in tensors:
        if t.name in present:
            continue
        shape = None if t.shape is None else [d if d is not None else None for d in t.shape]
        out.graph.output.append(helper.make_tensor_value_info(t.name, t.elem_type, shape))
        present.add(t.name)
    return out


def compatible_ir_version(model: onnx.ModelProto) -> int:
    """The lowest IR version that supports the model's opsets (what ORT accepts)."""
    opsets = [o for o in model.opset_import if o.domain in ("", "ai.onnx")]
    needed = helper.find_min_ir_version_for(opsets, ignore_unknown=True) if opsets else 3
    return max(needed, min(model.ir_version, ORT_MAX_IR_VERSION))


def _is_large(model: onnx.ModelProto) -> bool:
    return uses_external_data(model) or model.ByteSize() >= PROTOBUF_LIMIT


def finalize(model: onnx.ModelProto, *, check: bool = True) -> onnx.ModelProto:
    """Set an ORT-compatible IR version (in place, on a model the pass owns) and run the
    full checker: a failure here is a ptq bug, not bad input."""
    model.ir_version = compatible_ir_version(model)
    if check:
        try:
            onnx.checker.check_model(skeleton(model) if _is_large(model) else model,
                                     full_check=True)
        except onnx.checker.ValidationError as exc:
            raise InternalError(f"ptq produced an invalid ONNX graph: {exc}") from exc
    return model


@dataclass
class SessionInput:
    """What ONNX Runtime gets for a ModelProto: bytes (plus the folder of its external
    weights), or, for a >2 GB proto held in memory, a temp file removed by `close`."""

    source: bytes | str
    config: dict[str, str] = field(default_factory=dict)
    tmpdir: str | None = None

    def close(self) -> None:
        if self.tmpdir is not None:
            shutil.rmtree(self.tmpdir, ignore_errors=True)
            self.tmpdir = None


def session_input(model: onnx.ModelProto) -> SessionInput:
    folder = data_dir(model)
    if weight_bytes(model) < PROTOBUF_LIMIT * 0.9 or model.ByteSize() < PROTOBUF_LIMIT:
        config = {_ORT_DATA_DIR: str(folder)} if folder is not None else {}
        return SessionInput(model.SerializeToString(), config)
    tmp = tempfile.mkdtemp(prefix="ptq-session-")
    try:
        save_model(model, Path(tmp) / "model.onnx")
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return SessionInput(str(Path(tmp) / "model.onnx"), {}, tmp)


def save_model(model: onnx.ModelProto, path: str | Path) -> Path:
    """Write atomically (never a partial file at `path`). Small models are one file;
    a model with external weights or over protobuf's limit writes every initializer of
    1 KB or more to `<name>.data` next to it, one tensor at a time."""
    path = Path(path)
    if not _is_large(model):
        if data_dir(model) is not None:
            model = copy_model(model)
            set_data_dir(model, None)
        return write_bytes(path, model.SerializeToString())
    path.parent.mkdir(parents=True, exist_ok=True)
    data_name = f"{path.name}.data"
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=".ptq-"))
    try:
        out = _external_copy(model, tmp / data_name, data_name)
        with open(tmp / path.name, "wb") as fh:
            fh.write(out.SerializeToString())
        os.replace(tmp / data_name, path.parent / data_name)
        os.replace(tmp / path.name, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return path


def _external_copy(model: onnx.ModelProto, data_path: Path, location: str) -> onnx.ModelProto:
    """The model with its large initializers written to `data_path` (streamed from
    their current external files or from memory) and referenced by `location`."""
    folder = data_dir(model)
    out = onnx.ModelProto()
    copy_fields(out, model, skip=("graph",))
    copy_fields(out.graph, model.graph, skip=("initializer",))
    set_data_dir(out, None)
    with open(data_path, "wb") as data:
        for t in model.graph.initializer:
            external = t.data_location == TensorProto.EXTERNAL
            if not external and t.ByteSize() < _INLINE_MAX:
                out.graph.initializer.add().CopyFrom(t)
                continue
            offset = data.tell()
            if offset % _ALIGN:
                data.write(b"\0" * (_ALIGN - offset % _ALIGN))
                offset = data.tell()
            if external:
                length = _copy_external(t, folder, data)
            else:
                raw = t.raw_data if t.HasField("raw_data") else \
                    onnx.numpy_helper.from_array(onnx.numpy_helper.to_array(t)).raw_data
                data.write(raw)
                length = len(raw)
            new = out.graph.initializer.add()
            new.name, new.data_type = t.name, t.data_type
            new.dims.extend(t.dims)
            if t.doc_string:
                new.doc_string = t.doc_string
            new.data_location = TensorProto.EXTERNAL
            for key, value in (("location", location), ("offset", str(offset)), ("length", str(length))):
                new.external_data.add(key=key, value=value)
    return out


def _copy_external(t: onnx.TensorProto, folder: Path | None, dest) -> int:
    info = {e.key: e.value for e in t.external_data}
    if folder is None:
        raise InternalError(f"initializer '{t.name}' is external but its folder is unknown")
    offset = int(info.get("offset", 0))
    src = folder / info["location"]
    length = int(info["length"]) if "length" in info else src.stat().st_size - offset
    with open(src, "rb") as fh:
        left = length
        if hasattr(os, "copy_file_range"):             # in-kernel copy: no user-space buffer
            dest.flush()
            pos, out_pos = offset, dest.tell()
            while left:
                n = os.copy_file_range(fh.fileno(), dest.fileno(), min(left, 1 << 30), pos, out_pos)
                if n <= 0:
                    break
                pos, out_pos, left = pos + n, out_pos + n, left - n
            dest.seek(out_pos)
        fh.seek(offset + length - left)
        while left:
            chunk = fh.read(min(left, 64 << 20))
            if not chunk:
                raise InternalError(f"external data of '{t.name}' ends early in {src}")
            dest.write(chunk)
            left -= len(chunk)
    return length


__all__ = ["DATA_DIR_KEY", "SessionInput", "add_outputs", "compatible_ir_version", "copy_model",
           "finalize", "save_model", "session_input"]
