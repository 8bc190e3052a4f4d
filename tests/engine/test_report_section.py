"""`ptq report --engine/--bench`: the engine section on the same self-contained page."""
from __future__ import annotations

import json
import re
from pathlib import Path

from ptq.cli import main

FIX = Path(__file__).resolve().parents[1] / "data" / "trt"
QAT = FIX / "trex-resnet18-a100/qat/resnet-qat.onnx.engine"
FP16 = FIX / "trex-resnet18-a100/fp16/resnet.onnx.engine"


def test_report_with_engine_and_bench(tmp_path: Path, digits_ranges: Path, capsys) -> None:
    logs = sorted((FIX / "trtexec-logs").glob("*.log"))
    bench = tmp_path / "bench.json"
    assert main(["bench", *sum([["--parse", str(p)] for p in logs], []), "--json",
                 str(bench), "-q"]) == 0
    out = tmp_path / "r.html"
    rc = main(["report", "--ranges", str(digits_ranges), "--engine", f"{QAT}.graph.json",
               "--engine-profile", f"{QAT}.profile.json", "--engine-compare",
               f"{FP16}.graph.json", "--engine-compare-profile", f"{FP16}.profile.json",
               "--bench", str(bench), "-o", str(out)])
    assert rc == 0
    html = out.read_text()
    section = html[html.index('<section id="engine">'):]
    section = section[:section.index("</section>")]
    layers = json.loads(Path(f"{QAT}.graph.json").read_text())["Layers"]
    n_reformat = sum(la["LayerType"] == "Reformat" for la in layers)
    assert f"Reformat layers: <b>{n_reformat}</b>" in section
    assert section.count("<g><title>") == sum(la["LayerType"] != "NoOp" for la in layers)
    assert "166" in section and "321.4" in section          # the logs' Throughput values
    assert re.search(r"<img src=\"data:image/png;base64,", section)
    assert "http://" not in section.replace("http://www.w3.org/2000/svg", "")  # offline page


def test_report_rejects_a_bad_bench_file(tmp_path: Path, digits_ranges: Path, capsys) -> None:
    bad = tmp_path / "b.json"
    bad.write_text('{"x": 1}')
    out = tmp_path / "r.html"
    assert main(["report", "--ranges", str(digits_ranges), "--bench", str(bad), "-o",
                 str(out)]) == 1
    assert "not a `ptq bench --json` file" in capsys.readouterr().err and not out.exists()
