"""Shared pieces for the sensitivity tests: preprocessing, an independent evaluation, hook sources."""
from __future__ import annotations

import textwrap
from pathlib import Path

import numpy as np
import onnxruntime as ort

from ptq.calibration import CalibrateConfig, PreprocessOptions, open_model_data
from ptq.evaluate import run_model
from ptq.graph.model import load_model
from ptq.metrics import cosine

DIGITS_PRE = PreprocessOptions(preset="raw", mean=(0.0,), std=(255.0,))
DIGITS_FLAGS = ["--preset", "raw", "--mean", "0", "--std", "255"]


def batches_of(model_path: Path, data: Path, pre: PreprocessOptions = DIGITS_PRE, size: int = 32):
    """The evaluation batches, read the plain way (no ptq.sensitivity code involved)."""
    proto = load_model(model_path)
    return list(open_model_data(model_path, proto, data, CalibrateConfig(preprocess=pre)).batches(size))


def run_qdq(quant_model, batches) -> dict[str, np.ndarray]:
    """A QDQ model's outputs as the analyzer's default level ('nchwc') computes them, by plain
    onnxruntime: level all with its Q/DQ fusions off (ptq's rewrite onto NCHWc blocks gives
    the same values bit for bit: tests/test_nchwc.py)."""
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.add_session_config_entry("session.disable_quant_qdq", "1")
    session = ort.InferenceSession(quant_model.SerializeToString(), opts,
                                   providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    runs = [session.run(names, b.feeds) for b in batches]
    return {n: np.concatenate([r[i] for r in runs]) for i, n in enumerate(names)}


def cosine_vs_fp32(fp32_model, quant_model, batches) -> float:
    """cosine of a quantized model against FP32, both run directly in ONNX Runtime
    (FP32 with full optimisation, the QDQ model as `run_qdq` runs it)."""
    ref = run_model(fp32_model, batches, optimization="all")
    cand = run_qdq(quant_model, batches)
    return cosine(ref["logits"], cand["logits"])


def accuracy_vs_labels(quant_model, batches) -> float:
    cand = run_qdq(quant_model, batches)["logits"]
    labels = np.concatenate([b.labels for b in batches])
    return float(np.mean(cand.argmax(1) == labels))


def write_hook_module(folder: Path, name: str) -> str:
    """A hook module named `name` in `folder`; returns the module name."""
    (folder / f"{name}.py").write_text(textwrap.dedent('''
        import numpy as np

        def accuracy(outputs, meta):
            return float(np.mean(outputs["logits"].argmax(1) == meta["labels"]))
        accuracy.higher_is_better = True

        def accuracy_from_files(outputs, meta):
            """Labels from the file names ('<class>/<file>.png'): checks files follow outputs."""
            truth = np.array([int(f.replace("\\\\", "/").split("/")[0]) for f in meta["files"]])
            return float(np.mean(outputs["logits"].argmax(1) == truth))
        accuracy_from_files.higher_is_better = True

        def no_direction(outputs, meta):
            return 0.0

        def boom(outputs, meta):
            raise ValueError("kaboom from the hook")
        boom.higher_is_better = False

        def not_a_number(outputs, meta):
            return float("nan")
        not_a_number.higher_is_better = True

        def decode(outputs, meta):
            """Classifier as detector: one whole-image box per image, class = argmax."""
            logits = outputs["logits"].astype(np.float64)
            p = np.exp(logits - logits.max(1, keepdims=True))
            p /= p.sum(1, keepdims=True)
            return [{"boxes": [[0, 0, 16, 16]], "scores": [row.max()], "classes": [row.argmax()]}
                    for row in p]
    '''))
    return name


def write_broken_module(folder: Path, name: str) -> str:
    (folder / f"{name}.py").write_text("import this_module_does_not_exist_anywhere\n")
    return name
