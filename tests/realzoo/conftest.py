"""Real third-party models (PaddleOCR via rapidocr-onnxruntime's wheel) and real photos.

The models are located with importlib.util.find_spec, without importing the package (its
__init__ imports OpenCV): `pip install --no-deps rapidocr-onnxruntime==1.4.4` is enough.
"""
from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ocr_helpers import RAPIDOCR


@pytest.fixture(scope="session")
def rapidocr_models() -> dict[str, Path]:
    spec = importlib.util.find_spec("rapidocr_onnxruntime")
    if spec is None or spec.origin is None:
        pytest.skip(f"needs the PaddleOCR models: pip install --no-deps {RAPIDOCR}")
    folder = Path(spec.origin).parent / "models"
    models = {"det": folder / "ch_PP-OCRv4_det_infer.onnx", "rec": folder / "ch_PP-OCRv4_rec_infer.onnx",
              "cls": folder / "ch_ppocr_mobile_v2.0_cls_infer.onnx"}
    missing = [str(p) for p in models.values() if not p.is_file()]
    if missing:
        pytest.skip(f"rapidocr models missing: {missing}")
    return models


@pytest.fixture(scope="session")
def text_photos(tmp_path_factory) -> Path:
    """skimage's scanned page and text photo (text to detect) and two photos without much."""
    from skimage import data

    folder = tmp_path_factory.mktemp("text_photos")
    for name in ("page", "text", "coffee", "rocket"):
        Image.fromarray(getattr(data, name)()).save(folder / f"{name}.png")
    return folder


@pytest.fixture(scope="session")
def text_lines(tmp_path_factory) -> Path:
    """Single text lines cut from skimage's page and text photos (recognizer/classifier inputs)."""
    from skimage import data

    folder = tmp_path_factory.mktemp("text_lines")
    page, text = data.page(), data.text()
    crops = {"page0": page[0:60, 0:300], "page1": page[60:110, 0:380],
             "page2": page[110:160, 0:380], "text0": text[0:80, 0:440], "text1": text[80:172, 0:440],
             "text1_flipped": np.ascontiguousarray(text[80:172, 0:440][::-1, ::-1])}
    for name, arr in crops.items():
        Image.fromarray(arr).save(folder / f"{name}.png")
    return folder
