"""Image-folder data source: recursive, any common format, class sub-folders as labels.

Decoding runs in a small thread pool (Pillow releases the GIL), so images for the
next batch are prepared while the model runs on the current one. Look-ahead is
bounded (LOOKAHEAD decoded images at most), so memory does not grow with the number
of images.
"""
from __future__ import annotations

import logging
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Iterator

import numpy as np
from PIL import Image, UnidentifiedImageError

from ptq.datasets.base import Batch, Skipped
from ptq.datasets.preprocess import Preprocess
from ptq.errors import DataError

log = logging.getLogger(__name__)

LOOKAHEAD = 32  # decoded images in flight beyond the one being consumed (~0.6 MB each at 224)
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"}


def display_name(path: Path | str) -> str:
    """A file name as valid UTF-8 text for messages and JSON: bytes that are not UTF-8 (kept
    by Python as lone surrogates, which cannot be encoded) are shown as \\xNN escapes."""
    text = str(path)
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def list_images(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*")
                  if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()
                  and not any(part.startswith(".") for part in p.relative_to(root).parts))


class ImageFolder:
    """Images under `root`; files in `root/<class>/...` get the label of `<class>`.

    Classes are the sorted sub-folder names (torchvision's ImageFolder order), so
    an ImageNet-style synset tree maps to the usual class indices.
    """

    def __init__(self, root: str | Path, input_name: str, preprocess: Preprocess, *,
                 max_images: int | None = None, seed: int = 0, strict: bool = False,
                 workers: int = 2) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise DataError("image directory not found", path=self.root,
                            hint="pass a folder of images (or a .npy/.npz file) to --data")
        files = list_images(self.root)
        if not files:
            raise DataError("no images found (looked for "
                            f"{', '.join(sorted(IMAGE_SUFFIXES))}, recursively)", path=self.root,
                            hint="point --data at a folder that contains images")
        if max_images is not None and max_images < len(files):
            pick = np.random.default_rng(seed).choice(len(files), max_images, replace=False)
            files = [files[i] for i in sorted(pick)]
        self.files = files
        self.input_name = input_name
        self.preprocess = preprocess
        self.strict = strict
        self.workers = workers
        self.skipped = Skipped()
        self.classes = sorted({p.relative_to(self.root).parts[0] for p in files
                               if len(p.relative_to(self.root).parts) > 1})
        self._class_index = {c: i for i, c in enumerate(self.classes)}

    def __len__(self) -> int:
        return len(self.files)

    def label_of(self, path: Path) -> int | None:
        parts = path.relative_to(self.root).parts
        return self._class_index.get(parts[0]) if len(parts) > 1 else None

    def _load(self, path: Path) -> np.ndarray | str:
        try:
            with Image.open(path) as img:
                img.load()
                return self.preprocess.apply(img)
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            return (f"over Pillow's decompression-bomb limit of {Image.MAX_IMAGE_PIXELS} pixels "
                    f"({type(exc).__name__})")
        except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
            return f"{type(exc).__name__}: {exc}".splitlines()[0]

    def samples(self) -> Iterator[tuple[Path, np.ndarray]]:
        """Decoded samples in file order; at most LOOKAHEAD are decoded ahead of the consumer
        (Executor.map would submit every file at once and keep every result)."""
        with ThreadPoolExecutor(self.workers) as pool:
            pending: deque = deque()
            files = iter(self.files)
            for path in files:
                pending.append((path, pool.submit(self._load, path)))
                if len(pending) > LOOKAHEAD:
                    break
            while pending:
                path, future = pending.popleft()
                result = future.result()
                del future
                nxt = next(files, None)
                if nxt is not None:
                    pending.append((nxt, pool.submit(self._load, nxt)))
                if isinstance(result, str):
                    if self.strict:
                        for _, f in pending:
                            f.cancel()
                        raise DataError(f"cannot read image ({result})", path=display_name(path),
                                        hint="remove or fix the file, or drop --strict to skip it")
                    log.warning("skipping unreadable image %s (%s)", display_name(path), result)
                    self.skipped.add(display_name(path.relative_to(self.root)), result)
                    continue
                yield path, result

    def batches(self, batch_size: int) -> Iterator[Batch]:
        self.skipped = Skipped()
        chunk: list[tuple[Path, np.ndarray]] = []
        for item in self.samples():
            chunk.append(item)
            if len(chunk) == batch_size:
                yield self._batch(chunk)
                chunk = []
        if chunk:
            yield self._batch(chunk)

    def _batch(self, chunk: list[tuple[Path, np.ndarray]]) -> Batch:
        labels = [self.label_of(p) for p, _ in chunk]
        return Batch(feeds={self.input_name: np.stack([x for _, x in chunk])},
                     files=tuple(display_name(p.relative_to(self.root)) for p, _ in chunk),
                     labels=None if None in labels else np.asarray(labels, np.int64))

    def describe(self) -> dict:
        return {"kind": "images", "source": display_name(self.root), "num_files": len(self.files),
                "classes": self.classes, "preprocessing": self.preprocess.to_dict()}
