"""The report in a real headless Chromium (Debian `chromium`); see browser_harness.py for how.

Skipped only when /usr/bin/chromium is missing (CI: `apt-get install -y chromium`). The
negative controls push a deliberately broken page through the same checks.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import browser_harness as browser
from html_outline import outline

pytestmark = [pytest.mark.browser,
              pytest.mark.skipif(not browser.available(), reason="needs /usr/bin/chromium")]

BROKEN = """<!DOCTYPE html><html><head><title>broken</title></head><body>
<p>text</p><img alt="bad" src="data:image/png;base64,AAAA">
<script>undefined_function();</script></body></html>"""


def _sort_key(value: str) -> tuple:
    """How the page's script orders cells: numbers (the whole cell) by value, before text,
    text case-insensitively."""
    try:
        return (0, float(value), "") if value.strip() else (1, 0.0, "")
    except ValueError:
        return (1, 0.0, value.lower())


def _is_sorted(values: list[str], descending: bool) -> bool:
    keys = [_sort_key(v) for v in values]
    pairs = zip(keys, keys[1:])
    return all(b <= a for a, b in pairs) if descending else all(a <= b for a, b in pairs)


def _check_page(page: Path, tmp: Path) -> browser.Probe:
    assert browser.console_messages(page, tmp) == []
    probe = browser.probe(page, tmp)
    assert probe.errors == []
    assert probe.resources == []                     # nothing fetched: everything is inline
    n_img = len(outline(page.read_text(encoding="utf-8")).images)
    assert len(probe.images) == n_img > 0
    assert all(i["complete"] and i["w"] > 0 and i["h"] > 0 and i["shown"] > 0 for i in probe.images)
    assert probe.svgs and min(probe.svgs) > 0        # sparklines laid out once <details> open
    assert probe.scroll_width <= probe.inner_width == 1366   # no sideways scrolling at 1366 px
    assert probe.overflowing == []                   # every table fits the laptop-width page
    assert probe.sections == ["summary", "ranges", "histograms", "sensitivity", "warnings"]
    for table in probe.sorts:                        # every column, clicked twice
        for i, click in enumerate(table["clicks"]):
            assert click["cls"] == ("asc", "desc")[i % 2]
            assert _is_sorted(click["values"], click["cls"] == "desc"), table["heads"][click["col"]]
        assert any(len(set(c["values"])) > 1 for c in table["clicks"])
    shot = browser.screenshot(page, tmp)
    pixels = np.asarray(Image.open(shot).convert("L"), dtype=np.float64)
    assert pixels.shape == (900, 1366)
    assert pixels.std() > 20 and (pixels < 200).mean() > 0.02   # text and plots, not blank
    return probe


def test_full_report_in_chromium(digits_full_report: Path, tmp_path: Path) -> None:
    probe = _check_page(digits_full_report, tmp_path)
    heads = [t["heads"][0] for t in probe.sorts]
    assert "rank" in heads and "tensor" in heads      # sensitivity and tensor tables sort


def test_ranges_only_report_in_chromium(digits_ranges_report: Path, tmp_path: Path) -> None:
    _check_page(digits_ranges_report, tmp_path)


@pytest.mark.slow
def test_efficientnet_report_in_chromium(effnet_ranges: Path, tmp_path: Path) -> None:
    from ptq.reports import write_report

    page = write_report(tmp_path / "report.html", effnet_ranges).path
    probe = _check_page(page, tmp_path)
    assert len(probe.svgs) == 95


def test_negative_control_broken_page_is_caught(tmp_path: Path) -> None:
    page = tmp_path / "broken.html"
    page.write_text(BROKEN)
    assert any("undefined_function" in m for m in browser.console_messages(page, tmp_path))
    probe = browser.probe(page, tmp_path)
    assert any("undefined_function" in e for e in probe.errors)
    assert any(e.startswith("resource failed: IMG") for e in probe.errors)
    assert [i["w"] for i in probe.images] == [0]


def test_negative_control_blank_screenshot_is_caught(tmp_path: Path) -> None:
    page = tmp_path / "blank.html"
    page.write_text("<!DOCTYPE html><html><head></head><body></body></html>")
    pixels = np.asarray(Image.open(browser.screenshot(page, tmp_path)).convert("L"), np.float64)
    assert pixels.std() < 1
