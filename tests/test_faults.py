"""The fault battery (issue 8): real `python -m ptq` processes, real signals, a real full disk.

Every case here failed on the code before the fix: lost or mixed outputs after Ctrl-C, SIGKILL
or ENOSPC; internal errors (exit 3) on bad input; wrong results. Processes are started side by
side where they are independent (the cases are many and each process pays the imports).

Signals land at exact points of the write phase through ptq's one test hook, PTQ_TEST_PAUSE
(ptq/atomic.py): the writer prints `ptq-test: paused at <step>` and waits there for a signal.
A full disk is a small tmpfs mounted on a temp folder: directly as root, else inside an
unprivileged user+mount namespace (`unshare -Urm`); where neither is allowed that test skips
and says why (RLIMIT_FSIZE would give EFBIG, not ENOSPC, so it is no substitute).
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import struct
import subprocess
import sys
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ptq.cache import read_cache
from ptq.table import CalibrationTable

RAW = ["--preset", "raw", "--mean", "0", "--std", "255"]
OLD = ["--algo", "all", "--max-images", "20", "--num-bins", "128"]  # small ranges.json, 4 caches
NEW = ["--algo", "entropy", "minmax", "--max-images", "30"]          # other ranges, 2 caches
TIMEOUT = 120  # seconds per process: generous for 2 busy cores; a hang fails instead of blocking


@dataclass
class Done:
    rc: int
    out: str
    err: str


def start(*argv, pause: str | None = None, cwd: Path | None = None) -> subprocess.Popen:
    """`python -m ptq ARGV` with this interpreter and the inherited PYTHONPATH; stdout strict
    UTF-8 as in a UTF-8 locale (the C locale would let Python escape any bytes)."""
    env = {k: v for k, v in os.environ.items() if k != "PTQ_TEST_PAUSE"}
    env["PYTHONIOENCODING"] = "utf-8:strict"
    if pause:
        env["PTQ_TEST_PAUSE"] = pause
    cmd = [sys.executable, "-m", "ptq", *(os.fsdecode(a) if isinstance(a, bytes) else str(a)
                                          for a in argv)]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, cwd=cwd,
                            text=True, errors="replace")


def finish(proc: subprocess.Popen) -> Done:
    out, err = proc.communicate(timeout=TIMEOUT)
    return Done(proc.returncode, out, err)


def ptq(*argv, **kw) -> Done:
    return finish(start(*argv, **kw))


def ptq_all(*argvs: list) -> list[Done]:
    """Independent runs, started together."""
    return [finish(p) for p in [start(*a) for a in argvs]]


def wait_paused(proc: subprocess.Popen) -> None:
    line = proc.stderr.readline()
    while line and not line.startswith("ptq-test: paused at"):
        line = proc.stderr.readline()
    assert line, f"never reached the pause point (exit {proc.wait()})"


def snapshot(folder: Path) -> dict[str, bytes]:
    """The calibrate set in `folder` (ranges.json, calib.*.cache) by content."""
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file() and (
            p.name == "ranges.json" or (p.name.startswith("calib.") and p.name.endswith(".cache")))}


def one_line_error(done: Done, command: str) -> str:
    """The error line of a clean user error (exit 1): the last stderr line, after at most
    ptq's own one-line warnings; fails on tracebacks, raw Python warnings and exit 3."""
    lines = done.err.strip().splitlines()
    assert done.rc == 1 and lines and all(line.startswith("ptq") for line in lines), done.err
    assert lines[-1].startswith(f"ptq {command}: error: "), done.err
    assert sum(": error: " in line for line in lines) == 1, done.err
    return lines[-1]


@pytest.fixture(scope="module")
def images(tmp_path_factory, digits_calib_images: Path) -> Path:
    """40 digits PNGs (4 per class), copied: tests may add files next to them."""
    root = tmp_path_factory.mktemp("fault_images")
    for label in range(10):
        (root / str(label)).mkdir()
        for src in sorted((digits_calib_images / str(label)).glob("*.png"))[:4]:
            shutil.copy(src, root / str(label) / src.name)
    return root


@pytest.fixture(scope="module")
def sets(tmp_path_factory, digits_model_path: Path, images: Path) -> dict[str, Path]:
    """An old set and a new set of calibrate outputs from clean runs, to compare against."""
    root = tmp_path_factory.mktemp("sets")
    old, new = ptq_all(["calibrate", digits_model_path, "--data", images, *RAW, *OLD, "-o", root / "old", "-q"],
                       ["calibrate", digits_model_path, "--data", images, *RAW, *NEW, "-o", root / "new", "-q"])
    assert old.rc == 0 and new.rc == 0, old.err + new.err
    return {"old": root / "old", "new": root / "new"}


