"""`ptq.perf`: latency and throughput with trtexec's metric names and meanings.

    stats.py     BenchResult and the trtexec statistics (min/max/mean/median/p90/p95/p99)
    trtexec.py   read trtexec's console log and --exportTimes JSON; run trtexec when present
    ort.py       ONNX Runtime CPU, and CUDA with IOBinding (H2D / compute / D2H apart)
    trt.py       TensorRT's Python API (written to the documented API; needs a GPU)
"""
from __future__ import annotations

from ptq.perf.stats import METRICS, BenchConfig, BenchResult, stats_of
from ptq.perf.trtexec import parse_log, parse_times

__all__ = ["METRICS", "BenchConfig", "BenchResult", "parse_log", "parse_times", "stats_of"]
