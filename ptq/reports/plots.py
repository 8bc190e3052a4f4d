"""The report's plots: matplotlib figures rendered to inline PNG, plus hand-written SVG sparklines.

Figures are built on `matplotlib.figure.Figure` with an explicit Agg canvas, so making a
report never touches pyplot's global state (a caller's open figures and backend are left
alone). PNG rather than SVG: measured on EfficientNet-Lite0 histograms, both take ~0.15 s
per figure but the SVG is 3.7x larger (34 kB vs 9 kB), and an <img> is easy to verify.
The ~100 small histograms behind <details> are plain SVG strings (~1 kB, well under 1 ms
each): 95 matplotlib figures would take ~14 s, beyond the 10 s budget.
"""
from __future__ import annotations

import base64
import io
import math
import struct
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter, NullLocator

from ptq.reports.analysis import HALF_STEP, display_histogram
from ptq.reports.html import esc, num
from ptq.table import CalibrationTable, TensorRange

if TYPE_CHECKING:
    from ptq.sensitivity.record import LayerResult

DPI = 100
ALGO_COLORS = {"entropy": "#1f77b4", "minmax": "#d62728", "percentile": "#2ca02c", "mse": "#9467bd"}
_EXTRA_COLORS = ["#8c564b", "#e377c2", "#17becf", "#bcbd22"]


@dataclass(frozen=True)
class Png:
    uri: str
    width: int
    height: int


def algo_color(algo: str, algos: list[str]) -> str:
    if algo in ALGO_COLORS:
        return ALGO_COLORS[algo]
    others = [a for a in algos if a not in ALGO_COLORS]
    return _EXTRA_COLORS[others.index(algo) % len(_EXTRA_COLORS)] if algo in others else "#555555"


def to_png(fig: Figure) -> Png:
    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI)
    data = buf.getvalue()
    w, h = struct.unpack(">II", data[16:24])   # the IHDR chunk: the size as rendered
    return Png("data:image/png;base64," + base64.b64encode(data).decode("ascii"), w, h)


def short(name: str, limit: int = 30) -> str:
    """A name as matplotlib text: long ones cut in the middle (where names differ least),
    and `$` escaped so a name is never parsed as mathtext."""
    if len(name) > limit:
        name = name[: limit // 2 - 1] + "…" + name[-(limit // 2):]
    return name.replace("$", r"\$")


_SUPERSCRIPT = str.maketrans("-0123456789", "⁻⁰¹²³⁴⁵⁶⁷⁸⁹")


def _power_of_ten(value: float, _pos: int) -> str:
    """Log-axis labels as plain text (10³), so matplotlib never runs its mathtext parser."""
    if value <= 0:
        return ""
    exp = math.log10(value)
    return f"10{str(round(exp)).translate(_SUPERSCRIPT)}" if abs(exp - round(exp)) < 1e-9 else ""


def _positive(values: list[float]) -> np.ndarray:
    """Values for a log axis: zero and negative become NaN (not drawn)."""
    arr = np.asarray(values, dtype=np.float64)
    return np.where(arr > 0, arr, np.nan)


def ranges_plot(table: CalibrationTable, chosen: str) -> Png:
    """min, max and every algorithm's amax per tensor, in graph order, on a log axis.

    Negative minima are drawn as |min|; a minimum of 0 (ReLU outputs) has no place on a
    log axis and is not drawn; all-zero tensors are marked at the bottom of the axis."""
    tensors = list(table.tensors.values())
    n = len(tensors)
    x = np.arange(n)
    step = max(1, math.ceil(n / 130))
    labels = [short(t.name, 28) for t in tensors][::step]
    font = 8 if n <= 40 else 6
    label_in = 0.15 + 0.6 * font / 72 * max((len(s) for s in labels), default=1)
    fig = Figure(figsize=(12.0, 4.6 + label_in))
    ax = fig.add_subplot()
    ax.set_yscale("log")
    ax.plot(x, _positive([t.max for t in tensors]), "^", ms=4, color="#333333", label="max")
    ax.plot(x, _positive([-t.min for t in tensors]), "v", ms=4, color="#999999", label="|min| (min < 0)")
    for algo in table.methods:
        ax.plot(x, _positive([t.amax[algo] for t in tensors]), "-o", ms=2.5,
                lw=2.2 if algo == chosen else 1.0, color=algo_color(algo, table.methods),
                alpha=1.0 if algo == chosen else 0.8,
                label=f"amax {algo}" + (" (chosen)" if algo == chosen else ""))
    zero = [i for i, t in enumerate(tensors) if t.max == 0 and t.min == 0]
    if zero:
        ax.plot(zero, [ax.get_ylim()[0]] * len(zero), "x", color="#a4262c", ms=7, clip_on=False,
                label="all-zero / empty")
    lo, hi = ax.get_ylim()
    if math.log10(hi / lo) <= 3:   # few decades: label 1-2-5 steps, not just powers of ten
        ax.yaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
        ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: num(v, 3)))
        ax.yaxis.set_minor_formatter(NullFormatter())
    else:
        ax.yaxis.set_major_formatter(FuncFormatter(_power_of_ten))
        ax.yaxis.set_minor_locator(NullLocator())
    ax.set_xticks(x[::step])
    ax.set_xticklabels(labels, rotation=90, fontsize=font)
    ax.set_xlim(-0.8, n - 0.2)
    ax.set_ylabel("|value| (log)")
    ax.grid(True, which="major", axis="y", color="#e6e6e6")
    height = 4.6 + label_in
    ax.legend(fontsize=8, ncol=4, loc="lower left", bbox_to_anchor=(0, 1.0), frameon=False)
    fig.subplots_adjust(left=0.06, right=0.99, top=1 - 0.55 / height, bottom=label_in / height)
    return to_png(fig)