# --- output sets: whole old or whole new, whatever interrupts the write ------------------------

# (signal, where it lands, which set the folder must hold once a ptq reader has opened it)
SIGNAL_CASES = [
    (signal.SIGINT, "write:calib.entropy.cache", "old"),  # Ctrl-C while staging: nothing replaced
    (signal.SIGKILL, "write:calib.entropy.cache", "old"),  # SIGKILL while staging: junk is cleaned
    (signal.SIGINT, "commit", "new"),                      # after the commit Ctrl-C is held back
    (signal.SIGTERM, "commit", "new"),
    (signal.SIGKILL, "commit", "new"),                     # committed: the next reader rolls forward
    (signal.SIGINT, "replace:calib.entropy.cache", "new"),
    (signal.SIGKILL, "replace:calib.entropy.cache", "new"),  # killed between two renames
]


def test_calibrate_outputs_are_replaced_as_one_set_under_signals(
        tmp_path: Path, digits_model_path: Path, images: Path, sets: dict[str, Path]) -> None:
    want = {k: snapshot(v) for k, v in sets.items()}
    assert want["old"].keys() != want["new"].keys()  # the new set also drops two old caches
    runs = []
    for i, (sig, step, _) in enumerate(SIGNAL_CASES):
        out = tmp_path / f"case{i}"
        shutil.copytree(sets["old"], out)
        # junk of killed runs of older ptq versions (per-file temps): every run clears it first
        (out / ".ranges.json.k1ll3d00.tmp").write_text("{")
        (out / ".calib.minmax.cache.abcd_123.tmp").write_text("TRT-")
        runs.append((out, start("calibrate", digits_model_path, "--data", images, *RAW, *NEW, "-o", out,
                                "-q", pause=step)))
    for (sig, step, _), (out, proc) in zip(SIGNAL_CASES, runs):
        wait_paused(proc)
        proc.send_signal(sig)
    for (sig, step, expected), (out, proc) in zip(SIGNAL_CASES, runs):
        rc = proc.wait(TIMEOUT)
        case = f"{sig.name} at {step}"
        assert rc == {signal.SIGINT: 130}.get(sig, -sig), case
        CalibrationTable.load(out / "ranges.json")  # what quantize/report/sensitivity read first
        assert snapshot(out) == want[expected], case
        assert sorted(p.name for p in out.iterdir()) == sorted(want[expected]), case  # no junk


def test_quantize_measures_before_writing_and_keeps_the_good_model(
        tmp_path: Path, digits_model_path: Path, sets: dict[str, Path]) -> None:
    """A failed run never replaces the previous model and its .trtexec.txt (they were written
    before --eval ran); a signal during the write leaves one whole pair."""
    model = tmp_path / "q" / "m.int8.onnx"
    txt = model.with_suffix(".trtexec.txt")
    good = ptq("quantize", digits_model_path, "--ranges", sets["old"] / "ranges.json", "--algo", "entropy", "-o", model)
    assert good.rc == 0, good.err
    before = (model.read_bytes(), txt.read_bytes())
    nan = tmp_path / "nan.npz"
    np.savez(nan, image=np.full((8, 3, 16, 16), np.nan, np.float32))
    short = tmp_path / "short.npz"
    np.savez(short, image=np.zeros((8, 3, 16, 16), np.float32), labels=np.arange(5))
    new = ["quantize", digits_model_path, "--ranges", sets["new"] / "ranges.json", "--algo", "entropy", "-o", model]
    bad_nan, bad_labels = ptq_all([*new, "--eval", nan], [*new, "--eval", short])
    assert "non-finite scores" in one_line_error(bad_nan, "quantize")  # was: exit 0, `cosine nan`
    assert "'labels' has 5 entries but the data has 8" in one_line_error(bad_labels, "quantize")
    assert (model.read_bytes(), txt.read_bytes()) == before
    for sig, step, replaced in [(signal.SIGKILL, "write:m.int8.onnx", False),
                                (signal.SIGINT, "replace:m.int8.onnx", True)]:
        proc = start(*new, "--no-eval", pause=step)
        wait_paused(proc)
        proc.send_signal(sig)
        proc.wait(TIMEOUT)
        pair = (model.read_bytes(), txt.read_bytes())
        assert (pair != before) == replaced and b"TensorRT" in pair[1], f"{sig.name} at {step}"
    # the second run also cleared the staging folder the SIGKILLed one left
    assert sorted(p.name for p in model.parent.iterdir()) == [model.name, txt.name]


