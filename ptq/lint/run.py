"""Lint a model, fix it, and check in ONNX Runtime that the fix did not cost accuracy."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import onnx

from ptq.graph.model import load_model
from ptq.lint.checks import CHECKS, Finding
from ptq.lint.fix import apply_fixes
from ptq.lint.view import build_view

_ORDER = {"error": 0, "warning": 1, "info": 2}


@dataclass
class LintResult:
    path: str | None
    findings: list[Finding]
    qdq_pairs: int

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for f in self.findings:
            out[f.severity] = out.get(f.severity, 0) + 1
        return out

    def to_dict(self) -> dict:
        return {"model": self.path, "qdq_pairs": self.qdq_pairs, "counts": self.counts(),
                "findings": [f.to_dict() for f in self.findings]}


def _model(model: str | Path | onnx.ModelProto) -> tuple[onnx.ModelProto, str | None]:
    if isinstance(model, onnx.ModelProto):
        return model, None
    return load_model(model), str(model)


def lint_model(model: str | Path | onnx.ModelProto) -> LintResult:
    proto, path = _model(model)
    view = build_view(proto)
    findings = [f for check in CHECKS for f in check(view)]
    findings.sort(key=lambda f: _ORDER[f.severity])
    pairs = len({p.dq for p in view.inputs.values() if not p.weight})
    return LintResult(path, findings, pairs)


def fix_model(model: str | Path | onnx.ModelProto
              ) -> tuple[onnx.ModelProto, LintResult, list[Finding]]:
    """(fixed model, findings before, findings fixed)."""
    proto, path = _model(model)
    before = lint_model(proto)
    before.path = path
    fixed, done = apply_fixes(proto, before.findings)
    return fixed, before, done


def verify_fix(original: onnx.ModelProto, fixed: onnx.ModelProto, batches: list,
               fp32: str | Path | None = None,
               progress: Callable[[int], None] | None = None) -> dict[str, Any]:
    """Both models on the same data in ONNX Runtime with graph optimizations disabled (ORT's
    CPU QDQ fusions are unfaithful on CPUs without VNNI, TENSORRT.md §5.1). Against the FP32
    model when given, else the fixed model against the original (labels give both
    accuracies)."""
    from ptq.evaluate import measure_accuracy

    if fp32 is not None:
        return {"reference": str(fp32),
                "original": measure_accuracy(fp32, original, batches, providers="cpu"),
                "fixed": measure_accuracy(fp32, fixed, batches, providers="cpu")}
    return {"reference": "original", "fixed": measure_accuracy(original, fixed, batches,
                                                               providers="cpu")}
