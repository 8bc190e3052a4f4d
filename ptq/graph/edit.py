"""Graph-edit primitives shared by every pass (statistics outputs, Q/DQ, Cast).

Each public function takes a ModelProto and returns a new one; none mutates its
argument. `finalize` is the single exit: it fixes the IR version for ONNX Runtime
and runs the full ONNX checker.
"""
from __future__ import annotations

import tempfile
from pathlib import Path

import onnx
from onnx import helper

from ptq.errors import InternalError
from ptq.graph.model import TensorInfo

# ONNX Runtime refuses IR versions newer than it knows; recent onnx writes newer
# ones by default. IR 8 covers opsets up to 18; finalize picks the minimum needed.
ORT_MAX_IR_VERSION = 10
_PROTOBUF_LIMIT = 1_800_000_000  # bytes; above this a model must use external data


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


def finalize(model: onnx.ModelProto, *, check: bool = True) -> onnx.ModelProto:
    """Set an ORT-compatible IR version (in place, on a model the pass owns) and run the
    full checker: a failure here is a ptq bug, not bad input."""
    model.ir_version = compatible_ir_version(model)
    if check:
        try:
            if model.ByteSize() < _PROTOBUF_LIMIT:
                onnx.checker.check_model(model, full_check=True)
        except onnx.checker.ValidationError as exc:
            raise InternalError(f"ptq produced an invalid ONNX graph: {exc}") from exc
    return model


def session_source(model: onnx.ModelProto, workdir: str | Path | None = None) -> bytes | str:
    """Bytes for an ONNX Runtime session, or a temp file path for models over 2 GB."""
    if model.ByteSize() < _PROTOBUF_LIMIT:
        return model.SerializeToString()
    workdir = Path(workdir or tempfile.mkdtemp(prefix="ptq-"))
    path = workdir / "model.onnx"
    onnx.save_model(model, str(path), save_as_external_data=True,
                    all_tensors_to_one_file=True, location="model.data")
    return str(path)
