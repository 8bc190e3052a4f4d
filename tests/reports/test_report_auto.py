"""The report explains what `auto` chose for each tensor, from the choices in ranges.json."""
from __future__ import annotations

import re
from pathlib import Path

from ptq.reports import write_report
from ptq.table import CalibrationTable


def test_every_auto_choice_is_shown_with_its_reason(digits_ranges: Path, tmp_path: Path) -> None:
    table = CalibrationTable.load(digits_ranges)  # digits CNN, every algorithm incl. auto
    assert all(t.choice and t.choice["relative_error"][t.choice["method"]] == 1.0
               for t in table.tensors.values())
    html = write_report(tmp_path / "r.html", digits_ranges).path.read_text()
    assert "What <code>auto</code> chose, and why" in html
    section = html.split("What <code>auto</code> chose, and why")[1].split("</details>")[0]
    rows = re.findall(r"<tr>(.*?)</tr>", section, re.S)[1:]   # skip the header row
    assert len(rows) == len(table.tensors)
    for row, (name, t) in zip(rows, table.tensors.items()):
        assert name in row and f">{t.choice['method']}<" in row
