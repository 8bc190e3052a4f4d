"""`inspect_engine`: the whole inspection as one object, and its plain-text rendering."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ptq.engine.analyze import EngineComparison, compare_engines, int8_intent, summarize
from ptq.engine.schema import Engine, load_engine


@dataclass
class InspectResult:
    engine: Engine
    summary: dict
    intent: dict | None = None
    comparison: EngineComparison | None = None

    def to_dict(self) -> dict:
        return {"summary": self.summary, "layers": [la.to_dict() for la in self.engine.layers],
                "int8_intent": self.intent,
                "comparison": self.comparison.to_dict() if self.comparison else None}


def inspect_engine(engine: str | Path, *, profile: str | Path | None = None,
                   onnx_path: str | Path | None = None, compare: str | Path | None = None,
                   compare_profile: str | Path | None = None) -> InspectResult:
    eng = load_engine(engine, profile)
    intent = None
    if onnx_path is not None:
        from ptq.graph.model import load_model
        intent = int8_intent(eng, load_model(onnx_path, load_weights=False))
        if intent["matched_nodes"] == 0:
            from ptq.errors import DataError
            raise DataError(f"none of the model's node names appear in the engine's layers "
                            f"({eng.path}): not the model this engine was built from",
                            path=onnx_path, hint="pass the Q/DQ ONNX given to trtexec --onnx")
    comparison = None
    if compare is not None:
        comparison = compare_engines(load_engine(compare, compare_profile), eng)
    return InspectResult(eng, summarize(eng), intent, comparison)


def _ms(v: float | None) -> str:
    return "-" if v is None else f"{v:.4f}"


def _table(headers: list[str], rows: list[list[str]]) -> list[str]:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h)
              for i, h in enumerate(headers)]
    fmt = lambda r: "  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip()  # noqa: E731
    return [fmt(headers), fmt(["-" * w for w in widths]), *(fmt(r) for r in rows)]


def render_text(res: InspectResult, *, top: int = 15) -> str:
    s, eng = res.summary, res.engine
    mix = ", ".join(f"{k} {v}" for k, v in s["precision_layers"].items())
    version = "11" if s["schema"] == "trt11" else "8-10"
    out = [f"{eng.path}: {s['layers']} layers (TensorRT {version}"
           f" schema); precision by layer: {mix}"]
    if eng.layers and all(la.type == "Unknown" for la in eng.layers):
        out.append("only layer names in this file (profilingVerbosity layer_names_only): rebuild "
                   "with --profilingVerbosity=detailed for types, precisions and tactics")
    if s["total_ms"] is not None:
        by_t = s["precision_ms"] or {}
        out.append(f"profiled total {s['total_ms']:.4f} ms per inference; time by precision: "
                   + (", ".join(f"{k} {v / s['total_ms']:.1%}" for k, v in
                                sorted(by_t.items(), key=lambda kv: -kv[1]))
                      if s["total_ms"] > 0 else "- (every layer timed 0 ms)"))
    rf = s["reformat"]
    share = f", {rf['time_ms']:.4f} ms = {rf['share']:.1%} of the time" \
        if rf["share"] is not None else ""
    out.append(f"reformat layers: {rf['count']} ("
               + ", ".join(f"{k} {v}" for k, v in rf["by_origin"].items()) + f"){share}")
    layers = list(eng.layers)
    if eng.profiled:
        layers.sort(key=lambda la: -(la.time_ms or 0.0))
    shown = layers if top <= 0 else layers[:top]
    out.append("")
    out.append(f"layers ({'slowest first' if eng.profiled else 'engine order'}"
               f"{'' if len(shown) == len(layers) else f', top {len(shown)} of {len(layers)}'}):")
    out += _table(["#", "layer", "type", "prec", "ms", "share", "tactic"],
                  [[str(la.index), la.name[:60], la.type, la.precision or "?", _ms(la.time_ms),
                    "-" if la.share is None else f"{la.share:.1%}", (la.tactic or "")[:40]]
                   for la in shown])
    if rf["layers"]:
        out.append("")
        out.append("reformat layers (what made TensorRT add them):")
        out += _table(["layer", "origin", "converts", "ms", "because of"],
                      [[r["name"][:60], r["origin"] or "?", f"{r['from']}->{r['to']}",
                        _ms(r["time_ms"]), r["source"][:60]] for r in rf["layers"]])
    if res.intent is not None:
        it = res.intent
        out.append("")
        out.append(f"INT8 intent vs the Q/DQ ONNX: {it['intended_int8']} nodes meant for INT8, "
                   f"{len(it['not_int8'])} ran in a float type, {len(it['unexpected_int8'])} "
                   f"without Q/DQ ran in INT8, {len(it['unmatched_intended'])} not found "
                   f"in the engine names")
        for m in it["not_int8"]:
            out.append(f"  meant INT8, ran {m['actual']}: {m['node']} ({m['op_type']}) in "
                       f"layer {m['layer'][:60]}")
        for m in it["unexpected_int8"]:
            out.append(f"  no Q/DQ, ran INT8: {m['node']} ({m['op_type']}) in {m['layer'][:60]}")
    if res.comparison is not None:
        c = res.comparison.to_dict()
        out.append("")
        ta, tb = c["a_total_ms"], c["b_total_ms"]
        tot = f"; total {_ms(ta)} -> {_ms(tb)} ms" + (f" ({tb / ta:.2f}x)" if ta and tb else "")
        out.append(f"compared with {c['a']} (A) -> this engine (B){tot}; reformat layers "
                   f"{c['a_reformat']} -> {c['b_reformat']}")
        rows = c["rows"]
        verdicts = {v: sum(r["verdict"] == v for r in rows) for v in
                    ("faster", "slower", "same", "only in A", "only in B")}
        out.append("  " + ", ".join(f"{k}: {v}" for k, v in verdicts.items()))
        out += ["  " + line for line in _table(
            ["A layer", "prec", "ms", "B layer", "prec", "ms", "B/A", ""],
            [[(r["a"] or "")[:40], r["a_precision"] or "", _ms(r["a_ms"]), (r["b"] or "")[:40],
              r["b_precision"] or "", _ms(r["b_ms"]),
              "-" if r["ratio"] is None else f"{r['ratio']:.2f}", r["verdict"] or ""]
             for r in rows])]
    return "\n".join(out)
