"""Write a sensitivity run: sensitivity.json, the auto model, ranges.json when calibrated here.

Everything is rendered to bytes first and written atomically afterwards, so a
failure (a NaN that strict JSON refuses, an unwritable folder) leaves no partial
set of files.
"""
from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

from ptq.atomic import write_bytes
from ptq.sensitivity.analyze import SensitivityRun
from ptq.sensitivity.record import SensitivityResult

RESULT_NAME = "sensitivity.json"


def auto_model_name(model_path: str | Path) -> str:
    return f"{Path(model_path).stem}.auto.onnx"


def write_outputs(run: SensitivityRun, outdir: str | Path) -> tuple[SensitivityResult, dict[str, Path]]:
    """Write the run into `outdir`; returns the result as saved (with its file paths) and the files."""
    outdir = Path(outdir)
    result = run.result
    blobs: dict[str, bytes] = {}
    if run.ranges is not None and run.ranges.calibrated and run.ranges.table is not None:
        path = outdir / "ranges.json"
        blobs["ranges.json"] = _json(run.ranges.table.to_dict())
        result = replace(result, ranges={**result.ranges, "path": str(path)})
    if run.auto_model is not None and result.auto is not None:
        name = auto_model_name(result.model["path"])
        blobs[name] = run.auto_model.SerializeToString()
        result = replace(result, auto=replace(result.auto, model_path=str(outdir / name)))
    blobs[RESULT_NAME] = _json(result.to_dict())
    return result, {name: write_bytes(outdir / name, data) for name, data in blobs.items()}


def _json(obj: dict) -> bytes:
    return (json.dumps(obj, indent=1, allow_nan=False) + "\n").encode("utf-8")
