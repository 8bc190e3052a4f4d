"""Per-layer sensitivity: which nodes break INT8 accuracy, and which to keep in FP16/FP32.

    from ptq.sensitivity import SensitivityConfig, analyze, write_outputs
    run = analyze("model.onnx", "images/", SensitivityConfig(metrics=("top1", "cosine"), labels=True),
                  ranges="out/ranges.json")
    run.result.ranking()[:10]            # LayerResult(node, op_type, metrics, delta, rank, ...)
    write_outputs(run, "out/")           # sensitivity.json (+ <model>.auto.onnx with --auto)

Modules: analyze (the pipeline), variants (build/run/score, parallel), search (modes and
the greedy fallback), scoring (metric names, targets), hooks (user metrics), detection
(AP/mAP), inputs (data and ranges), cache (reference outputs), record (sensitivity.json),
outputs (atomic writing).
"""
from __future__ import annotations

from ptq.sensitivity.analyze import (Analysis, AutoConfig, SensitivityConfig, SensitivityRun,
                                     analyze, rank_layers)
from ptq.sensitivity.detection import (Detections, GroundTruth, average_precision, coco_map,
                                       iou_matrix, mean_average_precision, per_class_ap)
from ptq.sensitivity.hooks import EvalMeta, HookScorer, load_hook
from ptq.sensitivity.outputs import write_outputs
from ptq.sensitivity.record import AutoResult, AutoStep, LayerResult, SensitivityResult
from ptq.sensitivity.scoring import Target, parse_target, resolve_scorers
from ptq.sensitivity.search import GreedyFallback, Mode
from ptq.sensitivity.variants import Backend, EngineSpec, Evaluator, ExecutorKind

__all__ = [
    "Analysis", "AutoConfig", "AutoResult", "AutoStep", "Backend", "Detections", "EngineSpec",
    "EvalMeta", "Evaluator", "ExecutorKind", "GreedyFallback", "GroundTruth", "HookScorer",
    "LayerResult", "Mode", "SensitivityConfig", "SensitivityResult", "SensitivityRun", "Target",
    "analyze", "average_precision", "coco_map", "iou_matrix", "load_hook",
    "mean_average_precision", "parse_target", "per_class_ap", "rank_layers", "resolve_scorers",
    "write_outputs",
]
