"""Atomic file output: results appear whole or not at all.

Every artifact ptq writes goes through here (temp file in the target directory,
fsync, `os.replace`), so a crash or a bad input never leaves a partial file.
"""
from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Iterator


@contextlib.contextmanager
def atomic_path(dest: str | Path) -> Iterator[Path]:
    """Yield a temp path next to `dest`; move it onto `dest` only on success."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        with open(tmp_path, "rb+") as fh:
            os.fsync(fh.fileno())
        os.chmod(tmp_path, 0o666 & ~_umask())  # mkstemp makes 0600; give the usual mode
        os.replace(tmp_path, dest)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_bytes(dest: str | Path, data: bytes) -> Path:
    with atomic_path(dest) as tmp:
        tmp.write_bytes(data)
    return Path(dest)


def write_text(dest: str | Path, text: str) -> Path:
    return write_bytes(dest, text.encode("utf-8"))


def write_json(dest: str | Path, obj: Any) -> Path:
    """Strict JSON: NaN/Inf are refused here rather than written as invalid JSON."""
    return write_text(dest, json.dumps(obj, indent=1, allow_nan=False) + "\n")
