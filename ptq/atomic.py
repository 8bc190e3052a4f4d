"""Atomic file output: results appear whole or not at all, alone or as a set.

One file (`atomic_path`, `write_bytes`/`write_text`/`write_json`): a locked temp file
in the target directory, fsync, `os.replace`. A crash or a bad input never leaves a
partial file; an interrupted run may leave its `.<name>.XXXXXXXX.tmp`, which the next
`replace_set` into that folder deletes (only when no live process holds its lock).

A set of files (`replace_set`: ranges.json + calib.*.cache; a model + .trtexec.txt).
Several `os.replace` calls are not atomic together, so a set is switched by a journal:

  1. every file is written and fsynced into a staging folder `.ptq-set-XXXX.tmp/` inside
     the output folder (ENOSPC, a bad value or Ctrl-C here: staging is deleted, the
     old set is untouched);
  2. COMMIT, the list of files to move in and old set members to delete, is written and
     renamed into the staging folder: that rename is the commit point;
  3. the files are renamed into place one by one (SIGINT/SIGTERM/SIGHUP are held back
     until this is done), old members not in the new set are deleted, staging removed.

Guarantee: each file is always whole; before the commit the folder holds the complete
old set, after it the complete new set. The only split is SIGKILL or power loss inside
step 3 (a few renames); the folder then still has the committed staging folder, and the
next ptq command that writes it or reads ranges.json/a cache from it finishes the
renames first (`finish_interrupted`), so ptq never reads a mixed set. Staging folders
of runs killed before the commit are deleted by the next `replace_set` there. Liveness
is an flock held by the writing process, which the kernel drops when it dies.

Test hook: PTQ_TEST_PAUSE=<step> (e.g. `commit`, `replace:ranges.json`, `write:x`) makes
the writer print `ptq-test: paused at <step>` to stderr and wait up to 30 s (or until a
signal) there, so tests can send real signals at exact points of the write phase.
"""
from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import shutil
import signal
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

from ptq.errors import OutputError

try:
    import fcntl
except ImportError:  # Windows: no liveness locks, so no cleanup of other runs' leftovers
    fcntl = None

STAGE_PREFIX, STAGE_SUFFIX = ".ptq-set-", ".tmp"
COMMIT = "COMMIT"
_LOCK = ".lock"
_TEMP_FILE = re.compile(r"^\.(?P<name>.+)\.[a-z0-9_]{8}\.tmp$")  # mkstemp's 8 random chars
_HELD_SIGNALS = tuple(getattr(signal, s) for s in ("SIGINT", "SIGTERM", "SIGHUP")
                      if hasattr(signal, s))


# --- errors --------------------------------------------------------------------------------

def output_error(exc: OSError, path: str | Path) -> OutputError:
    """A user-facing error for an OSError met while writing `path`."""
    why = exc.strerror or type(exc).__name__
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        hint = "free some space or write elsewhere with -o; the previous output is intact"
    elif exc.errno == errno.EFBIG:
        hint = "the file is over this process's or filesystem's size limit; write elsewhere"
    elif exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        hint = "pass -o a folder you can write to"
    elif exc.errno in (errno.ENOTDIR, errno.EEXIST):
        hint = "a part of the output path is an existing file; pass -o another path"
    else:
        hint = "pass -o another path"
    return OutputError(f"cannot write output ({why})", path=path, hint=hint)


def check_writable(folder: str | Path) -> None:
    """Fail now (not after a long pass) if files cannot be created in `folder`.

    Probes the folder, or the nearest existing parent when it does not exist yet, with a
    real temp file (permission bits mean nothing to root; a read-only mount does)."""
    folder = Path(folder)
    probe = folder
    while not probe.exists():
        if probe.parent == probe:
            break
        probe = probe.parent
    if not probe.is_dir():
        raise OutputError("the output path is under an existing file, not a folder",
                          path=probe, hint="pass -o a folder path")
    try:
        with tempfile.TemporaryFile(dir=probe, prefix=".ptq-probe-"):
            pass
    except OSError as exc:
        raise output_error(exc, probe) from None


