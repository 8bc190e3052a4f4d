"""`ptq.engine`: what TensorRT did with the graph, read from the files trtexec writes.

    schema.py   IEngineInspector JSON (TensorRT 8.x/10 `Bindings` and 11.x `I/O Tensors`)
                and `--exportProfile` JSON -> `Engine` / `EngineLayer`
    analyze.py  per-layer table, reformat layers, INT8 intent vs the Q/DQ ONNX, engine diff
    draw.py     the engine graph as a small self-contained SVG, coloured by precision

Named `engine`, not `inspect`, so it never shadows the standard library module.
"""
from __future__ import annotations

from ptq.engine.analyze import (EngineComparison, IntentMismatch, compare_engines,
                                int8_intent, reformat_summary, summarize)
from ptq.engine.schema import Engine, EngineLayer, TensorDesc, load_engine, load_profile

__all__ = ["Engine", "EngineComparison", "EngineLayer", "IntentMismatch", "TensorDesc",
           "compare_engines", "int8_intent", "load_engine", "load_profile",
           "reformat_summary", "summarize"]
