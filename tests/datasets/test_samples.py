"""Tests for writing the real photos bundled in scikit-image / scikit-learn to a folder."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import ptq
from ptq.datasets.samples import SAMPLE_PHOTO_NAMES, write_sample_photos

import skimage.data as skimage_data  # the demo extra, part of dev: a missing one must fail
import sklearn.datasets as sklearn_datasets

_GRAYSCALE = {"camera", "coins", "moon", "brick", "grass", "gravel", "page", "text", "clock"}


@pytest.fixture(scope="module")
def written(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    return write_sample_photos(tmp_path_factory.mktemp("photos") / "nested" / "dir")


def test_writes_every_bundled_photo(written: list[Path]) -> None:
    assert [p.stem for p in written] == list(SAMPLE_PHOTO_NAMES)
    assert len(written) == 20
    assert sorted(os.listdir(written[0].parent)) == sorted(p.name for p in written)  # no temp files left


def test_modes_and_formats(written: list[Path]) -> None:
    for path in written:
        is_gray = path.stem.split("_", 1)[1] in _GRAYSCALE
        with Image.open(path) as image:
            assert (image.format, image.mode) == (("PNG", "L") if is_gray else ("JPEG", "RGB")), path.name
            assert path.suffix == (".png" if is_gray else ".jpg")


def test_pixels_match_the_sources(written: list[Path]) -> None:
    by_stem = {p.stem: p for p in written}
    with Image.open(by_stem["skimage_camera"]) as image:  # PNG is lossless
        np.testing.assert_array_equal(np.asarray(image), skimage_data.camera())
    with Image.open(by_stem["skimage_chelsea"]) as image:  # JPEG q95 4:4:4 is close
        diff = np.abs(np.asarray(image, np.int16) - skimage_data.chelsea().astype(np.int16))
        assert diff.mean() < 2.0
    with Image.open(by_stem["skimage_motorcycle_right"]) as image:
        assert np.asarray(image).shape == skimage_data.stereo_motorcycle()[1].shape
    with Image.open(by_stem["sklearn_flower"]) as image:
        assert np.asarray(image).shape == sklearn_datasets.load_sample_images().images[1].shape


def test_rerun_is_byte_identical(written: list[Path]) -> None:
    before = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in written}
    again = write_sample_photos(written[0].parent)
    assert {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in again} == before


@pytest.mark.parametrize(
    ("blocked", "expect"),
    [
        (["skimage"], "sklearn_"),
        (["sklearn"], "skimage_"),
        (["skimage", "sklearn"], "ImportError"),
    ],
)
def test_missing_libraries(tmp_path: Path, blocked: list[str], expect: str) -> None:
    """Run in a fresh process where the libraries cannot be imported, as in a core-only install."""
    code = (
        "import sys\n"
        f"for name in {blocked!r}: sys.modules[name] = None\n"
        "from ptq.datasets.samples import write_sample_photos\n"
        "try:\n"
        f"    paths = write_sample_photos({str(tmp_path)!r})\n"
        "except ImportError as exc:\n"
        "    print('ImportError', exc)\n"
        "else:\n"
        "    print(' '.join(sorted({p.name.split('_')[0] + '_' for p in paths})), len(paths))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(Path(ptq.__file__).resolve().parent.parent)}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(expect)
    if expect == "ImportError":
        assert 'pip install "ptq[demo]"' in done.stdout
    else:
        assert "not installed" in done.stderr  # the skip is logged as a warning
