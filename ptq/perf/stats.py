"""One benchmark result in trtexec's vocabulary, from whichever backend measured it.

trtexec's performance summary (TensorRT `samples/common/sampleReporting.cpp`):
  Throughput              queries (inferences) per second of host walltime
  Latency                 per query: H2D + GPU compute + D2H
  Enqueue Time            host time spent launching the query
  H2D / D2H Latency       input / output copies between host and device
  GPU Compute Time        the device work of one query
  Total Host Walltime     first query start to last query end (s)
  Total GPU Compute Time  sum of GPU Compute Time (s)
each per-query metric as min, max, mean, median and percentiles 90/95/99. Percentiles use
trtexec's rule: sort, drop the top floor((1 - p/100) * n) values, take the largest left.
On a CPU backend there is no device: H2D/D2H are 0 and "GPU Compute Time" is the time the
session computes (the names are kept so results line up with trtexec's).
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from fractions import Fraction
from typing import Callable, Sequence

PER_QUERY = ("Latency", "Enqueue Time", "H2D Latency", "GPU Compute Time", "D2H Latency")
METRICS = ("Throughput", *PER_QUERY, "Total Host Walltime", "Total GPU Compute Time")
STATS = ("min", "max", "mean", "median", "p90", "p95", "p99")


def percentile(sorted_ms: Sequence[float], p: float) -> float:
    """trtexec's rule in exact arithmetic: drop the floor((100 - p) * n / 100) largest values.
    (trtexec computes the product in floating point, which can land one sample off when it
    is an exact integer, e.g. p90 of 100 values.)"""
    n = len(sorted_ms)
    exclude = int(Fraction(100 - Fraction(str(p))) * n / 100)
    return float(sorted_ms[max(n - 1 - exclude, 0)])


def stats_of(values_ms: Sequence[float]) -> dict[str, float]:
    v = sorted(float(x) for x in values_ms)
    if not v:
        return {}
    n = len(v)
    median = v[n // 2] if n % 2 else (v[n // 2 - 1] + v[n // 2]) / 2
    return {"min": v[0], "max": v[-1], "mean": sum(v) / n, "median": median,
            "p90": percentile(v, 90), "p95": percentile(v, 95), "p99": percentile(v, 99)}


@dataclass
class BenchConfig:
    warmup_ms: float = 200.0      # trtexec --warmUp default
    duration_s: float = 3.0       # trtexec --duration default
    iterations: int = 10          # trtexec --iterations default (a minimum, like trtexec)
    shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)


def time_queries(query: Callable[[], tuple[float, float, float, float]], config: BenchConfig
                 ) -> tuple[list[float], list[float], list[float], list[float], float]:
    """trtexec's loop: warm up for `warmup_ms`, then time queries until both `iterations`
    and `duration_s` are reached. `query()` returns (h2d, compute, d2h, enqueue) in ms;
    returns the enqueue, h2d, compute and d2h series and the timed wall seconds."""
    end = time.perf_counter() + config.warmup_ms / 1000.0
    while time.perf_counter() < end:
        query()
    enq: list[float] = []
    h2d: list[float] = []
    comp: list[float] = []
    d2h: list[float] = []
    start = time.perf_counter()
    deadline = start + config.duration_s
    while len(comp) < config.iterations or time.perf_counter() < deadline:
        a, b, c, e = query()
        h2d.append(a)
        comp.append(b)
        d2h.append(c)
        enq.append(e)
    return enq, h2d, comp, d2h, time.perf_counter() - start


@dataclass
class BenchResult:
    """`metrics` maps trtexec's names to a number (Throughput qps, totals in s) or a stats
    dict in ms; `queries` is the number of timed queries."""

    label: str
    backend: str                  # ort-cpu, ort-cuda, tensorrt, trtexec-log, trtexec-times
    metrics: dict
    queries: int | None = None
    batch: int | None = None
    source: str | None = None
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_queries(cls, label: str, backend: str, *, enqueue: list[float], h2d: list[float],
                     compute: list[float], d2h: list[float], walltime_s: float,
                     **kw) -> BenchResult:
        latency = [a + b + c for a, b, c in zip(h2d, compute, d2h)]
        n = len(compute)
        metrics = {"Throughput": n / walltime_s if walltime_s > 0 else None,
                   "Latency": stats_of(latency), "Enqueue Time": stats_of(enqueue),
                   "H2D Latency": stats_of(h2d), "GPU Compute Time": stats_of(compute),
                   "D2H Latency": stats_of(d2h), "Total Host Walltime": walltime_s,
                   "Total GPU Compute Time": sum(compute) / 1000.0}
        return cls(label, backend, metrics, queries=n, **kw)


def render(results: list[BenchResult], stat: str = "median") -> str:
    """Side by side, the first result as the anchor (ratios are anchor / this for times,
    this / anchor for throughput: > 1 means faster than the anchor)."""
    def cell(r: BenchResult, m: str) -> str:
        v = r.metrics.get(m)
        if isinstance(v, dict):
            return "-" if not v else f"{v.get(stat, float('nan')):.4g} ms"
        if v is None:
            return "-"
        return f"{v:.4g} qps" if m == "Throughput" else f"{v:.4g} s"

    names = [r.label for r in results]
    rows = [["metric", *names]]
    for m in METRICS:
        label = m if m in ("Throughput", "Total Host Walltime", "Total GPU Compute Time") \
            else f"{m} ({stat})"
        rows.append([label, *[cell(r, m) for r in results]])
    if len(results) > 1:
        a = results[0].metrics
        sp = []
        for r in results:
            q0, q = a.get("Throughput"), r.metrics.get("Throughput")
            sp.append(f"{q / q0:.2f}x" if q and q0 else "-")
        rows.append([f"speed vs {names[0]}", *sp])
    rows.append(["queries x batch", *[f"{r.queries or '?'} x {r.batch or '?'}" for r in results]])
    rows.append(["backend", *[r.backend for r in results]])
    widths = [max(len(str(row[i])) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(str(c).ljust(w) for c, w in zip(row, widths)).rstrip()
                     for row in rows)
