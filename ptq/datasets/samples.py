"""Real sample photos for the demo, taken from images bundled inside scikit-image and scikit-learn.

Role: ``ptq demo`` and the tests need real images, and nothing can be downloaded from a dataset
site. ``write_sample_photos`` writes the ~20 photos that ship inside those two wheels into a
folder, so the folder-of-images calibration path is exercised on real content. Only images
stored in the wheels are used (``skimage.data`` fetches the others with pooch at run time).

Colour photos are written as JPEG and grayscale ones as PNG, kept grayscale on disk; the image
loader converts to RGB. This is enough for calibration smoke runs and agreement metrics, not an
accuracy benchmark (no labels).
"""

from __future__ import annotations

import io
import logging
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image

from ptq.atomic import write_bytes

__all__ = ["SAMPLE_PHOTO_NAMES", "SKIMAGE_PHOTOS", "SKLEARN_PHOTOS", "write_sample_photos"]

logger = logging.getLogger(__name__)

_DEMO_HINT = 'pip install "ptq[demo]"'

# Images bundled in the scikit-image wheel; name -> how to get it from ``skimage.data``.
SKIMAGE_PHOTOS: tuple[str, ...] = (
    "astronaut", "chelsea", "coffee", "rocket", "motorcycle_left", "motorcycle_right",
    "hubble_deep_field", "retina", "immunohistochemistry",
    "camera", "coins", "moon", "brick", "grass", "gravel", "page", "text", "clock",
)
# ``sklearn.datasets.load_sample_images()`` holds these, in this order.
SKLEARN_PHOTOS: tuple[str, ...] = ("china", "flower")

# File stems written by ``write_sample_photos`` (the extension depends on the colour mode).
SAMPLE_PHOTO_NAMES: tuple[str, ...] = tuple(
    [f"skimage_{n}" for n in SKIMAGE_PHOTOS] + [f"sklearn_{n}" for n in SKLEARN_PHOTOS]
)


def _skimage_loaders() -> dict[str, Callable[[], np.ndarray]]:
    import skimage.data

    loaders: dict[str, Callable[[], np.ndarray]] = {
        name: getattr(skimage.data, name) for name in SKIMAGE_PHOTOS if not name.startswith("motorcycle")
    }
    loaders["motorcycle_left"] = lambda: skimage.data.stereo_motorcycle()[0]
    loaders["motorcycle_right"] = lambda: skimage.data.stereo_motorcycle()[1]
    return {f"skimage_{name}": loaders[name] for name in SKIMAGE_PHOTOS}


def _sklearn_loaders() -> dict[str, Callable[[], np.ndarray]]:
    from sklearn.datasets import load_sample_images

    def load(index: int) -> np.ndarray:
        return load_sample_images().images[index]

    return {f"sklearn_{name}": (lambda i=i: load(i)) for i, name in enumerate(SKLEARN_PHOTOS)}


def _collect_loaders() -> dict[str, Callable[[], np.ndarray]]:
    """Loaders for every sample whose library is installed, keyed by file stem."""
    loaders: dict[str, Callable[[], np.ndarray]] = {}
    for source, factory in (("scikit-image", _skimage_loaders), ("scikit-learn", _sklearn_loaders)):
        try:
            loaders.update(factory())
        except ImportError:
            logger.warning("%s is not installed; skipping its sample photos (%s)", source, _DEMO_HINT)
    if not loaders:
        raise ImportError(f"sample photos need scikit-image or scikit-learn: {_DEMO_HINT}")
    return loaders


def _encode(image: np.ndarray) -> tuple[bytes, str]:
    """Encode a uint8 HxW or HxWx3 array: JPEG for colour, lossless PNG for grayscale."""
    if image.dtype != np.uint8 or not (image.ndim == 2 or (image.ndim == 3 and image.shape[2] == 3)):
        raise ValueError(f"expected a uint8 HxW or HxWx3 image, got {image.dtype} {image.shape}")
    buf = io.BytesIO()
    if image.ndim == 2:
        Image.fromarray(image).save(buf, format="PNG", optimize=False)
        return buf.getvalue(), ".png"
    # 4:4:4 at high quality: most sources are already JPEGs, so keep the re-encoding loss small.
    Image.fromarray(image).save(buf, format="JPEG", quality=95, subsampling=0)
    return buf.getvalue(), ".jpg"




def write_sample_photos(dest: str | Path) -> list[Path]:
    """Write the bundled real photos into ``dest`` (created if needed); return the paths written.

    Names are deterministic (``skimage_chelsea.jpg``, ``skimage_camera.png``, ...), and so are
    the bytes, so a rerun rewrites identical files. A photo that fails to load is skipped with a
    warning rather than failing the demo.

    Raises:
        ImportError: neither scikit-image nor scikit-learn is installed.
    """
    dest = Path(dest)
    loaders = _collect_loaders()
    dest.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    for stem, load in loaders.items():
        try:
            image = np.asarray(load())
            data, suffix = _encode(image)
        except Exception as exc:  # a missing data file, a pooch fetch without network, ...
            logger.warning("skipping sample photo %s: %s: %s", stem, type(exc).__name__, exc)
            continue
        path = dest / f"{stem}{suffix}"
        write_bytes(path, data)
        written.append(path)
    logger.info("wrote %d sample photos to %s", len(written), dest)
    return written
