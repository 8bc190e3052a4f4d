"""The "TensorRT engine" section: what `ptq inspect` and `ptq bench` found, on the same page.

Precision mix, reformat layers with their cause, the slowest layers, INT8 intent vs the Q/DQ
model, an FP16-vs-INT8 layer comparison, the engine graph (inline SVG coloured by precision)
and, from `ptq bench --json`, a throughput bar chart of FP32 vs INT8 vs mixed.
"""
from __future__ import annotations

import json
from pathlib import Path

from ptq.engine.draw import engine_svg
from ptq.engine.report import InspectResult
from ptq.errors import DataError
from ptq.reports.html import Section, esc, note, pct, table


def load_bench(path: str | Path) -> list[dict]:
    """The `results` list of a `ptq bench --json` file, or a one-line error."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        results = data["results"]
        if not (isinstance(results, list) and all("metrics" in r and "label" in r for r in results)):
            raise ValueError("results are not a list of {label, metrics}")
    except (OSError, ValueError, KeyError, TypeError):
        raise DataError("not a `ptq bench --json` file", path=path,
                        hint="write it with ptq bench ... --json bench.json") from None
    return results


def _bench_plot(results: list[dict]) -> str:
    from matplotlib.figure import Figure

    from ptq.reports.plots import short, to_png

    labels = [short(r["label"], 24) for r in results]
    qps = [r["metrics"].get("Throughput") or 0.0 for r in results]
    fig = Figure(figsize=(6.4, 0.5 + 0.45 * len(results)))
    ax = fig.add_subplot(1, 1, 1)
    ax.barh(range(len(qps)), qps, color="#1f5fbf")
    ax.set_yticks(range(len(qps)), labels)
    ax.invert_yaxis()
    ax.set_xlabel("Throughput (queries/s)")
    for i, q in enumerate(qps):
        ax.text(q, i, f" {q:.4g}", va="center", fontsize=8)
    fig.tight_layout()
    png = to_png(fig)
    return (f"<img src=\"{png.uri}\" alt=\"throughput per model\" width=\"{png.width}\" "
            f"height=\"{png.height}\">")


def bench_html(results: list[dict]) -> str:
    anchor = results[0]["metrics"].get("Throughput")
    rows = []
    for r in results:
        m = r["metrics"]
        q = m.get("Throughput")
        med = lambda k: (m.get(k) or {}).get("median")  # noqa: E731
        rows.append([r["label"], r["backend"], q, f"{q / anchor:.2f}x" if q and anchor else None,
                     med("Latency"), med("GPU Compute Time"), (m.get("Latency") or {}).get("p99"),
                     r.get("batch")])
    return ("<h3>Speed (ptq bench, trtexec's metrics)</h3>" + _bench_plot(results)
            + table(["model", "backend", "Throughput (qps)", f"vs {results[0]['label']}",
                     "Latency median (ms)", "GPU Compute median (ms)", "Latency p99 (ms)",
                     "batch"], rows))


def _short(text: str | None, limit: int = 40) -> str | None:
    return text if text is None or len(text) <= limit else text[:limit - 1] + "…"


def engine_section(res: InspectResult | None, bench: list[dict] | None = None) -> Section:
    if res is None and not bench:
        return Section("engine", "TensorRT engine", note("Omitted."))
    parts = []
    if res is not None:
        s, eng = res.summary, res.engine
        rf = s["reformat"]
        mix = ", ".join(f"{esc(k)} {v}" for k, v in s["precision_layers"].items())
        parts.append(f"<p><code>{esc(eng.path)}</code>: {s['layers']} layers (TensorRT "
                     f"{'11' if s['schema'] == 'trt11' else '8–10'} schema); precision by layer: "
                     f"{mix}. Reformat layers: <b>{rf['count']}</b>"
                     + (f", {pct(rf['share'])} of the profiled time" if rf["share"] is not None
                        else "") + ".</p>")
        if rf["layers"]:
            parts.append("<h3>Reformat layers</h3>" + table(
                ["layer", "origin", "from", "to", "ms", "because of"],
                [[r["name"], r["origin"], r["from"], r["to"], r["time_ms"], r["source"]]
                 for r in rf["layers"]], sortable=True))
        layers = sorted(eng.layers, key=lambda la: -(la.time_ms or 0.0)) if eng.profiled \
            else eng.layers
        parts.append("<h3>Layers</h3>" + table(
            ["#", "layer", "type", "precision", "ms", "share", "tactic"],
            [[la.index, la.name, la.type, la.precision, la.time_ms,
              None if la.share is None else pct(la.share), _short(la.tactic)] for la in layers],
            sortable=True))
        if res.intent is not None:
            it = res.intent
            rows = [[m["node"], m["op_type"], "INT8", m["actual"], m["layer"]]
                    for m in it["not_int8"]] + \
                   [[m["node"], m["op_type"], "float (no Q/DQ)", m["actual"], m["layer"]]
                    for m in it["unexpected_int8"]]
            parts.append(f"<h3>INT8 intent vs the Q/DQ model</h3><p>{it['intended_int8']} nodes "
                         f"meant for INT8; {len(it['not_int8'])} ran in a float type, "
                         f"{len(it['unexpected_int8'])} without Q/DQ ran in INT8.</p>"
                         + (table(["node", "op", "meant", "ran", "engine layer"], rows)
                            if rows else ""))
        if res.comparison is not None:
            c = res.comparison.to_dict()
            parts.append(f"<h3>Compared with <code>{esc(c['a'])}</code></h3>" + table(
                ["A layer", "A prec", "A ms", "B layer", "B prec", "B ms", "B/A", "verdict"],
                [[r["a"], r["a_precision"], r["a_ms"], r["b"], r["b_precision"], r["b_ms"],
                  r["ratio"], r["verdict"]] for r in c["rows"]], sortable=True))
        parts.append("<h3>Engine graph</h3><div class=\"scroll\">" + engine_svg(eng) + "</div>")
    if bench:
        parts.append(bench_html(bench))
    return Section("engine", "TensorRT engine", "".join(parts))
