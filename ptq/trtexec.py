"""trtexec command lines for a produced model: TensorRT 11 (strongly typed Q/DQ) and <= 10.

TensorRT 11 has no --int8/--fp16/--calib: the Q/DQ and Cast nodes set every precision.
TensorRT <= 10 users can instead feed the calibration cache to the FP32 model, with
pins expressed as --layerPrecisions (TENSORRT.md §4.3-4.4).
"""
from __future__ import annotations

import shlex
from pathlib import Path

from ptq.graph.precisions import Precision
from ptq.quantization import Pin, Pins


def trt_commands(model_path: str | Path, *, cache_path: str | Path | None = None,
                 pins: Pins = (), fp32_model: str | Path | None = None) -> dict[str, str]:
    """trtexec command lines: "trt11" builds the QDQ model (strongly typed, the only INT8 route
    in TensorRT 11); "trt10" uses the calibration cache on the FP32 model (`--int8 --calib`,
    pins as `--layerPrecisions`) when `cache_path` is given, else the QDQ model `--stronglyTyped`."""
    model_path = Path(model_path)
    pin_list = [Pin(n, p) for n, p in pins.items()] if isinstance(pins, dict) else list(pins)
    engine = model_path.with_suffix(".plan")
    no_tf32 = ["--noTF32"] if any(p.precision is Precision.FP32 for p in pin_list) else []
    q = shlex.quote
    trt11 = ["trtexec", f"--onnx={q(str(model_path))}", f"--saveEngine={q(str(engine))}", *no_tf32]
    if cache_path is None:
        trt10 = ["trtexec", f"--onnx={q(str(model_path))}", "--stronglyTyped",
                 f"--saveEngine={q(str(engine.with_suffix('.trt10.plan')))}", *no_tf32]
    else:
        source = Path(fp32_model or model_path)
        trt10 = ["trtexec", f"--onnx={q(str(source))}", "--int8", f"--calib={q(str(cache_path))}",
                 f"--saveEngine={q(str(engine.with_suffix('.trt10.plan')))}"]
        if pin_list:
            spec = ",".join(f"{p.node}:{p.precision.value}" for p in pin_list)
            trt10 += ["--fp16", "--precisionConstraints=obey", f"--layerPrecisions={q(spec)}"]
    return {"trt11": " ".join(trt11), "trt10": " ".join(trt10)}


def commands_text(commands: dict[str, str], versions: tuple[str, ...] = ("trt11", "trt10"),
                  cache: Path | None = None) -> str:
    """The command lines with a comment saying which TensorRT each is for (<name>.trtexec.txt)."""
    notes = {"trt11": "# TensorRT 11 (strongly typed: the Q/DQ and Cast nodes set every precision)",
             "trt10": ("# TensorRT <= 10 with the calibration cache (implicit INT8 on the FP32 model)"
                       if cache else "# TensorRT 10.x, the same QDQ model (strongly typed)")}
    return "".join(f"{notes[v]}\n{commands[v]}\n" for v in versions)
