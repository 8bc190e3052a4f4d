"""Loading and inspecting ONNX models with errors a user can act on."""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, numpy_helper

from ptq.errors import ModelLoadError, exception_line

FLOAT_TYPES = {TensorProto.FLOAT: np.float32, TensorProto.FLOAT16: np.float16,
               TensorProto.DOUBLE: np.float64, TensorProto.BFLOAT16: np.float32}


@dataclass(frozen=True)
class TensorInfo:
    """A named tensor with its element type and (possibly symbolic) shape."""

    name: str
    elem_type: int
    shape: tuple[int | str | None, ...] | None  # None = rank unknown

    @property
    def is_float(self) -> bool:
        return self.elem_type in FLOAT_TYPES

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(onnx.helper.tensor_dtype_to_np_dtype(self.elem_type))

    def to_dict(self) -> dict:
        return {"name": self.name, "dtype": self.dtype.name,
                "shape": None if self.shape is None else list(self.shape)}


@dataclass(frozen=True)
class Activation:
    """A float tensor computed from the graph inputs: what calibration observes."""

    name: str
    producer: str | None  # node name; None for a graph input
    op_type: str          # producer op type, or "Input"
    info: TensorInfo


# metadata key holding the folder a lazily loaded model's external weight files live in;
# ptq's own copies carry it (sessions and weight reads resolve data through it) and
# `ptq.graph.edit.save_model` drops it, so it never reaches a file ptq writes.
DATA_DIR_KEY = "ptq.external_data_dir"
# protobuf cannot serialize a message of 2 GiB or more; ptq switches to external data below it
PROTOBUF_LIMIT = 1_800_000_000


def load_model(path: str | Path, *, load_weights: bool = True, check: bool = True) -> onnx.ModelProto:
    """Load an ONNX file or raise ModelLoadError naming it.

    External weights under 900 MB are read into the proto (it stays one serializable
    message). Larger ones are never read here: the proto keeps its references and
    remembers their folder (`data_dir`), so a 10 GB model costs a few MB, ONNX Runtime
    maps the weights itself and `ptq.graph.edit.save_model` streams them to the output.
    `load_weights=False` skips the data entirely (for reading the graph only);
    `check` runs onnx.checker on the file (path-based, so >2 GB works) and refuses
    an invalid model here rather than as a ptq bug later.
    """
    path = Path(path)
    if not path.is_file():
        raise ModelLoadError("model file not found", path=path,
                             hint="check the path; ptq reads .onnx files")
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # protobuf raises DecodeError, sometimes others
        raise ModelLoadError(f"not a valid ONNX file ({type(exc).__name__})", path=path,
                             hint="re-export the model; the file may be truncated or not ONNX") from None
    if not model.graph.node:
        raise ModelLoadError("the graph has no nodes", path=path, hint="export the full model")
    if uses_external_data(model):
        if load_weights:
            _check_external_files(model, path)
        if load_weights and _external_bytes(model) < PROTOBUF_LIMIT // 2:
            onnx.load_external_data_for_model(model, str(path.parent))  # small: in memory
        else:
            set_data_dir(model, path.resolve().parent)
    if check:
        _fill_io_shapes(model)
        check_model(model, path)
    name_unnamed_nodes(model)
    return model


def _fill_io_shapes(model: onnx.ModelProto) -> None:
    """Graph inputs/outputs declared without a shape (ONNX Runtime runs them, the checker
    refuses them) get the shape ONNX shape inference finds, on ptq's copy only."""
    io = [v for v in (*model.graph.input, *model.graph.output)
          if v.type.HasField("tensor_type") and not v.type.tensor_type.HasField("shape")]
    if not io:
        return
    try:
        inferred = onnx.shape_inference.infer_shapes(skeleton(model), strict_mode=False).graph
    except Exception:  # custom ops: the checker below reports what is missing
        return
    found = {v.name: v for v in (*inferred.input, *inferred.output, *inferred.value_info)}
    for v in io:
        if v.name in found and found[v.name].type.tensor_type.HasField("shape"):
            v.type.tensor_type.shape.CopyFrom(found[v.name].type.tensor_type.shape)


