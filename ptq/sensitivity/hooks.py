"""User metric hooks: `PKG.MODULE:FUNCTION`, loaded with errors that name the hook.

A hook scores one model over the whole evaluation set::

    def my_metric(outputs: dict[str, np.ndarray], meta: dict) -> float: ...
    my_metric.higher_is_better = True      # REQUIRED: the direction is declared on the function

`outputs` maps each model output name to its array over all evaluation samples
(batches concatenated, sample axis first); `meta` is `{"files": [str, ...],
"labels": ndarray | None}` in the same order. The hook is called once per model
(reference, baseline, each variant), so it may compute set-level figures like
mAP. The direction lives on the function, not on the command line, because it is
a property of the metric and must not be mistyped per run.

The current directory is importable (appended to `sys.path`, as `python -m`
would), so `--metric myhooks:score` finds `./myhooks.py`.
"""
from __future__ import annotations

import importlib
import math
import os
import sys
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from ptq.errors import ConfigError, PtqError, exception_line

HOOK_SIGNATURE = "(outputs: dict[str, ndarray], meta: {'files': [...], 'labels': ndarray|None}) -> float"


@dataclass(frozen=True)
class EvalMeta:
    """What a hook learns about the samples besides the outputs: names and labels."""

    files: tuple[str, ...]
    labels: Any = None  # ndarray of class ids, or per-image ground truth for detection

    def as_hook_arg(self) -> dict:
        return {"files": list(self.files), "labels": self.labels}


def is_hook_spec(name: str) -> bool:
    return ":" in name


def load_hook(spec: str) -> Callable[..., Any]:
    """'pkg.module:function' (the attribute may be dotted) -> the callable."""
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr or any(not part.isidentifier() for part in
                                          [*module_name.split("."), *attr.split(".")]):
        raise ConfigError(f"bad metric hook {spec!r}: expected PKG.MODULE:FUNCTION",
                          hint="e.g. --metric mypkg.metrics:accuracy")
    cwd = os.getcwd()
    if cwd not in sys.path:
        sys.path.append(cwd)
    try:
        target: Any = importlib.import_module(module_name)
    except Exception as exc:  # ImportError, or whatever the module raises while importing
        raise ConfigError(f"metric hook {spec!r} failed to import: {type(exc).__name__}: "
                          f"{exception_line(exc)}",
                          hint="install the module or run from the folder that holds it "
                               "(or add that folder to PYTHONPATH)") from None
    for part in attr.split("."):
        if not hasattr(target, part):
            raise ConfigError(f"metric hook {spec!r}: module '{module_name}' has no '{attr}'",
                              hint="check the function name after the ':'")
        target = getattr(target, part)
    if not callable(target):
        raise ConfigError(f"metric hook {spec!r} is not callable",
                          hint=f"point at a function {HOOK_SIGNATURE}")
    return target


def hook_direction(fn: Callable, name: str) -> bool:
    value = getattr(fn, "higher_is_better", None)
    if not isinstance(value, (bool, np.bool_)):
        raise ConfigError(f"metric hook {name!r} does not declare its direction",
                          hint="set `<function>.higher_is_better = True` (or False) next to it")
    return bool(value)


@dataclass(frozen=True)
class HookScorer:
    """A user function as a metric: `fn(candidate outputs, meta) -> float`."""

    name: str
    fn: Callable[..., Any]
    higher_is_better: bool
    needs_labels: bool = False

    @classmethod
    def from_spec(cls, spec: str) -> HookScorer:
        fn = load_hook(spec)
        return cls(spec, fn, hook_direction(fn, spec))

    @classmethod
    def from_function(cls, fn: Callable[..., Any], name: str | None = None) -> HookScorer:
        """Python API: use a function directly (its `higher_is_better` attribute is required)."""
        name = name or f"{getattr(fn, '__module__', '?')}:{getattr(fn, '__qualname__', repr(fn))}"
        return cls(name, fn, hook_direction(fn, name))

    def score(self, ref: dict[str, np.ndarray], cand: dict[str, np.ndarray],
              meta: EvalMeta) -> float:
        del ref  # hooks judge the candidate on its own (against labels, or absolutely)
        try:
            value = self.fn(cand, meta.as_hook_arg())
        except PtqError:
            raise
        except Exception as exc:
            raise PtqError(f"metric hook '{self.name}' raised {type(exc).__name__}: "
                           f"{exception_line(exc)}",
                           hint=f"fix the hook; it is called as {HOOK_SIGNATURE}") from exc
        return checked_score(self.name, value)


def checked_score(name: str, value: Any) -> float:
    """A metric value as a finite float, or an error naming the metric."""
    try:
        out = float(value)
    except (TypeError, ValueError):
        raise PtqError(f"metric '{name}' returned {type(value).__name__} {value!r}, not a number",
                       hint="return a float") from None
    if not math.isfinite(out):
        raise PtqError(f"metric '{name}' returned {out}",
                       hint="return a finite float (sensitivity.json cannot hold NaN/Inf)")
    return out