def histogram_plot(t: TensorRange, algos: list[str], chosen: str, clipped: float) -> Png:
    """The |x| histogram (log counts) with each algorithm's amax; the part the chosen amax
    saturates is shaded."""
    counts, width = display_histogram(t, 400)
    fig = Figure(figsize=(6.0, 2.8))
    ax = fig.add_subplot()
    edges = np.arange(len(counts) + 1) * width
    ax.stairs(np.where(counts > 0, counts, np.nan), edges, fill=True, color="#8fa8c8")
    ax.set_yscale("log")
    ax.yaxis.set_major_formatter(FuncFormatter(_power_of_ten))   # no mathtext: ~2x faster
    ax.yaxis.set_minor_locator(NullLocator())
    top = max([max(abs(t.min), abs(t.max)), *t.amax.values()]) * 1.03
    cut = t.amax[chosen] * (1 + HALF_STEP)
    if cut < top:
        ax.axvspan(cut, top, color="#f4c7c3", alpha=0.5, lw=0)
    for algo in algos:
        ax.axvline(t.amax[algo], color=algo_color(algo, algos), lw=2.0 if algo == chosen else 1.2,
                   ls="-" if algo == chosen else "--", label=f"{algo} {num(t.amax[algo])}")
    ax.set_xlim(0, top)
    # an explicit y skips matplotlib's title auto-placement (a tight-bbox pass: ~40% of the time)
    ax.set_title(f"{short(t.name, 48)}  ({t.op_type})  clipped {100 * clipped:.3g}%", fontsize=9,
                 y=1.0, pad=4)
    ax.set_xlabel("|x|", fontsize=8, labelpad=1)
    ax.set_ylabel("count", fontsize=8)
    ax.tick_params(labelsize=7)
    ax.legend(fontsize=7, frameon=False, loc="upper right")
    fig.subplots_adjust(left=0.11, right=0.98, top=0.89, bottom=0.17)
    return to_png(fig)


def sensitivity_plot(layers: list[LayerResult], metric: str, label_mode: bool) -> Png:
    """Horizontal bars of each top layer's gain on the ranking metric (positive = pinning helps)."""
    k = len(layers)
    fig = Figure(figsize=(9.0, 0.9 + 0.28 * k))
    ax = fig.add_subplot()
    deltas = [layer.delta.get(metric, float("nan")) for layer in layers]
    labels = [short(layer.node, 40) + (f" ({layer.mode})" if label_mode else "") for layer in layers]
    y = np.arange(k)[::-1]
    ax.barh(y, deltas, color=["#1f5fbf" if d >= 0 else "#d9822b" for d in deltas], height=0.7)
    ax.set_yticks(y)
    ax.set_yticklabels(labels, fontsize=8)
    ax.axvline(0, color="#333333", lw=0.8)
    ax.set_xlabel(f"gain in {metric} when the layer is pinned (positive = pinning helps)", fontsize=8)
    ax.tick_params(axis="x", labelsize=7)
    ax.grid(True, axis="x", color="#e6e6e6")
    fig.subplots_adjust(left=0.36, right=0.98, top=1 - 0.25 / (0.9 + 0.28 * k),
                        bottom=0.55 / (0.9 + 0.28 * k))
    return to_png(fig)


def sparkline(t: TensorRange, algos: list[str], chosen: str, w: int = 220, h: int = 40) -> str:
    """A small inline SVG of the |x| histogram (log counts) with each algorithm's amax as a line."""
    counts, width = display_histogram(t, w // 2)
    if width == 0 or counts.sum() == 0:
        return f"<svg class=\"spark\" width=\"{w}\" height=\"{h}\" role=\"img\"><text x=\"4\" " \
               f"y=\"{h // 2 + 4}\" font-size=\"11\" fill=\"#a4262c\">all zero / empty</text></svg>"
    top = max([max(abs(t.min), abs(t.max)), *t.amax.values()]) * 1.03
    heights = np.log1p(counts) / np.log1p(counts.max()) * (h - 2)
    xs = np.arange(len(counts) + 1) * width / top * w
    pts = [f"0,{h}"]
    for i, bar in enumerate(heights):
        pts += [f"{xs[i]:.1f},{h - bar:.1f}", f"{xs[i + 1]:.1f},{h - bar:.1f}"]
    pts.append(f"{xs[-1]:.1f},{h}")
    lines = []
    for algo in algos:
        xa = t.amax[algo] / top * w
        lines.append(f"<line x1=\"{xa:.1f}\" x2=\"{xa:.1f}\" y1=\"0\" y2=\"{h}\" stroke=\""
                     f"{algo_color(algo, algos)}\" stroke-width=\"{2 if algo == chosen else 1}\">"
                     f"<title>{esc(algo)} amax {num(t.amax[algo])}</title></line>")
    return (f"<svg class=\"spark\" width=\"{w}\" height=\"{h}\" viewBox=\"0 0 {w} {h}\" role=\"img\" "
            f"aria-label=\"histogram of {esc(t.name)}\"><rect width=\"{w}\" height=\"{h}\" "
            f"fill=\"#fafbfc\"/><polygon points=\"{' '.join(pts)}\" fill=\"#8fa8c8\"/>"
            f"{''.join(lines)}</svg>")
