"""`ptq.lint`: check a Q/DQ ONNX against TensorRT's placement rules before any build.

    view.py      the float graph under the Q/DQ pairs, and where each pair sits
    checks.py    the rules (one function each) -> `Finding`
    fix.py       the safe rewrites (remove / reuse a pair, explicit zero point or axis)
    evidence.py  the measured ResNet18 engine figures the findings cite
    run.py       `lint_model`, `fix_model`, `verify_fix`
"""
from __future__ import annotations

from ptq.lint.checks import RULE_NAMES, Finding
from ptq.lint.run import LintResult, fix_model, lint_model, verify_fix

__all__ = ["Finding", "LintResult", "RULE_NAMES", "fix_model", "lint_model", "verify_fix"]
