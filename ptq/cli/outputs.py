"""Output paths checked before any work, and written as one step after it.

A bad destination (a folder, a path under a file, a read-only or pseudo file system, the
input itself) must fail in the first second with a one-line error, not after a benchmark or
a model rewrite, and never by replacing an input. `plan_outputs` checks every destination
up front (by creating and removing a probe file where the output will go: permission bits
say nothing when running as root or on /proc); `write_outputs` renders nothing itself, it
writes payloads that are already complete, so a failure while computing leaves every
previous output as it was.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

from ptq.errors import ConfigError, OutputError


def _same(a: Path, b: Path) -> bool:
    try:
        return a.exists() and b.exists() and os.path.samefile(a, b)
    except OSError:
        return False


def check_writable(path: str | Path, flag: str) -> None:
    """Refuse a destination that cannot hold a file, with the reason and a fix (the probe
    itself is ptq.atomic.check_writable, shared with calibrate and quantize)."""
    from ptq import atomic

    text = str(path)
    p = Path(text)
    if not text or text.endswith(("/", os.sep)) or p.is_dir():
        raise OutputError(f"{flag} names a folder, not a file", path=text,
                          hint=f"give a file name inside it, e.g. {p / 'out'}")
    try:
        atomic.check_writable(p.parent)
    except OutputError as exc:
        raise OutputError(f"cannot write {flag} there: {exc.path}: {exc.message}", path=text,
                          hint=f"give {flag} a path in a folder you can write to") from None


def plan_outputs(outputs: dict[str, str | Path | None],
                 inputs: list[str | Path | None]) -> None:
    """Check every output before any work: writable, not an input, not given twice."""
    given = {flag: Path(p) for flag, p in outputs.items() if p is not None}
    sources = [Path(p) for p in inputs if p is not None]
    seen: dict[str, str] = {}
    for flag, path in given.items():
        for src in sources:
            if _same(path, src) or path.resolve() == src.resolve():
                raise ConfigError(f"{flag} would overwrite the input {src}", path=path,
                                  hint="write the output to a new file")
        key = str(path.resolve())
        if key in seen:
            raise ConfigError(f"{seen[key]} and {flag} name the same file", path=path,
                              hint="give each output its own file")
        seen[key] = flag
        check_writable(path, flag)


def write_outputs(writes: list[tuple[str, str | Path, Callable[[Path], object]]]) -> None:
    """Run each (flag, path, writer) in order; an OS failure (full disk, file system gone
    read-only) becomes a one-line error. Each writer is atomic (ptq.atomic)."""
    for flag, path, writer in writes:
        try:
            writer(Path(path))
        except OSError as exc:
            from ptq.atomic import output_error
            err = output_error(exc, path)
            raise OutputError(f"could not write {flag}: {err.message}", path=path,
                              hint=err.hint.replace("-o", flag)) from None
