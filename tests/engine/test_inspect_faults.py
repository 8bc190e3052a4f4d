"""`ptq inspect` on bad input (issue 8's battery): broken or foreign engine, profile and
compare files built from the real trex MobileNet fixture. Each must end in one line
`ptq inspect: error: <file>: <problem> (fix: <hint>)`, exit 1, and write nothing."""
from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from ptq.cli import main

DATA = Path(__file__).resolve().parents[1] / "data" / "trt"
MOB = DATA / "trex-mobilenet-qat" / "mobilenet.qat.onnx.engine"
RESNET_PROFILE = DATA / "trex-resnet18-a100" / "qat" / "resnet-qat.onnx.engine.profile.json"
ONE_LINE = re.compile(r"^ptq inspect: error: .+: .+ \(fix: .+\)$")


def _graph() -> dict:
    return json.loads(Path(f"{MOB}.graph.json").read_text())


def _profile() -> list:
    return json.loads(Path(f"{MOB}.profile.json").read_text())


def _layers(edit) -> dict:
    g = _graph()
    g["Layers"] = [edit(dict(la)) for la in g["Layers"]]
    return g


BAD_ENGINES = {
    "empty": "",
    "truncated": Path(f"{MOB}.graph.json").read_text()[:5000],
    "nan": '{"Layers": [{"Name": "a", "Inputs": [{"Name": "x", "Dimensions": [NaN]}]}]}',
    "latin-1": b'{"Layers": ["caf\xe9"]}',
    "no-layers": {"Layers": [], "Bindings": []},
    "layers-dict": {"Layers": {"a": 1}},
    "name-null": _layers(lambda la: {**la, "Name": None}),
    "inputs-string": _layers(lambda la: {**la, "Inputs": "abc"}),
    "bindings-string": {**_graph(), "Bindings": "input"},
    "profile-as-engine": _profile(),
}
# Odd but readable fields: kept as text or dropped, never a crash.
ODD_ENGINES = {
    "format-number": _layers(lambda la: {**la, "Inputs": [{"Name": "a", "Format/Datatype": 5,
                                                           "Dimensions": "1x3"}]}),
    "origin-dict-tactic-int": _layers(lambda la: {**la, "Origin": {"a": 1}, "TacticName": 5,
                                                  "LayerType": ["x"]}),
    "io-tensors-null": {**_graph(), "I/O Tensors": None},
    "layers-without-details": {"Layers": [la["Name"] for la in _graph()["Layers"]]},
    "trt11-odd-io": {"Layers": _graph()["Layers"],
                     "I/O Tensors": [{"Name": "input", "DataType": 5, "Dimensions": "abc"}]},
}
BAD_PROFILES = {
    "negative": [_profile()[0]] + [{**r, "averageMs": -1.0} for r in _profile()[1:]],
    "nan": json.dumps([_profile()[0]] + [{**r, "averageMs": float("nan")}
                                         for r in _profile()[1:]]),
    "bool": [_profile()[0]] + [{**r, "averageMs": True} for r in _profile()[1:]],
    "count-only": [_profile()[0]],
    "other-engine": json.loads(RESNET_PROFILE.read_text()),
    "engine-as-profile": _graph(),
}


def _write(path: Path, content) -> Path:
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif isinstance(content, str):
        path.write_text(content)
    else:
        path.write_text(json.dumps(content))
    return path


def _run(capsys, *args) -> tuple[int, str, str]:
    rc = main(["inspect", *map(str, args)])
    out, err = capsys.readouterr()
    return rc, out, err


def _assert_one_line(rc: int, err: str, names: str) -> None:
    lines = err.strip().splitlines()
    assert rc == 1 and len(lines) == 1 and ONE_LINE.match(lines[0]), err
    assert names in lines[0], err


@pytest.mark.parametrize("case", sorted(BAD_ENGINES))
def test_bad_engine_json(tmp_path, capsys, case) -> None:
    src = _write(tmp_path / "bad.graph.json", BAD_ENGINES[case])
    out = tmp_path / "i.json"
    out.write_text("previous")
    rc, _, err = _run(capsys, src, "--json", out, "--svg", tmp_path / "i.svg")
    _assert_one_line(rc, err, "bad.graph.json")
    assert out.read_text() == "previous" and not (tmp_path / "i.svg").exists()


