"""trtexec command lines for a produced model: TensorRT 11 (strongly typed Q/DQ) and <= 10.

TensorRT 11 has no --int8/--fp16/--calib: the Q/DQ and Cast nodes set every precision.
TensorRT <= 10 users can instead feed the calibration cache to the FP32 model, with
pins expressed as --layerPrecisions (TENSORRT.md §4.3-4.4) -- but only an
EntropyCalibration2 cache: trtexec's built-in calibrator is IInt8EntropyCalibrator2
and skips a cache whose header names another algorithm (TENSORRT.md §1.3-1.4), so
for a MinMax cache the <= 10 line builds the QDQ model instead and says why.
Dynamic inputs get --shapes (or --minShapes/--optShapes/--maxShapes) on every line.
"""
from __future__ import annotations

import shlex
from pathlib import Path

from ptq.backends.trt import ShapeRange, parse_shapes, profile_shapes, trtexec_shape_flags
from ptq.cache import ENTROPY_HEADER, read_cache
from ptq.errors import ConfigError, PtqError
from ptq.graph.model import TensorInfo
from ptq.graph.precisions import Precision
from ptq.quantization import Pin, Pins


def data_shapes(inputs: list[TensorInfo], preprocessing: dict | None,
                batch: int | None) -> dict[str, tuple[int, ...]]:
    """The shape the images were fed at, from ranges.json's preprocessing record
    (size, layout, channels) and batch size: the profile of a dynamic image input."""
    if not preprocessing or len(inputs) != 1 or not preprocessing.get("size"):
        return {}
    h, w = preprocessing["size"]
    c = int(preprocessing.get("channels", 3))
    n = int(batch or 1)
    nhwc = str(preprocessing.get("layout", "NCHW")).upper() == "NHWC"
    return {inputs[0].name: (n, h, w, c) if nhwc else (n, c, h, w)}


def shapes_for(inputs: list[TensorInfo], given: str | None, preprocessing: dict | None,
               batch: int | None) -> tuple[dict[str, ShapeRange], str | None]:
    """(profile, note): --shapes wins, else the calibration shape; when neither fits a dynamic
    input, no profile and a note telling the user which --shapes to add (an error only when
    the user's own --shapes is wrong)."""
    parsed = parse_shapes(given)
    try:
        return profile_shapes(inputs, data_shapes(inputs, preprocessing, batch), parsed), None
    except ConfigError as exc:
        if given:
            raise
        return {}, f"# note: {exc.message}; add {exc.hint[5:] if exc.hint else '--shapes'} to the lines"


def cache_skip_reason(cache_path: str | Path | None) -> str | None:
    """Why trtexec --calib would ignore this cache (None: it would use it)."""
    if cache_path is None:
        return None
    try:
        algorithm = read_cache(cache_path).algorithm
    except PtqError:
        return None  # not readable here (yet): the caller named it, trust it
    if algorithm != ENTROPY_HEADER:
        return (f"{Path(cache_path).name} is a {algorithm} cache; trtexec's built-in calibrator "
                f"is EntropyCalibrator2 and would skip it")
    return None


def trt_commands(model_path: str | Path, *, cache_path: str | Path | None = None,
                 pins: Pins = (), fp32_model: str | Path | None = None,
                 shapes: dict[str, ShapeRange] | None = None) -> dict[str, str]:
    """trtexec command lines: "trt11" builds the QDQ model (strongly typed, the only INT8 route
    in TensorRT 11); "trt10" uses the calibration cache on the FP32 model (`--int8 --calib`,
    pins as `--layerPrecisions`) when `cache_path` is an EntropyCalibration2 cache, else the
    QDQ model `--stronglyTyped`. `shapes`: the optimization profile of the dynamic inputs
    (ptq.backends.trt.profile_shapes), added to every line."""
    model_path = Path(model_path)
    shape_flags = trtexec_shape_flags(shapes or {})
    if cache_skip_reason(cache_path):
        cache_path = None
    pin_list = [Pin(n, p) for n, p in pins.items()] if isinstance(pins, dict) else list(pins)
    engine = model_path.with_suffix(".plan")
    no_tf32 = ["--noTF32"] if any(p.precision is Precision.FP32 for p in pin_list) else []
    q = shlex.quote
    trt11 = ["trtexec", f"--onnx={q(str(model_path))}", *shape_flags,
             f"--saveEngine={q(str(engine))}", *no_tf32]
    if cache_path is None:
        trt10 = ["trtexec", f"--onnx={q(str(model_path))}", *shape_flags, "--stronglyTyped",
                 f"--saveEngine={q(str(engine.with_suffix('.trt10.plan')))}", *no_tf32]
    else:
        source = Path(fp32_model or model_path)
        trt10 = ["trtexec", f"--onnx={q(str(source))}", *shape_flags, "--int8",
                 f"--calib={q(str(cache_path))}",
                 f"--saveEngine={q(str(engine.with_suffix('.trt10.plan')))}"]
        if pin_list:
            spec = ",".join(f"{p.node}:{p.precision.value}" for p in pin_list)
            trt10 += ["--fp16", "--precisionConstraints=obey", f"--layerPrecisions={q(spec)}"]
    return {"trt11": " ".join(trt11), "trt10": " ".join(trt10)}


def commands_text(commands: dict[str, str], versions: tuple[str, ...] = ("trt11", "trt10"),
                  cache: Path | None = None) -> str:
    """The command lines with a comment saying which TensorRT each is for (<name>.trtexec.txt)."""
    skipped = cache_skip_reason(cache)
    usable = cache is not None and skipped is None
    notes = {"trt11": "# TensorRT 11 (strongly typed: the Q/DQ and Cast nodes set every precision)",
             "trt10": ("# TensorRT <= 10 with the calibration cache (implicit INT8 on the FP32 model)"
                       if usable else "# TensorRT 10.x, the same QDQ model (strongly typed)"
                       + (f"; not --calib: {skipped}" if skipped else ""))}
    return "".join(f"{notes[v]}\n{commands[v]}\n" for v in versions)