# --- a full disk: ENOSPC on a small tmpfs --------------------------------------------------------

@pytest.fixture
def small_disk(tmp_path: Path):
    """A 2 MiB tmpfs; yields (folder, fill) where fill(n) leaves n bytes free.

    As root it is mounted on a temp folder. Otherwise it is mounted inside a user+mount
    namespace (`unshare -Urm`, no privileges needed where the kernel allows it) by a process
    that then sleeps, and reached from here through /proc/<its pid>/root/<folder>."""
    mnt = tmp_path / "disk"
    mnt.mkdir()
    mount = ["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mnt)]
    holder = None
    if os.geteuid() == 0 and subprocess.run(mount, capture_output=True).returncode == 0:
        path = mnt
    elif shutil.which("unshare"):
        holder = subprocess.Popen(["unshare", "-Urm", "sh", "-c", f"{' '.join(mount)} && echo ok "
                                   "&& exec sleep 600"], stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True)
        if holder.stdout.readline().strip() != "ok":
            holder.kill()
            pytest.skip("no tmpfs for a real ENOSPC: not root, and `unshare -Urm` cannot mount "
                        f"({holder.communicate()[1].strip()})")
        path = Path(f"/proc/{holder.pid}/root") / mnt.relative_to("/")
    else:
        pytest.skip("no tmpfs for a real ENOSPC: not root and no `unshare` to mount one")

    def fill(free: int) -> None:
        st = os.statvfs(path)
        (path / "filler").write_bytes(b"\0" * (st.f_bavail * st.f_frsize - free))
        assert os.statvfs(path).f_bavail * st.f_frsize == free

    try:
        yield path, fill
    finally:
        if holder is None:
            subprocess.run(["umount", "-l", str(mnt)], check=False)
        else:
            holder.kill()
            holder.wait()


def _pages(n: int) -> int:
    return -(-n // 4096) * 4096


def test_full_disk_is_a_clean_error_and_keeps_the_old_set(
        small_disk, digits_model_path: Path, images: Path, sets: dict[str, Path]) -> None:
    mnt, fill = small_disk
    out = mnt / "out"
    shutil.copytree(sets["old"], out)
    old, new = snapshot(sets["old"]), snapshot(sets["new"])
    # room for the new ranges.json once the old one is gone, not for the whole new set:
    # file-by-file replacement used to leave the new ranges.json beside the old caches here
    fill(_pages(len(new["ranges.json"])) - _pages(len(old["ranges.json"])) + 4096)
    cal = ptq("calibrate", digits_model_path, "--data", images, *RAW, *NEW, "-o", out, "-q")
    assert "No space left on device" in one_line_error(cal, "calibrate")
    assert snapshot(out) == old and sorted(p.name for p in out.iterdir()) == sorted(old)
    # quantize to a fresh path: room for the model, not for the model and its .trtexec.txt
    (mnt / "filler").unlink()
    probe = ptq("quantize", digits_model_path, "--ranges", sets["new"] / "ranges.json", "--algo", "entropy",
                "-o", mnt / "probe" / "m.onnx", "--no-eval", "-q")
    assert probe.rc == 0, probe.err
    size = (mnt / "probe" / "m.onnx").stat().st_size
    shutil.rmtree(mnt / "probe")
    fill(_pages(size))
    q = ptq("quantize", digits_model_path, "--ranges", sets["new"] / "ranges.json", "--algo", "entropy",
            "-o", mnt / "q" / "m.onnx", "--no-eval", "-q")
    assert "No space left on device" in one_line_error(q, "quantize")
    assert not (mnt / "q").exists() or list((mnt / "q").iterdir()) == []


# --- unwritable output: found before the calibration pass ---------------------------------------

@pytest.fixture
def readonly_dir(tmp_path: Path):
    """A folder this process cannot write: a read-only tmpfs for root (root ignores mode bits)."""
    ro = tmp_path / "ro"
    ro.mkdir()
    if os.geteuid() == 0:
        res = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=64k", "tmpfs", str(ro)],
                             capture_output=True, text=True)
        if res.returncode != 0:
            pytest.skip(f"root cannot be kept out of a folder without a read-only mount: {res.stderr}")
        yield ro
        subprocess.run(["umount", "-l", str(ro)], check=False)
    else:
        ro.chmod(0o555)
        yield ro
        ro.chmod(0o755)


def test_unwritable_output_fails_before_the_pass(tmp_path: Path, readonly_dir: Path,
                                                 digits_model_path: Path, sets: dict[str, Path]) -> None:
    """--data names nothing: an error about the output proves the check ran first."""
    (tmp_path / "afile").write_text("x")
    missing = tmp_path / "no-such-images"
    runs = ptq_all(
        ["calibrate", digits_model_path, "--data", missing, *RAW, "-o", readonly_dir / "out"],
        ["calibrate", digits_model_path, "--data", missing, *RAW, "-o", tmp_path / "afile" / "out"],
        ["quantize", digits_model_path, "--ranges", sets["new"] / "ranges.json", "--algo", "entropy",
         "-o", readonly_dir / "m.onnx", "--no-eval"],
        ["quantize", digits_model_path, "--ranges", sets["new"] / "ranges.json", "--algo", "entropy",
         "-o", tmp_path, "--no-eval"])  # -o names a folder
    for done, command in zip(runs, ["calibrate", "calibrate", "quantize", "quantize"]):
        line = one_line_error(done, command)
        assert any(why in line for why in ("cannot write output", "under an existing file",
                                           "is a folder, not a file")), line
    assert list(readonly_dir.iterdir()) == []


# --- wrong results ------------------------------------------------------------------------------

def test_sixteen_bit_png_is_scaled_not_clipped(tmp_path: Path) -> None:
    """A 16-bit grey PNG (Pillow mode I;16) reads as value * 255/65535, like its 8-bit twin;
    convert("RGB") used to clip it to 255 (89% white on a photo)."""
    from ptq.datasets.images import ImageFolder
    from ptq.datasets.preprocess import Preprocess

    ramp = np.linspace(0, 65535, 32 * 32).reshape(32, 32).astype(np.uint16)
    Image.fromarray(ramp).save(tmp_path / "a16.png")
    Image.fromarray(np.rint(ramp / 257.0).astype(np.uint8)).save(tmp_path / "b8.png")
    assert Image.open(tmp_path / "a16.png").mode == "I;16"
    for size in (32, 24):  # as is, and through the bilinear resize
        pre = Preprocess(size=(size, size), resize=None, mean=(0.0,) * 3, std=(1.0,) * 3)
        (_, x16), (_, x8) = ImageFolder(tmp_path, "x", pre, strict=True).samples()
        assert x16.shape == x8.shape == (3, size, size)
        assert x16.max() <= 255.0 and x16.mean() == pytest.approx(127.5, abs=0.5)
        # the 8-bit twin is rounded to whole levels (0.5 off at most), and Pillow's 8-bit
        # resize rounds its output to whole levels again (another 0.5); 16-bit stays in float
        np.testing.assert_allclose(x16, x8, atol=(0.5 if size == 32 else 1.0) + 1e-3)


def test_trt_version_is_validated_and_written_as_tensorrt_does(
        tmp_path: Path, digits_model_path: Path, images: Path, sets: dict[str, Path]) -> None:
    """Garbage fails up front; what is written reads back (TENSORRT.md §1.3: 8.x -> M*1000+m*100+p,
    10.x -> M*10000+m*100+p; the build number of 8.6.1.6 is not part of it)."""
    from ptq.cache import parse_cache, render_cache, version_int
    from ptq.errors import ConfigError

    cal = ["calibrate", digits_model_path, "--data", images, *RAW, "--max-images", "10", "-q"]
    bad_cal, bad_q, good = ptq_all(
        [*cal, "--trt-version=-3", "-o", tmp_path / "bad"],
        ["quantize", digits_model_path, "--ranges", sets["new"] / "ranges.json", "--algo", "entropy",
         "--trt-version", "garbage", "-o", tmp_path / "bad" / "m.onnx", "--no-eval"],
        [*cal, "--trt-version", "8.6.1.6", "-o", tmp_path / "good"])
    assert "bad TensorRT version '-3'" in one_line_error(bad_cal, "calibrate")  # was TRT--3000-
    assert "bad --trt-version 'garbage'" in one_line_error(bad_q, "quantize")
    assert not (tmp_path / "bad").exists()
    assert good.rc == 0, good.err
    assert read_cache(tmp_path / "good" / "calib.auto.cache").version == 8 * 1000 + 6 * 100 + 1
    expected = {"10.3": 10 * 10000 + 3 * 100, "100300": 100300, "8.6": 8600, "11": 110000}
    for version, header in expected.items():
        assert parse_cache(render_cache({"t": 1.0}, trt_version=version)).version == header
    for version in ("-3", "8.12", "0", "1e3", "10.3.0.1.2", "999999999"):  # 8.12 would read as 9.2
        with pytest.raises(ConfigError):
            version_int(version)


# --- internal errors that are user errors --------------------------------------------------------

def _png_header_only(path: Path, width: int, height: int) -> None:
    """A PNG that declares width x height pixels (1-bit grey) with almost no data: Pillow
    checks the declared size against its decompression-bomb limit when it opens the file."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr)
                     + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b""))


def test_bad_input_is_a_one_line_exit_1_error(tmp_path: Path, digits_model_path: Path, images: Path,
                                              sets: dict[str, Path]) -> None:
    bomb = tmp_path / "bomb"
    shutil.copytree(images / "1", bomb / "1")
    _png_header_only(bomb / "1" / "huge.png", 20_000, 20_000)      # 400 MP: over 2x the limit
    _png_header_only(bomb / "1" / "large.png", 10_000, 10_000)     # 100 MP: Pillow only warns
    y = np.zeros((8, 3, 16, 16), np.float32)
    np.savez(tmp_path / "l2d.npz", image=y, labels=np.zeros((8, 10)))
    nan_ranges = json.loads((sets["new"] / "ranges.json").read_text())
    nan_ranges["tensors"][0]["min"] = float("nan")
    (tmp_path / "nan.json").write_text(json.dumps(nan_ranges))
    cal = ["calibrate", digits_model_path, *RAW, "-q"]
    skip, strict, bins, labels, report = ptq_all(
        [*cal, "--data", bomb, "-o", tmp_path / "o1"],
        [*cal, "--data", bomb, "--strict", "-o", tmp_path / "o2"],
        [*cal, "--data", images, "--num-bins", "100000000", "-o", tmp_path / "o3"],
        ["sensitivity", digits_model_path, "--ranges", sets["new"] / "ranges.json",
         "--data", tmp_path / "l2d.npz", "--labels", "-o", tmp_path / "o4", "-q"],
        ["report", "--ranges", tmp_path / "nan.json", "-o", tmp_path / "r.html"])
    assert skip.rc == 0, skip.err
    skipped = {s["file"]: s["reason"] for s in
               CalibrationTable.load(tmp_path / "o1" / "ranges.json").data["skipped"]}
    assert "decompression-bomb" in skipped["1/huge.png"]
    assert set(skipped) == {"1/huge.png", "1/large.png"}
    # every stderr line is ptq's own: Python's two-line warning format is gone
    assert all(line.startswith("ptq") for line in skip.err.splitlines()), skip.err
    assert "DecompressionBombWarning" in skip.err
    assert "decompression-bomb" in one_line_error(strict, "calibrate")
    assert "--num-bins must be in 128..65536" in one_line_error(bins, "calibrate")
    assert "top1-acc need one integer class per sample, but the labels have shape (8, 10)" \
        in one_line_error(labels, "sensitivity")
    assert "invalid min/max nan" in one_line_error(report, "report")
    assert not any((tmp_path / o).exists() for o in ("o2", "o3", "o4", "r.html"))


def test_non_utf8_file_names_are_recorded_and_printed(tmp_path: Path, digits_model_path: Path,
                                                      images: Path) -> None:
    """A file name that is not UTF-8 (Latin-1 'café') in the data, the model and the output paths."""
    root = Path(os.fsdecode(bytes(tmp_path) + b"/d\xe9"))
    shutil.copytree(images, root / "imgs")
    shutil.copy(images / "0" / sorted(os.listdir(images / "0"))[0],
                Path(os.fsdecode(bytes(root) + b"/imgs/0/caf\xe9.png")))
    (Path(os.fsdecode(bytes(root) + b"/imgs/0/broken\xe9.png"))).write_text("not an image")
    model = Path(os.fsdecode(bytes(root) + b"/m\xe9.onnx"))
    shutil.copy(digits_model_path, model)
    cal = ptq("calibrate", model, "--data", root / "imgs", *RAW, "-o", root / "out", "-q")
    assert cal.rc == 0, cal.err
    sens, quant = ptq_all(
        ["sensitivity", model, "--ranges", root / "out" / "ranges.json", "--data", root / "imgs",
         *RAW, "--topk", "2", "-o", root / "s", "-q"],
        ["quantize", model, "--ranges", root / "out" / "ranges.json", "-o", root / "q.onnx"])
    assert sens.rc == 0 and quant.rc == 0, sens.err + quant.err
    report = ptq("report", "--ranges", root / "out" / "ranges.json", "--sensitivity",
                 root / "s" / "sensitivity.json", "--model", root / "q.onnx", "-o", root / "r.html")
    assert report.rc == 0, report.err
    ranges = json.loads((root / "out" / "ranges.json").read_bytes().decode("utf-8"))
    assert "0/caf\\xe9.png" in ranges["data"]["files"]
    assert ranges["data"]["skipped"][0]["file"] == "0/broken\\xe9.png"
    # paths that ptq reopens later (the model, the data folder) keep their exact bytes as
    # JSON \\udcXX escapes (ASCII, so valid UTF-8); sample names are shown with \\xNN
    sensitivity = (root / "s" / "sensitivity.json").read_bytes().decode("utf-8")
    assert json.dumps(str(root / "imgs")) in sensitivity
    # the trtexec lines name the model by its real bytes, so they work in a shell
    assert b"/m\xe9.onnx" in (root / "q.trtexec.txt").read_bytes()


# --- memory: the image loader streams -----------------------------------------------------------

def test_image_loader_decodes_a_bounded_number_ahead(tmp_path: Path) -> None:
    """300 images of 224x224 float32 (0.6 MB each) behind a consumer that stalls on the first:
    Executor.map decoded and held them all (~180 MB); the loader keeps at most LOOKAHEAD."""
    import time
    import tracemalloc

    from ptq.datasets import images
    from ptq.datasets.images import ImageFolder

    lookahead = getattr(images, "LOOKAHEAD", 32)  # (getattr: so the test runs on old code too)
    from ptq.datasets.preprocess import Preprocess

    rng = np.random.default_rng(0)
    for i in range(300):
        Image.fromarray(rng.integers(0, 255, (32, 32, 3), np.uint8)).save(tmp_path / f"{i:03d}.png")
    pre = Preprocess(size=(224, 224), resize=None, mean=(0.0,) * 3, std=(1.0,) * 3)
    folder = ImageFolder(tmp_path, "x", pre)
    tracemalloc.start()
    try:
        for i, (_, x) in enumerate(folder.samples()):
            if i == 0:
                time.sleep(1.0)  # the workers run ahead while the consumer is busy
            del x
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    per_image = 224 * 224 * 3 * 4
    # LOOKAHEAD results + 2 being decoded + resize temporaries; far below 300 images' worth
    assert peak < (lookahead + 20) * per_image < 300 * per_image / 3, peak / per_image


# --- tidying never touches a live run ------------------------------------------------------------

def test_leftovers_of_live_runs_are_kept_and_of_dead_runs_removed(tmp_path: Path) -> None:
    """What a killed run left is deleted, what a running one is writing is not: liveness is the
    flock the writer holds (flock locks of two open files conflict even in one process)."""
    import fcntl

    from ptq.atomic import finish_interrupted, replace_set

    def staged(name: str, locked: bool) -> tuple[Path, int | None]:
        stage = tmp_path / f".ptq-set-{name}.tmp"
        stage.mkdir()
        (stage / "ranges.json").write_text("{}")
        fd = os.open(stage / ".lock", os.O_CREAT | os.O_RDWR)
        if locked:
            fcntl.flock(fd, fcntl.LOCK_EX)
            return stage, fd
        os.close(fd)
        return stage, None

    live, fd = staged("live", locked=True)
    dead, _ = staged("dead", locked=False)
    temp = tmp_path / ".ranges.json.abcd1234.tmp"
    temp.write_text("{")
    held = os.open(temp, os.O_RDONLY)
    fcntl.flock(held, fcntl.LOCK_EX)
    replace_set(tmp_path, {"ranges.json": b"{}\n"})
    assert live.exists() and temp.exists() and not dead.exists()
    os.close(fd)
    os.close(held)
    finish_interrupted(tmp_path, owned=lambda n: n == "ranges.json")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ranges.json"]
