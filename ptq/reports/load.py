"""Read and cross-check the artifacts a report is made from.

    ranges.json (required)  --model sha256-->  sensitivity.json (optional)
          ^                                           |
          +---- "ptq.source_sha256" of model.int8.onnx (optional)

Every file is validated before anything is rendered, and files from different models
are refused with one message naming both files: a report that mixes the ranges of one
model with the sensitivity of another would be confidently wrong.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from ptq.calibrators import DEFAULT_METHOD
from ptq.errors import ConfigError, PtqError
from ptq.graph.model import load_model, model_sha256
from ptq.metrics import METRICS
from ptq.table import CalibrationTable

if TYPE_CHECKING:  # imported when a sensitivity.json is actually read
    from ptq.sensitivity.record import AutoResult, LayerResult, SensitivityResult


@dataclass(frozen=True)
class Sensitivity:
    """sensitivity.json (the `SensitivityResult` record) and where it was read from."""

    path: Path
    record: SensitivityResult

    @property
    def layers(self) -> tuple[LayerResult, ...]:
        return self.record.layers

    @property
    def settings(self) -> dict:
        return self.record.settings

    @property
    def reference(self) -> dict[str, float]:
        return dict(self.record.reference.get("metrics", {}))

    @property
    def baseline(self) -> dict[str, float]:
        return dict(self.record.baseline.get("metrics", {}))

    @property
    def auto(self) -> AutoResult | None:
        return self.record.auto

    @property
    def modes(self) -> list[str]:
        return list(dict.fromkeys(layer.mode for layer in self.layers))

    @property
    def rank_metric(self) -> str:
        metrics = self.settings.get("metrics") or list(self.baseline) or ["cosine"]
        return str(self.settings.get("rank_metric") or metrics[0])

    @property
    def metrics(self) -> list[str]:
        return list(self.settings.get("metrics") or self.baseline)

    def higher_is_better(self, metric: str) -> bool:
        declared = self.settings.get("higher_is_better", {})
        if metric in declared:
            return bool(declared[metric])
        return METRICS[metric].higher_is_better if metric in METRICS else True


@dataclass(frozen=True)
class PinInfo:
    """A pin as recorded in the model ("ptq.pins"), with plain-string precision."""

    node: str
    precision: str
    reason: str


@dataclass(frozen=True)
class QuantizedModel:
    """What the report needs from model.int8.onnx: its provenance, pins and layer precisions."""

    path: Path
    algo: str | None
    ptq_version: str | None
    source_sha256: str
    pins: tuple[PinInfo, ...]
    notes: tuple[str, ...]       # what quantize left FP32 and why ("ptq.notes")
    precisions: dict[str, str]   # node -> "int8" | "fp16" | "fp32", graph order
    op_types: dict[str, str]     # node -> op type


@dataclass(frozen=True)
class ReportInputs:
    """Everything a report is rendered from, already validated and cross-checked."""

    table: CalibrationTable
    ranges_path: Path
    algo: str
    sensitivity: Sensitivity | None = None
    model: QuantizedModel | None = None
    node_inputs: dict[str, list[str]] | None = None   # FP32 graph: node -> activation inputs
    notes: list[str] = field(default_factory=list)     # plain-text remarks shown as warnings


def load_ranges(path: str | Path) -> CalibrationTable:
    path = Path(path)
    if path.is_dir():
        raise PtqError("is a folder, not a ranges file", path=path,
                       hint=f"pass {path / 'ranges.json'}")
    return CalibrationTable.load(path)


def load_sensitivity(path: str | Path) -> Sensitivity:
    path = Path(path)
    if path.is_dir():
        raise PtqError("is a folder, not a sensitivity file", path=path,
                       hint=f"pass {path / 'sensitivity.json'}")
    from ptq.sensitivity.record import SensitivityResult

    return Sensitivity(path, SensitivityResult.load(path))


def load_quantized_model(path: str | Path) -> QuantizedModel:
    """Provenance from metadata_props and each layer's precision from the Q/DQ/Cast graph."""
    from ptq.graph.precisions import layer_precisions
    from ptq.quantization import Pin

    path = Path(path)
    proto = load_model(path, load_weights=False)
    meta = {p.key: p.value for p in proto.metadata_props}
    if "ptq.source_sha256" not in meta:
        raise PtqError("not written by `ptq quantize` (no ptq.source_sha256 metadata), so it "
                       "cannot be matched to the ranges", path=path,
                       hint="pass the model that `ptq quantize` or `ptq sensitivity --auto` wrote")
    try:
        pins = tuple(Pin.from_dict(d) for d in json.loads(meta.get("ptq.pins", "[]")))
        notes = tuple(str(n) for n in json.loads(meta.get("ptq.notes", "[]")))
    except (json.JSONDecodeError, KeyError, TypeError, ValueError, PtqError) as exc:
        raise PtqError(f"unreadable ptq.pins/ptq.notes metadata ({type(exc).__name__}: {exc})",
                       path=path, hint="re-run `ptq quantize`") from None
    return QuantizedModel(
        path=path, algo=meta.get("ptq.algo"), ptq_version=meta.get("ptq.version"),
        source_sha256=meta["ptq.source_sha256"],
        pins=tuple(PinInfo(p.node, p.precision.value, p.reason) for p in pins), notes=notes,
        precisions={node: p.value for node, p in layer_precisions(proto).items()},
        op_types={n.name: n.op_type for n in proto.graph.node})