@pytest.mark.parametrize("case", sorted(ODD_ENGINES))
def test_odd_fields_are_read_not_crashed_on(tmp_path, capsys, case) -> None:
    src = _write(tmp_path / "odd.graph.json", ODD_ENGINES[case])
    rc, out, err = _run(capsys, src, "--json", tmp_path / "i.json", "--svg", tmp_path / "i.svg")
    assert rc == 0, err
    data = json.loads((tmp_path / "i.json").read_text())
    assert len(data["layers"]) == len(_graph()["Layers"])


@pytest.mark.parametrize("case", sorted(BAD_PROFILES))
def test_bad_profile(tmp_path, capsys, case) -> None:
    prof = _write(tmp_path / "bad.profile.json", BAD_PROFILES[case])
    rc, _, err = _run(capsys, f"{MOB}.graph.json", "--profile", prof)
    _assert_one_line(rc, err, "bad.profile.json")


def test_onnx_of_another_model_is_refused(digits_model_path, capsys) -> None:
    rc, _, err = _run(capsys, f"{MOB}.graph.json", "--onnx", digits_model_path)
    _assert_one_line(rc, err, digits_model_path.name)
    assert "not the model this engine was built from" in err


def test_all_zero_profile_is_shown_not_crashed_on(tmp_path, capsys) -> None:
    prof = _write(tmp_path / "zero.json",
                  [_profile()[0]] + [{**r, "averageMs": 0.0} for r in _profile()[1:]])
    rc, out, err = _run(capsys, f"{MOB}.graph.json", "--profile", prof, "--json",
                        tmp_path / "i.json")
    assert rc == 0 and "every layer timed 0 ms" in out, err


def test_bad_compare_names_the_compare_file(tmp_path, capsys) -> None:
    bad = _write(tmp_path / "cmp.graph.json", {"Layers": []})
    rc, _, err = _run(capsys, f"{MOB}.graph.json", "--compare", bad)
    _assert_one_line(rc, err, "cmp.graph.json")
    rc, _, err = _run(capsys, f"{MOB}.graph.json", "--compare-profile", f"{MOB}.profile.json")
    _assert_one_line(rc, err, "profile.json")


@pytest.mark.parametrize("dest", ["{t}/afile/i.json", "{t}/adir", "/proc/ptq.json"])
@pytest.mark.parametrize("flag", ["--json", "--svg"])
def test_unwritable_destination(tmp_path, capsys, dest, flag) -> None:
    (tmp_path / "afile").write_text("keep")
    (tmp_path / "adir").mkdir()
    other = "--svg" if flag == "--json" else "--json"
    rc, _, err = _run(capsys, f"{MOB}.graph.json", other, tmp_path / "ok.out", flag,
                      dest.format(t=tmp_path))
    _assert_one_line(rc, err, "error")
    assert not (tmp_path / "ok.out").exists()          # the good output is not written alone


@pytest.mark.parametrize("case", ["json-is-engine", "svg-is-profile", "json-is-svg"])
def test_outputs_never_replace_an_input(tmp_path, capsys, case) -> None:
    eng = _write(tmp_path / "e.json", Path(f"{MOB}.graph.json").read_text())
    prof = _write(tmp_path / "p.json", Path(f"{MOB}.profile.json").read_text())
    before = (eng.read_bytes(), prof.read_bytes())
    args = {"json-is-engine": ["--json", eng], "svg-is-profile": ["--svg", prof],
            "json-is-svg": ["--json", tmp_path / "x", "--svg", tmp_path / "x"]}[case]
    rc, _, err = _run(capsys, eng, "--profile", prof, *args)
    _assert_one_line(rc, err, str(tmp_path))
    assert (eng.read_bytes(), prof.read_bytes()) == before and not (tmp_path / "x").exists()


def test_real_process_truncated_engine(tmp_path) -> None:
    src = _write(tmp_path / "cut.graph.json", BAD_ENGINES["truncated"])
    r = subprocess.run([sys.executable, "-m", "ptq", "inspect", str(src)], capture_output=True,
                       text=True)
    _assert_one_line(r.returncode, r.stderr, "cut.graph.json")
    assert "Traceback" not in r.stderr and r.stdout == ""
