"""The ranges, histograms and sensitivity sections of the report.

Each function takes the validated `ReportInputs` (plus what was already computed from
them) and returns a `Section` of finished HTML; plotting is delegated to `plots`.
"""
from __future__ import annotations

from ptq.calibration import disagreement
from ptq.reports import plots
from ptq.reports.analysis import Highlight
from ptq.reports.html import Cell, Section, cell, esc, image, note, num, pct, table
from ptq.reports.load import ReportInputs, Sensitivity

TOPK_BARS = 15


def _legend(algos: list[str], chosen: str) -> str:
    items = "".join(f"<span><svg width=\"18\" height=\"10\"><rect width=\"18\" height=\"10\" fill=\""
                    f"{plots.algo_color(a, algos)}\"/></svg> {esc(a)}"
                    f"{' (chosen)' if a == chosen else ''}</span>" for a in algos)
    return f"<p class=\"legend\">{items}</p>"


def ranges_section(inputs: ReportInputs, clipped: dict[str, float]) -> Section:
    t = inputs.table
    png = plots.ranges_plot(t, inputs.algo)
    parts = [f"<figure>{_img(png, 'per-layer ranges')}<figcaption>Every activation in graph "
             "order: max, |min| where the minimum is negative, and each algorithm's amax (the INT8 "
             "range is [−amax, amax]). Log scale: a minimum of 0 (e.g. after ReLU) is not drawn; "
             "all-zero tensors are marked × at the bottom. Where amax sits far below max, the "
             "algorithm clips outliers.</figcaption></figure>",
             "<h3>Where the algorithms disagree most</h3>"]
    rows = disagreement(t, top=10)
    if not rows:
        parts.append(note(f"ranges.json holds one algorithm ({esc(', '.join(t.methods))}); run "
                          "<code>ptq calibrate --algo all</code> to compare them."))
    else:
        heads = ["tensor", "op type", "ratio", *t.methods, "max |x|", "clipped"]
        body = [[Cell(esc(name), cls="mono"), t.tensors[name].op_type, ratio,
                 *[amax[a] for a in t.methods],
                 max(abs(t.tensors[name].min), abs(t.tensors[name].max)),
                 Cell(pct(clipped[name]), clipped[name], "num")] for name, ratio, amax in rows]
        parts.append(table(heads, body, sortable=True, caption=(
            f"amax of each algorithm; ratio = largest / smallest amax; clipped = share of values "
            f"the chosen {esc(inputs.algo)} amax saturates.")))
    parts.append(_auto_choices(inputs))
    return Section("ranges", "Per-layer ranges", "".join(parts))


def _auto_choices(inputs: ReportInputs) -> str:
    """What `auto` picked for each tensor and why: every candidate's expected INT8 error
    relative to the chosen one (ptq/calibrators/auto.py)."""
    chosen = {n: t.choice for n, t in inputs.table.tensors.items() if t.choice}
    if not chosen:
        return ""
    counts: dict[str, int] = {}
    for c in chosen.values():
        counts[c["method"]] = counts.get(c["method"], 0) + 1
    summary = ", ".join(f"{esc(m)} for {n}" for m, n in sorted(counts.items(), key=lambda kv: -kv[1]))
    cands = list(next(iter(chosen.values()))["relative_error"])
    heads = ["activation", "op type", "chosen", "amax auto",
             *[f"{c} error ×" for c in cands], "runner-up"]
    body = []
    for name, c in chosen.items():
        rel = c["relative_error"]
        others = sorted((v, k) for k, v in rel.items() if k != c["method"])
        runner = f"{others[0][1]} (+{100 * (others[0][0] - 1):.3g}% error)" if others else ""
        body.append([Cell(esc(name), cls="mono"), inputs.table.tensors[name].op_type, c["method"],
                     inputs.table.tensors[name].amax.get("auto", 0.0),
                     *[rel.get(k, float("nan")) for k in cands], runner])
    return ("<h3>What <code>auto</code> chose, and why</h3>"
            f"<p>Per tensor, <code>auto</code> keeps the candidate range whose INT8 rounding and "
            f"clipping lose least on that tensor's histogram (expected squared error, which is "
            f"the noise the consuming layer sees). Chosen: {summary}. Each candidate's error "
            f"is shown relative to the chosen one (1 = chosen; 2 = twice the error). With "
            f"<code>auto</code> ranges, <code>ptq quantize</code> also corrects the FP32 biases of "
            f"Conv/Gemm layers for the mean shift INT8 weight rounding causes (per-channel input "
            f"means from calibration; listed in the model's <code>ptq.bias_correction</code> "
            f"metadata). The TensorRT cache holds exactly these activation ranges.</p>"
            f"<details><summary>All {len(body)} choices</summary>"
            f"{table(heads, body, sortable=True)}</details>")


def _img(png: plots.Png, alt: str) -> str:
    return image(png.uri, alt, png.width, png.height)


