"""`ptq report` through `ptq.cli.main`: exit codes, output location, one-line errors."""
from __future__ import annotations

import shutil
from pathlib import Path

from ptq.cli import main


def test_default_output_is_next_to_the_ranges(tmp_path: Path, digits_ranges: Path, capsys) -> None:
    ranges = Path(shutil.copy(digits_ranges, tmp_path / "ranges.json"))
    assert main(["report", "--ranges", str(ranges)]) == 0
    out = tmp_path / "report.html"
    assert out.is_file() and out.read_text().startswith("<!DOCTYPE html>")
    assert f"wrote {out}" in capsys.readouterr().out


def test_full_inputs_and_output_folder(tmp_path: Path, digits_ranges: Path, digits_qdq: Path,
                                       digits_sensitivity: dict[str, Path], capsys) -> None:
    code = main(["report", "--ranges", str(digits_ranges), "--sensitivity",
                 str(digits_sensitivity["sensitivity"]), "--model", str(digits_qdq),
                 "-o", str(tmp_path), "-q"])
    assert code == 0
    assert (tmp_path / "report.html").is_file()
    assert capsys.readouterr().out == ""


def test_bad_input_exits_1_with_one_line_and_no_file(tmp_path: Path, reexported_ranges: Path,
                                                     digits_qdq: Path, capsys) -> None:
    out = tmp_path / "report.html"
    code = main(["report", "--ranges", str(reexported_ranges), "--model", str(digits_qdq),
                 "-o", str(out)])
    err = capsys.readouterr().err
    assert code == 1 and not out.exists() and list(tmp_path.iterdir()) == []
    assert err.count("\n") == 1 and err.startswith("ptq report: error: ")
    assert str(digits_qdq) in err and "different models" in err and "(fix: " in err


def test_missing_ranges_flag_is_a_usage_error(capsys) -> None:
    assert main(["report"]) == 2
    assert "--ranges" in capsys.readouterr().err