def load_inputs(ranges: str | Path, sensitivity: str | Path | None = None,
                model: str | Path | None = None, *, algo: str | None = None) -> ReportInputs:
    """Load, validate and cross-check the files; raises PtqError before anything is written."""
    ranges = Path(ranges)
    table = load_ranges(ranges)
    sens = load_sensitivity(sensitivity) if sensitivity is not None else None
    qmodel = load_quantized_model(model) if model is not None else None
    ref_sha = table.model.get("sha256")
    producers = {t.producer for t in table.tensors.values() if t.producer}
    if sens is not None:
        for what, sha in (("model", sens.record.model.get("sha256")),
                          ("ranges' model", (sens.record.ranges or {}).get("model_sha256"))):
            _same_model(sens.path, what, sha, ranges, ref_sha)
        _known_nodes(sens.path, [layer.node for layer in sens.layers], producers, ranges)
    if qmodel is not None:
        _same_model(qmodel.path, "source model", qmodel.source_sha256, ranges, ref_sha)
    chosen, notes = choose_algo(table, algo, sens, qmodel, ranges)
    node_inputs = fp32_node_inputs(table, sens, notes) if sens is not None else None
    return ReportInputs(table=table, ranges_path=ranges, algo=chosen, sensitivity=sens,
                        model=qmodel, node_inputs=node_inputs, notes=notes)


def _same_model(path: Path, what: str, sha: str | None, ranges: Path, ref_sha: str | None) -> None:
    if sha and ref_sha and sha != ref_sha:
        raise PtqError(f"{what} sha256 {sha[:12]}… differs from the model of {ranges} "
                       f"({ref_sha[:12]}…): the files come from different models", path=path,
                       hint="pass the ranges.json, sensitivity.json and model.int8.onnx "
                            "produced from the same FP32 model")


def _known_nodes(path: Path, nodes: list[str], producers: set[str], ranges: Path) -> None:
    unknown = [n for n in nodes if n not in producers]
    if unknown:
        shown = ", ".join(repr(n) for n in unknown[:4]) + (" …" if len(unknown) > 4 else "")
        raise PtqError(f"{len(unknown)} node(s) not in the model of {ranges} ({shown}): the "
                       "files come from different models", path=path,
                       hint="pass files produced from the same FP32 model")


def choose_algo(table: CalibrationTable, algo: str | None, sens: Sensitivity | None,
                qmodel: QuantizedModel | None, ranges: Path) -> tuple[str, list[str]]:
    """The algorithm whose amax the report treats as chosen: asked for, else the one the
    quantized model or the sensitivity run used, else the default (auto), else entropy, else the first."""
    notes: list[str] = []
    used = {f"{qmodel.path.name}": qmodel.algo} if qmodel and qmodel.algo else {}
    if sens is not None and (sens.record.ranges or {}).get("algo"):
        used[sens.path.name] = sens.record.ranges["algo"]
    if len(set(used.values())) > 1:
        notes.append("the inputs used different algorithms: " +
                     ", ".join(f"{k} used {v}" for k, v in used.items()))
    if algo and used and algo not in used.values():
        notes.append(f"--algo {algo} differs from the algorithm the inputs used (" +
                     ", ".join(f"{k}: {v}" for k, v in used.items()) + ")")
    chosen = algo or next(iter(used.values()), None) or (
        DEFAULT_METHOD.value if DEFAULT_METHOD.value in table.methods else
        "entropy" if "entropy" in table.methods else (table.methods or [None])[0])
    if chosen not in table.methods:
        raise ConfigError(f"the ranges have no '{chosen}' algorithm (available: "
                          f"{', '.join(table.methods)})", path=ranges,
                          hint=f"re-run `ptq calibrate --algo {chosen}` or pick another --algo")
    return chosen, notes


def fp32_node_inputs(table: CalibrationTable, sens: Sensitivity,
                     notes: list[str]) -> dict[str, list[str]] | None:
    """Each node's activation inputs, read from the FP32 model the files name, if it is
    still there and unchanged (a sensitive layer's histogram is its INPUT's histogram)."""
    sha = table.model.get("sha256")
    paths = [Path(str(p)) for p in (table.model.get("path"), sens.record.model.get("path")) if p]
    path = next((p for p in dict.fromkeys(paths) if p.is_file() and model_sha256(p) == sha), None)
    if path is None:
        notes.append(f"the FP32 model is not at {paths[0] if paths else '?'} any more (or has "
                     "changed): histograms of sensitive layers show their output tensor "
                     "instead of their input")
        return None
    proto = load_model(path, load_weights=False)   # names unnamed nodes as sensitivity did
    return {n.name: [i for i in n.input if i in table.tensors] for n in proto.graph.node}
