"""Image-folder source on real photos: formats, colour modes, labels, bad files, batches.

The files are built from the scikit-image/scikit-learn photos with Pillow. Expected pixels come
from the source photo itself (e.g. an RGBA file must read back as the photo's RGB), so the
checks do not rely on ptq's own conversion code.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from onnx import TensorProto
from PIL import Image

from ptq.datasets import ImageFolder, make_preprocess, open_data
from ptq.errors import DataError
from ptq.graph.model import TensorInfo

H, W = 24, 32  # small crops keep the tests fast; the model input is static at this size
INPUT = TensorInfo("image", TensorProto.FLOAT, ("N", 3, H, W))
RAW = make_preprocess(INPUT, "raw")  # same size, mean 0, std 1: pixel values pass through exactly
RAW_DIGITS = make_preprocess(TensorInfo("image", TensorProto.FLOAT, ("N", 3, 16, 16)), "raw")


@pytest.fixture(scope="module")
def photo(sample_photos: Path) -> np.ndarray:
    with Image.open(sample_photos / "skimage_astronaut.jpg") as img:
        return np.asarray(img.convert("RGB").crop((200, 100, 200 + W, 100 + H)))


@pytest.fixture(scope="module")
def gray(sample_photos: Path) -> np.ndarray:
    with Image.open(sample_photos / "skimage_camera.png") as img:
        assert img.mode == "L"
        return np.asarray(img.crop((100, 100, 100 + W, 100 + H)))


@pytest.fixture(scope="module")
def formats(tmp_path_factory, photo: np.ndarray, gray: np.ndarray) -> tuple[Path, dict[str, np.ndarray]]:
    """One lossless file per format and colour mode, in nested folders; name -> expected RGB."""
    root = tmp_path_factory.mktemp("formats")
    rgb = Image.fromarray(photo)
    rgba = rgb.copy()
    rgba.putalpha(Image.fromarray(np.full((H, W), 77, np.uint8)))
    palette = rgb.quantize(colors=32)
    pal_rgb = np.asarray(palette.getpalette()[:96], np.uint8).reshape(32, 3)[np.asarray(palette)]
    files = {
        "rgb/a.png": (rgb, photo), "rgb/deep/er/b.bmp": (rgb, photo), "rgb/c.tiff": (rgb, photo),
        "rgb/d.tif": (rgb, photo), "rgb/e.webp": (rgb, photo), "rgb/F.PNG": (rgb, photo),
        "modes/gray.png": (Image.fromarray(gray), np.repeat(gray[:, :, None], 3, axis=2)),
        "modes/rgba.png": (rgba, photo),                      # alpha dropped, colour kept
        "modes/palette.png": (palette, pal_rgb),              # indices looked up in the palette
        "modes/cmyk.tiff": (rgb.convert("CMYK"), photo),      # Pillow's CMYK (K=0) maps back exactly
    }
    expected = {}
    for name, (img, want) in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        img.save(path, lossless=True) if path.suffix == ".webp" else img.save(path)
        expected[name] = want
    return root, expected


def load_all(source: ImageFolder, batch_size: int = 4) -> tuple[list[str], np.ndarray]:
    files, arrays = [], []
    for batch in source.batches(batch_size):
        files += batch.files
        arrays.append(batch.feeds["image"])
    return files, np.concatenate(arrays)


def test_every_format_and_colour_mode_reads_back_as_the_rgb_pixels(formats) -> None:
    root, expected = formats
    source = ImageFolder(root, "image", RAW)
    files, x = load_all(source)
    assert sorted(files) == sorted(expected) and len(source.skipped) == 0
    assert x.dtype == np.float32 and x.shape == (len(expected), 3, H, W)
    for name, arr in zip(files, x):
        np.testing.assert_array_equal(arr.transpose(1, 2, 0), expected[name], err_msg=name)


def test_jpeg_and_cmyk_jpeg(tmp_path: Path, photo: np.ndarray) -> None:
    Image.fromarray(photo).save(tmp_path / "a.jpg", quality=95)
    Image.fromarray(photo).convert("CMYK").save(tmp_path / "b.jpeg", quality=95)
    files, x = load_all(ImageFolder(tmp_path, "image", RAW))
    assert files == ["a.jpg", "b.jpeg"]
    for arr in x:  # lossy: close to the photo, in RGB order (a channel swap would be far off)
        assert np.abs(arr.transpose(1, 2, 0) - photo).mean() < 6


def test_class_subfolders_become_sorted_labels(digits_images: Path) -> None:
    source = ImageFolder(digits_images, "image", RAW_DIGITS)
    assert source.classes == [str(i) for i in range(10)]
    batches = list(source.batches(64))
    labels = np.concatenate([b.labels for b in batches])
    files = [f for b in batches for f in b.files]
    assert labels.dtype == np.int64 and len(labels) == 300
    assert [int(f.split("/")[0]) for f in files] == labels.tolist()


def test_labels_need_every_file_in_a_class_folder(tmp_path: Path, photo: np.ndarray) -> None:
    for name in ("cat/x.png", "dog/sub/y.png", "loose.png"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(photo).save(tmp_path / name)
    source = ImageFolder(tmp_path, "image", RAW)
    assert source.classes == ["cat", "dog"]
    assert [b.labels for b in source.batches(4)] == [None]  # a loose file: no labels at all
    assert next(source.batches(2)).labels.tolist() == [0, 1]  # cat/x, dog/sub/y
    assert source.describe()["classes"] == ["cat", "dog"]


def test_hidden_files_and_other_files_are_ignored(tmp_path: Path, photo: np.ndarray) -> None:
    for name in ("ok.png", ".hidden.png", ".cache/x.png", "notes.txt", "model.onnx"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(photo).save(tmp_path / name, format="PNG")
    assert [p.name for p in ImageFolder(tmp_path, "image", RAW).files] == ["ok.png"]


def test_unreadable_images_are_skipped_and_counted_or_fatal_with_strict(tmp_path: Path,
                                                                         photo: np.ndarray) -> None:
    Image.fromarray(photo).save(tmp_path / "good.png")
    Image.fromarray(photo).save(tmp_path / "z_good.png")
    (tmp_path / "text.jpg").write_text("this is not a jpeg")
    whole = (tmp_path / "good.png").read_bytes()
    (tmp_path / "truncated.png").write_bytes(whole[: len(whole) // 2])
    source = ImageFolder(tmp_path, "image", RAW)
    files, x = load_all(source)
    assert files == ["good.png", "z_good.png"] and len(x) == 2
    assert len(source.skipped) == 2
    assert {d["file"] for d in source.skipped.to_list()} == {"text.jpg", "truncated.png"}
    with pytest.raises(DataError) as err:
        load_all(ImageFolder(tmp_path, "image", RAW, strict=True))
    assert "text.jpg" in str(err.value) and "--strict" in str(err.value)


def test_empty_and_missing_folders(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no images found") as err:
        ImageFolder(tmp_path, "image", RAW)
    assert str(tmp_path) in str(err.value)
    (tmp_path / "readme.txt").write_text("no images here")
    with pytest.raises(DataError, match="no images found"):
        open_data(tmp_path, [INPUT])
    with pytest.raises(DataError, match="not found"):
        open_data(tmp_path / "missing", [INPUT])
    with pytest.raises(DataError, match="image folder"):
        open_data(tmp_path / "readme.txt", [INPUT])


def test_max_images_is_a_seeded_subset(digits_images: Path) -> None:
    pick = lambda seed: ImageFolder(digits_images, "image", RAW_DIGITS, max_images=25, seed=seed).files
    assert len(pick(0)) == 25 and pick(0) == pick(0) and pick(0) != pick(1)
    assert pick(0) == sorted(pick(0))
    assert len(ImageFolder(digits_images, "image", RAW_DIGITS, max_images=10_000).files) == 300


def test_batches_are_fresh_arrays_in_file_order(formats) -> None:
    root, _ = formats
    source = ImageFolder(root, "image", RAW)
    first = list(source.batches(4))
    assert [b.size for b in first] == [4, 4, 2]
    assert not np.shares_memory(first[0].feeds["image"], first[1].feeds["image"])
    keep = first[1].feeds["image"].copy()
    first[0].feeds["image"][:] = -1  # mutating one batch changes no other, nor a re-read
    np.testing.assert_array_equal(first[1].feeds["image"], keep)
    again = list(source.batches(4))
    assert (again[0].feeds["image"] >= 0).all()
    assert [f for b in again for f in b.files] == [str(p.relative_to(root)) for p in source.files]
