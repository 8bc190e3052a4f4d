"""The summary section: what was quantized, on which images, how it scores, each layer's precision.

It answers the reviewer's first question (is this INT8 model fit to ship?) from the
figures sensitivity.json measured: FP32 reference, all-INT8 baseline, and the
mixed-precision model the auto fallback kept, side by side.
"""
from __future__ import annotations

from collections import Counter

from ptq.reports.html import Cell, Section, cell, esc, note, num, table
from ptq.reports.load import QuantizedModel, ReportInputs, Sensitivity

PRECISION_ORDER = ("int8", "fp16", "fp32")


def tag(precision: str) -> str:
    p = esc(precision.lower())
    return f"<span class=\"tag {p}\">{p.upper()}</span>"


def summary_section(inputs: ReportInputs, warning_count: int) -> Section:
    parts = [_verdict(inputs, warning_count), _facts(inputs)]
    if inputs.sensitivity is not None:
        parts += ["<h3>FP32 vs INT8 vs mixed precision</h3>", _figures(inputs.sensitivity)]
    else:
        parts.append(note("No sensitivity.json given, so there are no accuracy figures: run "
                          "<code>ptq sensitivity MODEL --data IMAGES -o OUT</code> and pass "
                          "<code>--sensitivity OUT/sensitivity.json</code>."))
    parts.append("<h3>Final precision of each layer</h3>")
    if inputs.model is not None:
        parts.append(_precisions(inputs, inputs.model))
    else:
        parts.append(note("No quantized model given: pass <code>--model model.int8.onnx</code> "
                          "to list each layer's final precision and the reason for each pin."))
    return Section("summary", "Summary", "".join(parts))


def _verdict(inputs: ReportInputs, warning_count: int) -> str:
    sens = inputs.sensitivity
    text = [f"{len(inputs.table.tensors)} activation tensors calibrated on "
            f"{esc(inputs.table.data.get('num_samples', '?'))} images; chosen algorithm "
            f"<b>{esc(inputs.algo)}</b>."]
    kind = "note"
    if sens is not None:
        text.append(f"All-INT8 vs FP32: {_figures_text(sens.baseline)}.")
        if sens.auto is not None:
            auto = sens.auto
            text.append(f"Mixed precision with {len(auto.pins)} pinned layer(s): "
                        f"{_figures_text(auto.metrics)}; target <code>{esc(auto.target)}</code> "
                        + ("<b>met</b>." if auto.met else
                           f"<b>not met</b> (stopped by {esc(auto.stopped_by)})."))
            kind = "ok" if auto.met else "bad"
    text.append(f"<a href=\"#warnings\">{warning_count} warning(s)</a>.")
    return note(" ".join(text), "warn" if kind == "note" and warning_count else kind)


def _figures_text(metrics: dict[str, float]) -> str:
    return ", ".join(f"{esc(m)} <b>{num(v)}</b>" for m, v in metrics.items())


def _facts(inputs: ReportInputs) -> str:
    t = inputs.table
    m, d, s = t.model, t.data, t.settings
    ins = ", ".join(f"{esc(i.get('name'))} {esc(i.get('dtype', ''))} "
                    f"[{','.join(esc(x) for x in (i.get('shape') or []))}]" for i in m.get("inputs", []))
    pre = d.get("preprocessing") or {}
    rows = [
        ("Model", f"<code>{esc(m.get('path', '?'))}</code> (sha256 "
                  f"<code>{esc(str(m.get('sha256', '?'))[:16])}…</code>, opset {esc(m.get('opset', '?'))})"),
        ("Inputs", ins or "–"),
        ("Images used", f"{esc(d.get('num_samples', '?'))} from <code>{esc(d.get('source', '?'))}</code>"
                        f" ({esc(d.get('kind', '?'))}), {len(d.get('skipped') or [])} skipped"),
        ("Preprocessing", esc(", ".join(f"{k} {v}" for k, v in pre.items())) or "–"),
        ("Algorithm", f"<b>{esc(inputs.algo)}</b> (ranges hold {esc(', '.join(t.methods))}; "
                      f"{esc(s.get('num_bins', '?'))}-bin |x| histograms, percentile "
                      f"{esc(s.get('percentile', '?'))})"),
        ("Ranges file", f"<code>{esc(inputs.ranges_path)}</code> (ptq {esc(t.ptq_version or '?')})"),
    ]
    if inputs.model is not None:
        qm = inputs.model
        rows.append(("Quantized model", f"<code>{esc(qm.path)}</code> (algorithm "
                                        f"{esc(qm.algo or '?')}, ptq {esc(qm.ptq_version or '?')})"))
    if inputs.sensitivity is not None:
        st = inputs.sensitivity.settings
        rows.append(("Sensitivity", f"<code>{esc(inputs.sensitivity.path)}</code>: mode "
                     f"{esc(st.get('mode', '?'))}, pin {esc(st.get('pin', '?'))}, "
                     f"{esc(st.get('eval_images', '?'))} evaluation images, backend "
                     f"{esc(st.get('backend', '?'))}"))
    return "<dl class=\"facts\">" + "".join(f"<dt>{k}</dt><dd>{v}</dd>" for k, v in rows) + "</dl>"


