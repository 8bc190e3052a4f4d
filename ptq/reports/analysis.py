"""What the report computes from the artifacts: clipping, and which tensors deserve a plot.

Clipping is read off the stored |x| histogram. A value within half an INT8 step above
amax rounds to ±127 whether or not it is clipped, so only |x| > amax·(1 + 1/254) counts
as saturated; that keeps a percentile amax one bin below a ReLU6's 6.0 from being
reported as clipping the whole spike at 6.

    bins:  | k-1 |   k   | k+1 | ...      cut = amax·(1 + 1/254) falls in bin k at
                    ^cut                 fraction f; clipped = counts[k]·(1-f) + sum(counts[k+1:])
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ptq.calibration import disagreement
from ptq.reports.load import ReportInputs
from ptq.table import TensorRange

HALF_STEP = 1.0 / 254.0      # half of one INT8 step (amax / 127), relative to amax
SATURATION_WARN = 0.01       # warn when more than 1% of the values are clipped
HIGHLIGHT_EACH = 4           # tensors shown per reason in the highlighted histograms


def clipped_fraction(t: TensorRange, amax: float) -> float:
    """Share of the observed values with |x| beyond amax by more than half an INT8 step."""
    counts, width = t.histogram.finalized()
    total = float(counts.sum())
    cut = amax * (1.0 + HALF_STEP)
    if total == 0 or width == 0 or cut >= max(abs(t.min), abs(t.max)):
        return 0.0
    pos = cut / width
    k = int(pos)
    if k >= len(counts):
        return 0.0
    clipped = counts[k] * (1.0 - (pos - k)) + counts[k + 1:].sum()
    return float(clipped / total)


def clipped_by_tensor(inputs: ReportInputs) -> dict[str, float]:
    return {name: clipped_fraction(t, t.amax[inputs.algo]) for name, t in inputs.table.tensors.items()}


def sensitive_tensors(inputs: ReportInputs, topk: int = HIGHLIGHT_EACH) -> list[tuple[str, str]]:
    """(tensor, why) for the top-ranked layers: the layer's input activations when the FP32
    graph is known, else its output (the table records producers, not consumers)."""
    sens = inputs.sensitivity
    if sens is None:
        return []
    produced = {t.producer: n for n, t in inputs.table.tensors.items() if t.producer}
    out: list[tuple[str, str]] = []
    for layer in sorted(sens.layers, key=lambda la: la.rank)[:topk]:
        names = [n for n in (inputs.node_inputs or {}).get(layer.node, []) if n in inputs.table.tensors]
        if names:
            out += [(n, f"input of sensitive layer {layer.node}") for n in names]
        elif layer.node in produced:
            out.append((produced[layer.node], f"output of sensitive layer {layer.node}"))
    return out


@dataclass(frozen=True)
class Highlight:
    """A tensor chosen for a full-size histogram, and why."""

    tensor: str
    reasons: tuple[str, ...]


def highlights(inputs: ReportInputs, clipped: dict[str, float],
               each: int = HIGHLIGHT_EACH) -> list[Highlight]:
    """Most clipped, most disagreement between algorithms, inputs of the top sensitive layers;
    a tensor picked for several reasons appears once with all of them, in graph order."""
    reasons: dict[str, list[str]] = {}
    most = sorted(((c, n) for n, c in clipped.items() if c > 0), reverse=True)[:each]
    for c, name in most:
        reasons.setdefault(name, []).append(f"{100 * c:.3g}% clipped by {inputs.algo}")
    for name, ratio, _ in disagreement(inputs.table, top=each):
        if ratio > 1.0:
            reasons.setdefault(name, []).append(f"algorithms disagree {ratio:.3g}×")
    for name, why in sensitive_tensors(inputs, each):
        if why not in reasons.setdefault(name, []):
            reasons[name].append(why)
    order = {n: i for i, n in enumerate(inputs.table.tensors)}
    return [Highlight(n, tuple(r)) for n, r in sorted(reasons.items(), key=lambda kv: order[kv[0]])]


def display_histogram(t: TensorRange, max_bins: int) -> tuple[np.ndarray, float]:
    """Counts merged into at most `max_bins` bins (plots need no 2048-bin detail)."""
    counts, width = t.histogram.finalized()
    k = max(1, -(-len(counts) // max_bins))
    pad = (-len(counts)) % k
    merged = np.concatenate([counts, np.zeros(pad, counts.dtype)]).reshape(-1, k).sum(axis=1)
    return merged, width * k
