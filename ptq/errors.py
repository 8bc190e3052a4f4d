"""Exceptions that carry a one-line message, the offending file and the fix.

The CLI prints `ptq: error: <file>: <what went wrong> (fix: <hint>)` and exits
non-zero; library callers catch `PtqError`. `InternalError` is deliberately not a
`PtqError`: it means a bug in ptq, not bad input.
"""
from __future__ import annotations

from pathlib import Path


def exception_line(exc: BaseException, *, last: bool = False) -> str:
    """One line of an exception's text for a one-line error (ONNX Runtime puts the
    useful part last); the exception's type name when it has no text."""
    lines = str(exc).strip().splitlines()
    return (lines[-1] if last else lines[0]) if lines else type(exc).__name__


class PtqError(Exception):
    """Bad input or a failed step that the user can fix."""

    def __init__(self, message: str, *, path: str | Path | None = None,
                 hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.path = None if path is None else str(path)
        self.hint = hint

    def __str__(self) -> str:
        text = self.message if self.path is None else f"{self.path}: {self.message}"
        if self.hint:
            text += f" (fix: {self.hint})"
        return " ".join(text.split())  # always one line


class ModelLoadError(PtqError):
    """The ONNX file is missing, corrupt, unsupported or has no float input."""


class DataError(PtqError):
    """Calibration/evaluation data is missing, unreadable or does not fit the model."""


class CalibrationError(PtqError):
    """Statistics are unusable: NaN/Inf activations, no observations."""


class ConfigError(PtqError):
    """Contradictory or invalid options, unknown names or patterns."""


class OutputError(PtqError):
    """An output cannot be written: read-only or missing folder, a file in the way, full disk."""


class BackendUnavailable(PtqError):
    """An optional backend (TensorRT, CUDA) is not installed or has no device."""


class InternalError(Exception):
    """A broken invariant inside ptq: please report it."""