# --- one file ------------------------------------------------------------------------------

def _lock(fd: int) -> None:
    if fcntl is not None:
        fcntl.flock(fd, fcntl.LOCK_EX)


@contextlib.contextmanager
def _claim(path: Path) -> Iterator[bool]:
    """Take `path`'s lock if no live process holds it; yields whether it was taken (and
    keeps it until the block ends, so two tidying processes never work on the same thing)."""
    if fcntl is None:
        yield False
        return
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        yield False
        return
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            yield False
            return
        yield True
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_path(dest: str | Path) -> Iterator[Path]:
    """Yield a temp path next to `dest`; move it onto `dest` only on success."""
    dest = Path(dest)
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent)
    except OSError as exc:
        raise output_error(exc, dest) from None
    _lock(fd)  # held until we are done: marks the temp file as live for cleanup
    tmp_path = Path(tmp)
    try:
        try:
            yield tmp_path
            with open(tmp_path, "rb+") as fh:
                os.fsync(fh.fileno())
            os.chmod(tmp_path, 0o666 & ~_umask())  # mkstemp makes 0600; give the usual mode
            os.replace(tmp_path, dest)
        except OSError as exc:
            raise output_error(exc, dest) from None
    finally:
        os.close(fd)
        with contextlib.suppress(OSError):
            tmp_path.unlink()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_bytes(dest: str | Path, data: bytes) -> Path:
    with atomic_path(dest) as tmp:
        tmp.write_bytes(data)
    return Path(dest)


def encode_text(text: str) -> bytes:
    """UTF-8; a file name that is not UTF-8 (held by Python as lone surrogates) is written
    back as its original bytes, so a path in a written command still names the file."""
    return text.encode("utf-8", "surrogateescape")


def write_text(dest: str | Path, text: str) -> Path:
    return write_bytes(dest, encode_text(text))


def write_json(dest: str | Path, obj: Any) -> Path:
    """Strict JSON: NaN/Inf are refused here rather than written as invalid JSON."""
    return write_text(dest, json.dumps(obj, indent=1, allow_nan=False) + "\n")


# --- a set of files ------------------------------------------------------------------------

def replace_set(folder: str | Path, files: Mapping[str, bytes | Callable[[Path], Any]], *,
                owned: Callable[[str], bool] | None = None) -> dict[str, Path]:
    """Replace a set of files in `folder` as one (see the module docstring for the exact
    guarantee). `files` maps a name to its bytes or to a writer `fn(path)` (a writer may
    add companion files next to its path, e.g. a model's external `.data`; they move in
    too). Existing names that `owned(name)` accepts and the new set lacks are deleted in
    the same switch; temp files of `owned` names left by killed runs are deleted first.
    """
    folder = Path(folder)
    owned = owned or (lambda name: name in files)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise output_error(exc, folder) from None
    finish_interrupted(folder, owned=owned)
    try:
        stage = Path(tempfile.mkdtemp(prefix=STAGE_PREFIX, suffix=STAGE_SUFFIX, dir=folder))
        lock_fd = os.open(stage / _LOCK, os.O_CREAT | os.O_RDWR, 0o600)
    except OSError as exc:
        raise output_error(exc, folder) from None
    _lock(lock_fd)
    committed = False
    try:
        try:
            for name, content in files.items():
                if isinstance(content, (bytes, bytearray)):
                    (stage / name).write_bytes(content)
                else:
                    content(stage / name)
                _test_pause(f"write:{name}")
            moved = sorted((p.name for p in stage.iterdir() if p.name != _LOCK),
                           key=lambda n: (n == "ranges.json", n))  # ranges.json last
            for name in moved:
                if (folder / name).is_dir():  # os.replace would fail half-way through the set
                    raise OutputError("is a folder, not a file", path=folder / name,
                                      hint="remove it or write elsewhere with -o")
                _fsync_file(stage / name)
            remove = sorted(p.name for p in folder.iterdir()
                            if p.name not in moved and p.is_file() and owned(p.name))
            journal = json.dumps({"move": moved, "remove": remove}).encode()
            (stage / f"{COMMIT}.tmp").write_bytes(journal)
            _fsync_file(stage / f"{COMMIT}.tmp")
            _fsync_dir(stage)
            with _signals_held():
                os.replace(stage / f"{COMMIT}.tmp", stage / COMMIT)  # the commit point
                committed = True
                _fsync_dir(stage)
                _test_pause("commit")
                _apply(stage, folder)
        except OSError as exc:
            raise output_error(exc, folder) from None
    finally:
        os.close(lock_fd)
        if not committed:
            shutil.rmtree(stage, ignore_errors=True)
    return {name: folder / name for name in files}


