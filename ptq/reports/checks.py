"""The warnings section: everything a reviewer should check before shipping, each with its list.

    zero / floored ranges   flags from calibration ("all_zero", "empty", "floored:<algo>")
    NaN / Inf               non-finite values anywhere in the inputs ("none seen" otherwise)
    saturated tensors       > SATURATION_WARN of the values clipped by the chosen amax
    layers left FP32        pins (with their reasons) and weighted layers without Q/DQ
    data                    skipped images, few calibration images, mismatched algorithms
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from ptq.graph.rules import WEIGHTED_OPS
from ptq.reports.analysis import SATURATION_WARN
from ptq.reports.html import Section, esc, pct
from ptq.reports.load import ReportInputs

FEW_IMAGES = 500   # ModelOpt's recommendation for CNN/ViT calibration (shared/ANCHORS.md §4)
LIST_LIMIT = 12


@dataclass(frozen=True)
class Finding:
    """One line of the section; `level` is "bad", "warn" or "ok" (checked, nothing found)."""

    level: str
    title: str
    items: tuple[str, ...] = ()   # escaped HTML fragments

    @property
    def counts(self) -> bool:
        return self.level != "ok"


def collect(inputs: ReportInputs, clipped: dict[str, float]) -> list[Finding]:
    out = [Finding("warn", esc(n)) for n in inputs.notes]
    out += [_flags(inputs), _non_finite(inputs), _saturated(inputs, clipped), *_fp32(inputs),
            *_data(inputs)]
    return [w for w in out if w is not None]


def _names(names: list[str], extra: dict[str, str] | None = None) -> tuple[str, ...]:
    shown = [f"<code>{esc(n)}</code>" + (f" {extra[n]}" if extra and n in extra else "")
             for n in names[:LIST_LIMIT]]
    return tuple(shown + ([f"… and {len(names) - LIST_LIMIT} more"] if len(names) > LIST_LIMIT else []))


def _flags(inputs: ReportInputs) -> Finding:
    flagged = {n: t.flags for n, t in inputs.table.tensors.items() if t.flags}
    if not flagged:
        return Finding("ok", "Zero or floored ranges: none (every tensor had a usable range).")
    detail = {n: "(" + esc(", ".join(f)) + ")" for n, f in flagged.items()}
    return Finding("warn", f"{len(flagged)} tensor(s) with a zero, empty or floored range "
                           "(the amax was raised to the floor so no scale is zero; check that "
                           "these tensors are really constant):", _names(list(flagged), detail))


def _non_finite(inputs: ReportInputs) -> Finding:
    bad = [n for n, t in inputs.table.tensors.items()
           if not all(math.isfinite(v) for v in (t.min, t.max, *t.amax.values()))]
    sens = inputs.sensitivity
    if sens is not None:
        bad += [f"{la.node} ({la.mode}) metrics" for la in sens.layers
                if not all(math.isfinite(v) for v in (*la.metrics.values(), *la.delta.values()))]
        if not all(math.isfinite(v) for v in (*sens.baseline.values(), *sens.reference.values())):
            bad.append("reference/baseline metrics")
    if not bad:
        return Finding("ok", "NaN/Inf: none seen in the ranges"
                             + (" or the sensitivity metrics." if sens is not None else "."))
    return Finding("bad", f"NaN/Inf seen in {len(bad)} place(s):", _names(bad))


def _saturated(inputs: ReportInputs, clipped: dict[str, float]) -> Finding:
    hot = sorted((n for n, c in clipped.items() if c > SATURATION_WARN), key=lambda n: -clipped[n])
    if not hot:
        return Finding("ok", f"Saturated tensors: none ({esc(inputs.algo)} clips at most "
                             f"{pct(max(clipped.values(), default=0.0))} of any tensor).")
    detail = {n: f"{pct(clipped[n])} clipped" for n in hot}
    return Finding("warn", f"{len(hot)} saturated tensor(s): {esc(inputs.algo)} clips more than "
                           f"{pct(SATURATION_WARN)} of their values (see the histograms):",
                   _names(hot, detail))


def _fp32(inputs: ReportInputs) -> list[Finding]:
    qm = inputs.model
    if qm is None:
        return [Finding("warn", "Layers left FP32: unknown (pass <code>--model model.int8.onnx"
                                "</code> to check every layer's precision).")]
    op_types = qm.op_types
    pins = {p.node: p for p in qm.pins}
    fp32 = [n for n, p in qm.precisions.items()
            if p == "fp32" and (n in pins or op_types.get(n) in WEIGHTED_OPS)]
    why = {n: "— " + esc(f"pinned: {pins[n].reason}" if n in pins else
                         f"{op_types[n]} without a pin: op type not selected (--op-types) or "
                         "its weight is not float32") for n in fp32}
    out = [Finding("warn", f"{len(fp32)} layer(s) left FP32 that could run in INT8:",
                   _names(fp32, why)) if fp32 else
           Finding("ok", "Layers left FP32: no weighted layer (Conv, ConvTranspose, Gemm, "
                         "MatMul) and no FP32 pin; ops without a Q/DQ rule (activations, "
                         "reshapes) get no Q/DQ of their own.")]
    fp16 = [n for n, p in qm.precisions.items() if p == "fp16"]
    if fp16:
        out.append(Finding("warn", f"{len(fp16)} layer(s) run in FP16:", _names(
            fp16, {n: "— " + esc(pins[n].reason if n in pins else "float16 inputs") for n in fp16})))
    if qm.notes:
        out.append(Finding("warn", f"{len(qm.notes)} note(s) from quantize:",
                           tuple(esc(n) for n in qm.notes)))
    return out


def _data(inputs: ReportInputs) -> list[Finding]:
    d, out = inputs.table.data, []
    skipped = d.get("skipped") or []
    if skipped:
        out.append(Finding("warn", f"{len(skipped)} input(s) were skipped during calibration:",
                           _names([str(s.get("file", s)) for s in skipped],
                                  {str(s.get("file")): "— " + esc(s.get("reason", "")) for s in skipped
                                   if isinstance(s, dict)})))
    n = d.get("num_samples")
    if isinstance(n, int) and n < FEW_IMAGES:
        out.append(Finding("warn", f"Calibrated on {n} images; ModelOpt recommends at least "
                                   f"{FEW_IMAGES} for CNNs, so rare large activations may be missed."))
    auto = inputs.sensitivity.auto if inputs.sensitivity is not None else None
    if auto is not None and not auto.met:
        out.append(Finding("bad", f"The automatic fallback did not meet <code>{esc(auto.target)}"
                                  f"</code> (stopped by {esc(auto.stopped_by)}); the best model "
                                  "found was kept."))
    return out


def warnings_section(findings: list[Finding]) -> Section:
    icons = {"bad": "✖", "warn": "⚠", "ok": "✔"}
    colors = {"bad": "#a4262c", "warn": "#8a5a00", "ok": "#1e6b34"}
    items = []
    for w in sorted(findings, key=lambda w: ("bad", "warn", "ok").index(w.level)):
        sub = "".join(f"<li>{i}</li>" for i in w.items)
        items.append(f"<li class=\"{w.level}\"><span style=\"color:{colors[w.level]}\">"
                     f"{icons[w.level]}</span> {w.title}" + (f"<ul>{sub}</ul>" if sub else "") + "</li>")
    return Section("warnings", "Warnings", f"<ul class=\"warnings\">{''.join(items)}</ul>")