def _figures(sens: Sensitivity) -> str:
    metrics = list(dict.fromkeys([*sens.metrics, *sens.reference, *sens.baseline]))
    heads = ["model", *[f"{m} {'↑' if sens.higher_is_better(m) else '↓'}" for m in metrics], "notes"]

    def row(name: str, values: dict[str, float], notes: str, ref: bool = False) -> list:
        cells = [cell(values[m]) if m in values else
                 cell("reference" if ref else "–", cls="muted") for m in metrics]
        return [name, *cells, notes]

    rows = [row("FP32 (ONNX Runtime)", sens.reference, "the reference the others are compared with",
                ref=True),
            row("INT8 (every quantizable layer)", sens.baseline, "all-INT8 baseline")]
    if sens.auto is not None:
        auto = sens.auto
        counts = Counter(getattr(p.precision, "value", str(p.precision)) for p in auto.pins)
        pins = ", ".join(f"{n} {k.upper()}" for k, n in sorted(counts.items())) or "none"
        rows.append(row("Mixed precision (auto fallback)", auto.metrics,
                        f"{len(auto.pins)} pin(s) ({pins}); target {auto.target} "
                        f"{'met' if auto.met else 'NOT met'} (stopped by {auto.stopped_by})"))
    st = sens.settings
    caption = (f"Measured by <code>ptq sensitivity</code> on {esc(st.get('eval_images', '?'))} "
               f"images from <code>{esc(st.get('data', '?'))}</code> ({esc(st.get('backend', '?'))}). "
               "Agreement metrics (cosine, max-abs, top-1 …) compare each model's outputs with the "
               "FP32 outputs on the same images; <code>-acc</code> metrics compare with the labels.")
    return table(heads, rows, caption=caption)


def _precisions(inputs: ReportInputs, qm: QuantizedModel) -> str:
    op_types = qm.op_types
    pins = {p.node: p for p in qm.pins}
    counts = Counter(qm.precisions.values())
    line = ", ".join(f"{counts[p]} {tag(p)}" for p in PRECISION_ORDER if counts[p])
    rows = {node: [Cell(esc(node), cls="mono"), op_types.get(node, "?"), Cell(tag(p), p),
                   _reason(p, pins.get(node), op_types.get(node))]
            for node, p in qm.precisions.items()}
    out = [f"<p>{len(qm.precisions)} layers: {line}.</p>"]
    if pins:
        out.append(table(["pinned node", "op type", "precision", "reason"],
                         [rows[n] for n in rows if n in pins]))
    else:
        out.append("<p>No layer is pinned out of INT8.</p>")
    out.append("<details><summary>Every layer's precision</summary>"
               + table(["node", "op type", "precision", "why"], rows.values(), sortable=True)
               + "</details>")
    return "".join(out)


def _reason(precision: str, pin, op_type: str | None) -> str:
    """Why a layer ended up at its precision: its pin, else the Q/DQ rule for its op type."""
    from ptq.graph.rules import RULES

    if pin is not None:
        return f"pinned to {pin.precision.upper()}: {pin.reason}"
    if precision == "int8":
        return "INT8: Q/DQ on its activation input(s)"
    if precision == "fp16":
        return "runs on float16 inputs from a pinned FP16 neighbour"
    rule = RULES.get(op_type or "")
    if rule is None:
        return f"no Q/DQ rule for {op_type or 'this op type'}"
    if not rule.default:
        return f"{op_type} is not quantized by default ({rule.reason.split(';')[0]})"
    return f"the {op_type} rule placed no Q/DQ here, or --op-types left {op_type} out"