def histograms_section(inputs: ReportInputs, clipped: dict[str, float],
                       picks: list[Highlight]) -> Section:
    t, algos = inputs.table, inputs.table.methods
    parts = [f"<p>|x| histograms (log counts) with each algorithm's threshold; the shaded part is "
             f"what <b>{esc(inputs.algo)}</b> saturates (more than half an INT8 step beyond its "
             f"amax; values within it round to ±127 anyway).</p>", _legend(algos, inputs.algo)]
    figs = []
    for pick in picks:
        tr = t.tensors[pick.tensor]
        if tr.histogram.finalized()[1] == 0:
            continue
        png = plots.histogram_plot(tr, algos, inputs.algo, clipped[pick.tensor])
        why = "; ".join(esc(r) for r in pick.reasons)
        figs.append(f"<figure>{_img(png, 'histogram of ' + pick.tensor)}<figcaption>"
                    f"<code>{esc(pick.tensor)}</code>: {why}</figcaption></figure>")
    parts.append(f"<div class=\"grid\">{''.join(figs)}</div>" if figs else
                 note("No tensor stands out: nothing is clipped and the algorithms agree."))
    heads = ["tensor", "op type", "min", "max", f"amax {inputs.algo}", "clipped", "flags",
             "histogram (lines: amax per algorithm)"]
    body = [[Cell(esc(name), cls="mono"), tr.op_type, tr.min, tr.max, tr.amax[inputs.algo],
             Cell(pct(clipped[name]), clipped[name], "num"), ", ".join(tr.flags) or "",
             Cell(plots.sparkline(tr, algos, inputs.algo), clipped[name])]
            for name, tr in t.tensors.items()]
    parts.append(f"<details><summary>All {len(body)} tensors (graph order; click a header to "
                 f"sort)</summary>{table(heads, body, sortable=True)}</details>")
    return Section("histograms", "Histograms", "".join(parts))


def sensitivity_section(inputs: ReportInputs) -> Section:
    sens = inputs.sensitivity
    if sens is None:
        return Section("sensitivity", "Sensitivity", note(
            "Omitted: no sensitivity.json was given. Run <code>ptq sensitivity MODEL --data IMAGES "
            "--ranges ranges.json -o OUT</code> to measure which layers lose accuracy in INT8, then "
            "pass <code>--sensitivity OUT/sensitivity.json</code>."))
    metric, st = sens.rank_metric, sens.settings
    parts = [f"<p>Mode <b>{esc(st.get('mode', '?'))}</b>, pinned layers run in "
             f"<b>{esc(st.get('pin', '?'))}</b>, ranked by <b>{esc(metric)}</b> on "
             f"{esc(st.get('eval_images', '?'))} images ({esc(st.get('backend', '?'))}). Delta = gain "
             "over the all-INT8 baseline when the layer is pinned (quantize-one: when the layer is "
             "the only INT8 one); positive means pinning helps.</p>"]
    for mode in sens.modes:
        top = sorted((la for la in sens.layers if la.mode == mode), key=lambda la: la.rank)[:TOPK_BARS]
        png = plots.sensitivity_plot(top, metric, len(sens.modes) > 1)
        parts.append(f"<figure>{_img(png, f'top {len(top)} sensitive layers ({mode})')}"
                     f"<figcaption>Top {len(top)} layers by {esc(metric)} delta ({esc(mode)})."
                     "</figcaption></figure>")
    parts.append("<h3>Every layer</h3>" + _layer_table(sens))
    if sens.auto is not None:
        parts.append(_auto(sens))
    return Section("sensitivity", "Sensitivity", "".join(parts))


def _layer_table(sens: Sensitivity) -> str:
    metrics = sens.metrics
    heads = ["rank", "node", "op type", "mode", *metrics, *[f"Δ {m}" for m in metrics], "seconds"]
    rows = [[la.rank, Cell(esc(la.node), cls="mono"), la.op_type, la.mode,
             *[la.metrics.get(m) for m in metrics], *[la.delta.get(m) for m in metrics], la.seconds]
            for la in sorted(sens.layers, key=lambda la: (sens.modes.index(la.mode), la.rank))]
    base = ", ".join(f"{esc(m)} {num(v)}" for m, v in sens.baseline.items())
    return table(heads, rows, sortable=True, caption=f"All-INT8 baseline: {base}. Click a header "
                                                     "to sort.")


def _auto(sens: Sensitivity) -> str:
    auto = sens.auto
    verdict = ("ok", "met") if auto.met else ("bad", "NOT met")
    out = ["<h3>Automatic fallback</h3>", note(
        f"Target <code>{esc(auto.target)}</code> {verdict[1]} with {len(auto.pins)} pin(s); "
        f"stopped by {esc(auto.stopped_by)}. Model: <code>{esc(auto.model_path or '–')}</code>.",
        verdict[0])]
    if auto.pins:
        out.append(table(["node", "precision", "reason"],
                         [[Cell(esc(p.node), cls="mono"),
                           str(getattr(p.precision, "value", p.precision)).upper(), p.reason]
                          for p in auto.pins]))
    if auto.steps:
        names = list(dict.fromkeys(k for s in auto.steps for k in s.metrics))
        out.append(table(["step", "node tried", "kept", "pins", *names],
                         [[i + 1, cell(s.node or "–", cls="mono"), "yes" if s.accepted else "no",
                           s.pins, *[s.metrics.get(k) for k in names]]
                          for i, s in enumerate(auto.steps)], caption="Greedy steps"))
    return "".join(out)