def _apply(stage: Path, folder: Path) -> None:
    """Roll a committed staging folder forward (idempotent: a rerun after a kill resumes)."""
    journal = json.loads((stage / COMMIT).read_text())
    for name in journal["move"]:
        if (stage / name).exists():
            os.replace(stage / name, folder / name)
            _test_pause(f"replace:{name}")
    for name in journal["remove"]:
        with contextlib.suppress(FileNotFoundError):
            (folder / name).unlink()
    _fsync_dir(folder)
    (stage / COMMIT).unlink()  # not committed any more: whatever is left is junk
    shutil.rmtree(stage, ignore_errors=True)


def finish_interrupted(folder: str | Path, *, owned: Callable[[str], bool] | None = None) -> None:
    """Complete switches that a killed run committed, delete what killed runs left before
    committing, and (with `owned`) stale temp files of owned names. Runs still alive keep
    their lock and are left alone. Errors (e.g. a read-only folder) are ignored: this
    tidies up and must never stop a reader."""
    folder = Path(folder)
    try:
        entries = list(folder.iterdir())
    except OSError:
        return
    for path in entries:
        try:
            if path.name.startswith(STAGE_PREFIX) and path.name.endswith(STAGE_SUFFIX) \
                    and path.is_dir():
                if not (path / _LOCK).exists():  # killed before it locked (or locking now)
                    if time.time() - path.stat().st_mtime > 60:
                        shutil.rmtree(path, ignore_errors=True)
                    continue
                with _claim(path / _LOCK) as claimed:
                    if claimed and (path / COMMIT).exists():
                        _apply(path, folder)
                    elif claimed:
                        shutil.rmtree(path, ignore_errors=True)
            elif owned is not None and (m := _TEMP_FILE.match(path.name)) \
                    and owned(m["name"]) and path.is_file():
                with _claim(path) as claimed:
                    if claimed:
                        path.unlink()
        except OSError:
            continue


def _fsync_file(path: Path) -> None:
    with open(path, "rb") as fh:
        os.fsync(fh.fileno())


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):  # not every platform/filesystem fsyncs a folder
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


_held: list[int] = []  # signals that arrived while held back (read by the test pause)


@contextlib.contextmanager
def _signals_held() -> Iterator[None]:
    """Hold SIGINT/SIGTERM/SIGHUP back while a committed set is switched, then deliver them
    (Ctrl-C cannot split a set; only SIGKILL can, and `finish_interrupted` repairs that)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    _held.clear()
    old = {}
    for sig in _HELD_SIGNALS:
        with contextlib.suppress(OSError, ValueError):
            old[sig] = signal.signal(sig, lambda s, _f: _held.append(s))
    try:
        yield
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)
        pending, _held[:] = list(dict.fromkeys(_held)), []
        for sig in pending:
            os.kill(os.getpid(), sig)  # now handled as usual (KeyboardInterrupt for SIGINT)


def _test_pause(step: str) -> None:
    """The PTQ_TEST_PAUSE hook (module docstring); a no-op unless the variable names `step`.
    Waits up to 30 s; a signal ends the wait (raised at once, or held back and recorded)."""
    if os.environ.get("PTQ_TEST_PAUSE") != step:
        return
    sys.stderr.write(f"ptq-test: paused at {step}\n")
    sys.stderr.flush()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not _held:
        time.sleep(0.02)
