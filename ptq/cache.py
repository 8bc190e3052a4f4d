"""TensorRT calibration cache (the text format trtexec --calib and TensorRT <= 10 read).

    TRT-<version int>-<EntropyCalibration2 | MinMaxCalibration>
    <tensor name>: <8 lowercase hex digits>

The hex is the IEEE-754 float32 bit pattern, big-endian, of the SCALE = amax / 127
(amax 2.0 -> 0.015748031 -> `3c810204`). The version int is major*1000+minor*100+patch
for TensorRT 8.x and major*10000+minor*100+patch from 10.0 (8.6.1 -> 8601,
10.3.0 -> 100300). trtexec parses each line at its LAST ':' followed by one space.
"""
from __future__ import annotations

import math
import re
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ptq.atomic import finish_interrupted, write_text
from ptq.errors import ConfigError, PtqError

DEFAULT_TRT_VERSION = "10.16.0"  # the last TensorRT line (10.x) that still reads caches
ENTROPY_HEADER = "EntropyCalibration2"
MINMAX_HEADER = "MinMaxCalibration"
_HEADER = re.compile(r"^TRT-(\d+)-([A-Za-z0-9]+)$")
_HEX = re.compile(r"^[0-9a-fA-F]{8}$")


def version_int(version: str | int) -> int:
    """'10.3.0' -> 100300, '8.6.1' -> 8601; a header int (>= 1000) passes through, and a
    bare major version means that release: '10' -> 100000 (not a 'TRT-10-' header).

    Validated so that the header always decodes back to the version (TENSORRT.md §1.3):
    major 1..99; before 10.0 minor 0..9 (major*1000 + minor*100 + patch), patch 0..99; a
    4th part (the build, 8.6.1.6) is not in the header and is ignored."""
    bad = ConfigError(f"bad TensorRT version {str(version)!r}",
                      hint="use e.g. 10.3.0, 8.6.1, 10 or a header number such as 100300")
    text = str(version).strip()
    if text.isdigit() and text.isascii():
        value = int(text)
        if value < 1000:
            if not 1 <= value <= 99:
                raise bad
            return value * (10000 if value >= 10 else 1000)
        major = value // 10000 if value >= 100000 else value // 1000
        if not (1 <= major <= 99) or value >= 1_000_000:
            raise bad
        return value
    parts = text.split(".")
    if not 1 <= len(parts) <= 4 or not all(p.isdigit() and p.isascii() for p in parts):
        raise bad
    major, minor, patch = (int(p) for p in (parts + ["0", "0"])[:3])
    if not (1 <= major <= 99 and minor <= (99 if major >= 10 else 9) and patch <= 99):
        raise bad
    return major * (10000 if major >= 10 else 1000) + minor * 100 + patch


def version_major(version: str | int) -> int:
    """The major release of a (validated) TensorRT version: '8.6.1' -> 8, '100300' -> 10."""
    value = version_int(version)
    return value // 10000 if value >= 100000 else value // 1000


def scale_to_hex(amax: float) -> str:
    scale = np.float32(amax) / np.float32(127.0)
    if not (math.isfinite(scale) and scale > 0):
        raise ValueError(f"refusing to write scale {scale} (amax {amax})")
    return struct.pack(">f", scale).hex()


def hex_to_scale(text: str) -> float:
    return struct.unpack(">f", bytes.fromhex(text))[0]


def render_cache(amaxes: dict[str, float], *, header: str = ENTROPY_HEADER,
                 trt_version: str | int = DEFAULT_TRT_VERSION) -> str:
    lines = [f"TRT-{version_int(trt_version)}-{header}"]
    for name, amax in amaxes.items():
        if "\n" in name or not name:
            raise ValueError(f"tensor name {name!r} cannot be written to a cache")
        lines.append(f"{name}: {scale_to_hex(amax)}")
    return "\n".join(lines) + "\n"


def write_cache(path: str | Path, amaxes: dict[str, float], **kwargs) -> Path:
    return write_text(path, render_cache(amaxes, **kwargs))


@dataclass(frozen=True)
class CalibrationCache:
    """A parsed cache: header fields and per-tensor scales (amax = scale * 127)."""

    version: int
    algorithm: str
    scales: dict[str, float]

    @property
    def amaxes(self) -> dict[str, float]:
        return {k: float(np.float32(v) * np.float32(127.0)) for k, v in self.scales.items()}


def parse_cache(text: str, origin: str = "<cache>") -> CalibrationCache:
    lines = text.splitlines()
    if not lines or not (m := _HEADER.match(lines[0].strip())):
        first = lines[0][:60] if lines else ""
        raise PtqError(f"bad calibration cache header {first!r}", path=origin,
                       hint="a TensorRT cache starts with e.g. TRT-100300-EntropyCalibration2")
    scales: dict[str, float] = {}
    for lineno, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue
        name, sep, value = line.rpartition(":")
        value = value[1:] if value.startswith(" ") else value
        if not sep or not name or not _HEX.match(value.strip()):
            raise PtqError(f"line {lineno} is not '<tensor>: <8 hex digits>': {line[:80]!r}",
                           path=origin, hint="regenerate the cache with ptq calibrate or TensorRT")
        scale = hex_to_scale(value.strip())
        if not (math.isfinite(scale) and scale > 0):
            raise PtqError(f"line {lineno}: tensor '{name}' has scale {scale}", path=origin,
                           hint="every scale must be positive and finite; recalibrate")
        scales[name] = scale
    return CalibrationCache(int(m.group(1)), m.group(2), scales)


def read_cache(path: str | Path) -> CalibrationCache:
    path = Path(path)
    finish_interrupted(path.parent)  # a set switch killed half-way is completed first
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise PtqError("calibration cache not found", path=path, hint="check the --cache path") from None
    except UnicodeDecodeError:
        raise PtqError("calibration cache is not text", path=path,
                       hint="pass a TensorRT text calibration cache, not an engine") from None
    return parse_cache(text, str(path))
