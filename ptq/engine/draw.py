"""The engine graph as a small self-contained SVG (no graphviz needed: it is often absent).

Layers are drawn top to bottom in engine (execution) order, one box each, filled by the
precision they ran in; reformat layers get a red outline. Edges between consecutive layers
are straight; skip edges (residual inputs) are arcs on the right, so a chain of residual
blocks reads like the usual ResNet picture.
"""
from __future__ import annotations

from html import escape

from ptq.engine.schema import Engine

COLORS = {"INT8": "#7fc97f", "FP16": "#80b1d3", "BF16": "#80b1d3", "FP32": "#fdb462",
          "FP8": "#bebada", "INT32": "#d9d9d9", "INT64": "#d9d9d9", None: "#eeeeee"}
_BOX_W, _BOX_H, _GAP, _LEFT = 420, 22, 10, 10


def engine_svg(engine: Engine, *, max_layers: int = 400) -> str:
    layers = [la for la in engine.layers if la.kind != "noop"][:max_layers]
    producer = {t.name: i for i, la in enumerate(layers) for t in la.outputs}
    width = _LEFT + _BOX_W + 160
    height = _GAP + len(layers) * (_BOX_H + _GAP) + 40
    y = lambda i: _GAP + i * (_BOX_H + _GAP)  # noqa: E731
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
             f'font-family="sans-serif" font-size="11">']
    for i, la in enumerate(layers):
        for t in la.inputs:
            j = producer.get(t.name)
            if j is None or j >= i:
                continue
            if j == i - 1:
                x = _LEFT + _BOX_W // 2
                parts.append(f'<line x1="{x}" y1="{y(j) + _BOX_H}" x2="{x}" y2="{y(i)}" '
                             f'stroke="#555"/>')
            else:
                x0, reach = _LEFT + _BOX_W, 20 + 6 * min(i - j, 20)
                parts.append(f'<path d="M{x0},{y(j) + _BOX_H / 2} C{x0 + reach},{y(j)} '
                             f'{x0 + reach},{y(i) + _BOX_H} {x0},{y(i) + _BOX_H / 2}" '
                             f'fill="none" stroke="#999"/>')
    for i, la in enumerate(layers):
        fill = COLORS.get(la.precision, "#eeeeee")
        stroke = ' stroke="#d62728" stroke-width="2"' if la.is_reformat else ' stroke="#555"'
        label = f"{la.name[:52]}{'…' if len(la.name) > 52 else ''}  [{la.precision or '?'}]"
        if la.time_ms is not None:
            label += f" {la.time_ms:.3f} ms"
        parts.append(f'<g><title>{escape(la.name)} ({escape(la.type)}, '
                     f'{escape(str(la.precision))})</title>'
                     f'<rect x="{_LEFT}" y="{y(i)}" width="{_BOX_W}" height="{_BOX_H}" rx="3" '
                     f'fill="{fill}"{stroke}/>'
                     f'<text x="{_LEFT + 4}" y="{y(i) + 15}">{escape(label)}</text></g>')
    ly = height - 22
    for k, (name, color) in enumerate([("INT8", COLORS["INT8"]), ("FP16", COLORS["FP16"]),
                                       ("FP32", COLORS["FP32"])]):
        parts.append(f'<rect x="{_LEFT + k * 90}" y="{ly}" width="14" height="14" fill="{color}"/>'
                     f'<text x="{_LEFT + k * 90 + 18}" y="{ly + 11}">{name}</text>')
    parts.append(f'<rect x="{_LEFT + 270}" y="{ly}" width="14" height="14" fill="none" '
                 f'stroke="#d62728" stroke-width="2"/><text x="{_LEFT + 288}" y="{ly + 11}">'
                 f'reformat</text></svg>')
    return "".join(parts)
