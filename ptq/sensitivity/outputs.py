"""Write a sensitivity run: sensitivity.json, the auto model, ranges.json when calibrated here.

Everything is rendered first and the files replace the old ones as one set
(ptq.atomic.replace_set), so a failure (a NaN that strict JSON refuses, a full disk,
Ctrl-C) leaves the previous complete set.
"""
from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Callable

from ptq.atomic import replace_set
from ptq.graph.edit import save_model
from ptq.sensitivity.analyze import SensitivityRun
from ptq.sensitivity.record import SensitivityResult

RESULT_NAME = "sensitivity.json"


def auto_model_name(model_path: str | Path) -> str:
    return f"{Path(model_path).stem}.auto.onnx"


def write_outputs(run: SensitivityRun, outdir: str | Path) -> tuple[SensitivityResult, dict[str, Path]]:
    """Write the run into `outdir` as one set (ranges.json, the auto model with any external
    weights, sensitivity.json: all old or all new after a failure or an interruption);
    returns the result as saved (with its file paths) and the files."""
    outdir = Path(outdir)
    result = run.result
    files: dict[str, bytes | Callable[[Path], object]] = {}
    if run.ranges is not None and run.ranges.calibrated and run.ranges.table is not None:
        path = outdir / "ranges.json"
        files["ranges.json"] = _json(run.ranges.table.to_dict())
        result = replace(result, ranges={**result.ranges, "path": str(path)})
    if run.auto_model is not None and result.auto is not None:
        name = auto_model_name(result.model["path"])
        model = run.auto_model
        files[name] = lambda dest: save_model(model, dest)  # streams >2 GB models' weights
        result = replace(result, auto=replace(result.auto, model_path=str(outdir / name)))
    files[RESULT_NAME] = _json(result.to_dict())
    return result, replace_set(outdir, files)


def _json(obj: dict) -> bytes:
    return (json.dumps(obj, indent=1, allow_nan=False) + "\n").encode("utf-8")