def check_model(model: onnx.ModelProto, path: str | Path | None) -> None:
    """onnx.checker on the weightless skeleton (so >2 GB and external-data models work;
    their data files are checked on load), as a ModelLoadError naming the file."""
    _check_order(model, path)
    try:
        onnx.checker.check_model(skeleton(model))
    except onnx.checker.ValidationError as exc:
        line = exception_line(exc)
        hint = ("declare a shape for every graph input and output (dims may be symbolic, e.g. "
                "'N') and re-export" if "'shape' of 'type' is required" in line else
                "fix the exporter output (run onnx.checker.check_model on it for the full "
                "message) and re-export")
        raise ModelLoadError(f"the model fails the ONNX checker: {line}", path=path,
                             hint=hint) from None
    except Exception as exc:  # protobuf/OS errors from the C++ checker
        raise ModelLoadError(f"the ONNX checker cannot read the model ({exception_line(exc)})",
                             path=path, hint="re-export the model") from None


def _check_order(model: onnx.ModelProto, path: str | Path | None) -> None:
    """ONNX requires nodes in topological order; say which node breaks it (the checker's
    own message for this is often about a missing shape instead)."""
    g = model.graph
    known = {i.name for i in g.input} | {t.name for t in g.initializer} | {""}
    produced = {o for n in g.node for o in n.output}
    for node in g.node:
        late = next((x for x in node.input if x not in known and x in produced), None)
        if late is not None:
            raise ModelLoadError(f"nodes are not in topological order: node '{node.name or node.op_type}' "
                                 f"reads '{late}' before the node that produces it", path=path,
                                 hint="re-export the model, or sort it (onnx-graphsurgeon "
                                      "graph.toposort(), or onnxsim)")
        known.update(node.output)


def activations_after_input(model: onnx.ModelProto, path: str | Path | None = None) -> list[Activation]:
    """`activations`, refusing a model that computes no float tensor from its inputs
    (nothing for calibration to observe and nothing for Q/DQ to act on)."""
    acts = activations(model)
    if not any(a.producer is not None for a in acts):
        raise ModelLoadError("no float tensor is computed from the model's inputs (nothing to "
                             "calibrate or quantize)", path=path,
                             hint="ptq quantizes float networks (Conv/MatMul/Gemm on float "
                                  "activations); check that this is the model you meant")
    return acts


def _check_external_files(model: onnx.ModelProto, path: Path) -> None:
    for t in model.graph.initializer:
        if t.data_location != TensorProto.EXTERNAL:
            continue
        info = dict((e.key, e.value) for e in t.external_data)
        loc = info.get("location", "")
        file = path.parent / loc
        bad = not loc or Path(loc).is_absolute() or ".." in Path(loc).parts or not file.is_file()
        if not bad:
            end = int(info.get("offset", 0)) + int(info.get("length", 0))
            bad = end > file.stat().st_size
        if bad:
            raise ModelLoadError(f"external weight data could not be read (initializer "
                                 f"'{t.name}', location {loc!r})", path=path,
                                 hint="keep the model's external data files next to it "
                                      "(same relative location as when it was saved)")


def _external_bytes(model: onnx.ModelProto) -> int:
    return sum(int(next((e.value for e in t.external_data if e.key == "length"), 0))
               for t in model.graph.initializer if t.data_location == TensorProto.EXTERNAL)


def data_dir(model: onnx.ModelProto) -> Path | None:
    """The folder of a lazily loaded model's external weights (None: all in memory)."""
    value = next((p.value for p in model.metadata_props if p.key == DATA_DIR_KEY), None)
    return Path(value) if value else None


def set_data_dir(model: onnx.ModelProto, folder: Path | None) -> None:
    keep = [p for p in model.metadata_props if p.key != DATA_DIR_KEY]
    del model.metadata_props[:]
    model.metadata_props.extend(keep)
    if folder is not None:
        model.metadata_props.add(key=DATA_DIR_KEY, value=str(folder))


