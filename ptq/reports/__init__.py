"""`ptq.reports`: one self-contained HTML page from ranges.json [+ sensitivity.json]
[+ model.int8.onnx], for reviewing an INT8 model offline.

    load.py      read, validate and cross-check the artifacts
    analysis.py  clipping per tensor, which tensors get a full histogram
    plots.py     matplotlib figures (inline PNG) and SVG sparklines
    summary.py / sections.py / checks.py   the page's sections
    html.py      escaping, tables, CSS, the page shell
    page.py      build_report / write_report
"""
from __future__ import annotations

from ptq.reports.load import ReportInputs, load_inputs
from ptq.reports.page import ReportResult, build_report, write_report

__all__ = ["ReportInputs", "ReportResult", "build_report", "load_inputs", "write_report"]