def tensor_array(tensor: onnx.TensorProto, folder: Path | None) -> np.ndarray:
    """An initializer's values, read from its external file when it has one."""
    if tensor.data_location == TensorProto.EXTERNAL:
        if folder is None:
            raise ModelLoadError(f"initializer '{tensor.name}' is external data that was not loaded",
                                 hint="pass the model path, or onnx.load() it with its data files")
        return numpy_helper.to_array(tensor, base_dir=str(folder))
    return numpy_helper.to_array(tensor)


def node_attribute(node: onnx.NodeProto, name: str, default=None):
    """The value of a node's attribute `name`, or `default` when it is not set."""
    for a in node.attribute:
        if a.name == name:
            return onnx.helper.get_attribute_value(a)
    return default


def weight_bytes(model: onnx.ModelProto) -> int:
    """The initializers' data in memory: what decides protobuf's 2 GB limit, read without
    serializing (`ByteSize` walks the whole message: 34 ms for EfficientNet-Lite0)."""
    total = 0
    for t in model.graph.initializer:
        total += len(t.raw_data) + 4 * (len(t.float_data) + len(t.int32_data)) \
            + 8 * (len(t.int64_data) + len(t.double_data) + len(t.uint64_data)) \
            + sum(len(b) for b in t.string_data)
    return total


def skeleton(model: onnx.ModelProto) -> onnx.ModelProto:
    """The graph without its weight data: initializers become typed graph inputs.

    Shape inference and the checker need types, not values; this keeps them under
    protobuf's 2 GB limit and independent of where external data lives."""
    out = onnx.ModelProto()
    copy_fields(out, model, skip=("graph",))
    g = out.graph
    copy_fields(g, model.graph, skip=("initializer", "input"))
    inits = {t.name for t in model.graph.initializer}
    g.input.extend(vi for vi in model.graph.input if vi.name not in inits)
    for t in model.graph.initializer:
        g.input.append(onnx.helper.make_tensor_value_info(t.name, t.data_type, list(t.dims)))
    return out


def copy_fields(dest, src, *, skip: tuple[str, ...]) -> None:
    """Copy every set field of protobuf message `src` into `dest` except `skip` (a shallow
    way to copy a model without its weights)."""
    for f, value in src.ListFields():
        if f.name in skip:
            continue
        repeated = f.is_repeated if hasattr(f, "is_repeated") else f.label == f.LABEL_REPEATED
        if repeated:
            getattr(dest, f.name).extend(value)
        elif f.type == f.TYPE_MESSAGE:
            getattr(dest, f.name).CopyFrom(value)
        else:
            setattr(dest, f.name, value)


def name_unnamed_nodes(model: onnx.ModelProto) -> None:
    """Give nameless nodes a stable name `<OpType>_<index>`: every report, pin and
    cache entry refers to nodes by name, so each one needs one (done on load, on
    ptq's own copy)."""
    taken = {n.name for n in model.graph.node if n.name}
    for i, node in enumerate(model.graph.node):
        if not node.name:
            name, k = f"{node.op_type}_{i}", 0
            while name in taken:
                k += 1
                name = f"{node.op_type}_{i}_{k}"
            node.name = name
            taken.add(name)


def uses_external_data(model: onnx.ModelProto) -> bool:
    return any(t.data_location == TensorProto.EXTERNAL for t in model.graph.initializer)


def external_data_files(model_path: str | Path) -> list[Path]:
    """The external data files a model refers to (for hashing and copying)."""
    model = onnx.load(str(model_path), load_external_data=False)  # the IR layer's one other read
    files = []
    for t in model.graph.initializer:
        if t.data_location == TensorProto.EXTERNAL:
            loc = next((e.value for e in t.external_data if e.key == "location"), None)
            if loc and (p := Path(model_path).parent / loc) not in files:
                files.append(p)
    return files


def model_sha256(path: str | Path) -> str:
    """Hash of the model file and its external data: the identity of a calibration."""
    h = hashlib.sha256()
    for p in [Path(path), *external_data_files(path)]:
        with open(p, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()


def _info(vi: onnx.ValueInfoProto) -> TensorInfo:
    t = vi.type.tensor_type
    shape = None
    if t.HasField("shape"):
        shape = tuple(d.dim_value if d.HasField("dim_value") else (d.dim_param or None)
                      for d in t.shape.dim)
    return TensorInfo(vi.name, t.elem_type, shape)


def graph_inputs(model: onnx.ModelProto) -> list[TensorInfo]:
    """Real inputs (initializers listed as inputs by old exporters are skipped)."""
    inits = {t.name for t in model.graph.initializer}
    return [_info(vi) for vi in model.graph.input if vi.name not in inits]


def float_inputs(model: onnx.ModelProto, path: str | Path | None = None) -> list[TensorInfo]:
    inputs = graph_inputs(model)
    floats = [i for i in inputs if i.is_float]
    if not floats:
        kinds = ", ".join(f"{i.name}:{i.dtype.name}" for i in inputs) or "none"
        raise ModelLoadError(f"the model has no float input (inputs: {kinds})", path=path,
                             hint="ptq calibrates float activations; quantize the model "
                                  "that takes float images")
    return floats


def infer_types(model: onnx.ModelProto) -> dict[str, TensorInfo]:
    """Type and shape of every tensor ONNX shape inference can reach."""
    try:
        inferred = onnx.shape_inference.infer_shapes(skeleton(model), strict_mode=False)
    except Exception:  # custom ops: fall back to what is declared
        inferred = model
    g = inferred.graph
    infos = {vi.name: _info(vi) for vi in [*g.input, *g.value_info, *g.output]}
    for init in g.initializer:
        infos.setdefault(init.name, TensorInfo(init.name, init.data_type, tuple(init.dims)))
    return infos


def activations(model: onnx.ModelProto) -> list[Activation]:
    """Float tensors that depend on a graph input, in graph (topological) order.

    Outputs of constant subgraphs (weights, shape arithmetic) are not activations:
    TensorRT folds them, and their ranges come from the weights themselves. Tensors
    ONNX shape inference cannot type (contrib or custom ops) are typed by ONNX Runtime,
    so calibration still observes every tensor a Q/DQ may need.
    """
    types = infer_types(model)
    live = {i.name for i in graph_inputs(model)}
    order: list[tuple[str, onnx.NodeProto]] = []
    for node in model.graph.node:
        if not any(name in live for name in node.input if name):
            continue
        for out in node.output:
            if out:
                live.add(out)
                order.append((out, node))
    unknown = [out for out, _ in order if out not in types or types[out].elem_type == 0]
    if unknown:
        types = {**types, **_ort_types(model, unknown)}
    acts = [Activation(i.name, None, "Input", i) for i in graph_inputs(model) if i.is_float]
    for out, node in order:
        info = types.get(out)
        if info is not None and info.is_float:
            acts.append(Activation(out, node.name or None, node.op_type, info))
    return acts


_ORT_FLOAT = {"tensor(float)": TensorProto.FLOAT, "tensor(float16)": TensorProto.FLOAT16,
              "tensor(double)": TensorProto.DOUBLE, "tensor(bfloat16)": TensorProto.BFLOAT16}


def _ort_types(model: onnx.ModelProto, names: list[str]) -> dict[str, TensorInfo]:
    """Element types ONNX Runtime infers for `names` (its own kernels know contrib ops):
    a session on the weightless skeleton with those tensors as untyped outputs. Non-float
    tensors come back typed 0 (not float); nothing is returned if ORT refuses the graph."""
    import onnxruntime as ort

    probe = skeleton(model)
    declared = {o.name for o in probe.graph.output}
    probe.graph.output.extend(onnx.ValueInfoProto(name=n) for n in names if n not in declared)
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    opts.log_severity_level = 3
    try:
        session = ort.InferenceSession(probe.SerializeToString(), opts,
                                       providers=["CPUExecutionProvider"])
    except Exception:  # ORT cannot load it either: calibration will say so with the file
        return {}
    return {o.name: TensorInfo(o.name, _ORT_FLOAT.get(o.type, 0), None)
            for o in session.get_outputs() if o.name in set(names)}
