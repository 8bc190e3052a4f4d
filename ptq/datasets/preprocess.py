"""Image preprocessing presets, every parameter overridable, fitted to the model input.

A preset fixes how pixels become tensors: `x = (pixel - mean) / std` with pixel in
0..255, after an optional shorter-side resize and a centre crop to the network size.

Detectors and recognizers must not lose the image's edges or aspect: `letterbox`
scales the whole image to fit inside H x W keeping its aspect ratio and pads the rest
(centred, YOLO's layout) with `pad_value` (a pixel value, before normalisation; 0 =
black; YOLO uses 114). Sizes are H x W (`--size 48x320` for a text recognizer), and a
dynamic H/W can be rounded up to a multiple (`--size-multiple 32`, what DBNet needs).

| preset            | resize (shorter side)   | crop      | mean                    | std                  |
|-------------------|-------------------------|-----------|-------------------------|----------------------|
| imagenet          | size / 0.875 (256@224)  | centre    | 123.675 116.28 103.53   | 58.395 57.12 57.375  |
| efficientnet-lite | size / 0.875            | centre    | 127                     | 128                  |
| raw               | none: resize to size    | none      | 0                       | 1                    |
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, replace

import numpy as np
from PIL import Image

from ptq.errors import ConfigError, DataError
from ptq.graph.model import TensorInfo

PRESETS: dict[str, dict] = {
    "imagenet": {"crop_ratio": 0.875, "mean": (123.675, 116.28, 103.53),
                 "std": (58.395, 57.12, 57.375)},
    "efficientnet-lite": {"crop_ratio": 0.875, "mean": (127.0,), "std": (128.0,)},
    "raw": {"crop_ratio": None, "mean": (0.0,), "std": (1.0,)},
}


# Pillow modes of 16-bit greyscale files (PNG, TIFF): `convert("RGB")` would clip them to
# 255, so they are scaled by 255/65535 in float instead ("I" is Pillow's 32-bit integer
# mode, which older Pillow releases use for 16-bit PNGs; values are taken as 0..65535)
HIGH_BIT_MODES = frozenset({"I;16", "I;16L", "I;16B", "I;16N", "I"})


@dataclass(frozen=True)
class Preprocess:
    """How one decoded RGB image becomes one input sample."""

    size: tuple[int, int]                 # (H, W) of the network input
    resize: int | None                    # shorter side before the centre crop; None = no crop
    mean: tuple[float, ...]
    std: tuple[float, ...]
    layout: str = "NCHW"
    channel_order: str = "RGB"
    channels: int = 3
    dtype: str = "float32"
    preset: str = "custom"
    letterbox: bool = False               # keep the aspect ratio, pad to size (no crop)
    pad_value: float = 0.0                # letterbox padding, in pixel units (0..255)

    def apply(self, img: Image.Image) -> np.ndarray:
        if img.mode in HIGH_BIT_MODES:  # 16-bit grey: scale to 0..255, keep the precision
            img = Image.fromarray(np.asarray(img, dtype=np.float32) * np.float32(255 / 65535))
        else:
            img = img.convert("L" if self.channels == 1 else "RGB")
        h, w = self.size
        if self.letterbox:
            img = letterbox(img, (h, w), self.pad_value)
        elif self.resize is None:
            img = img.resize((w, h), Image.BILINEAR)
        else:
            scale = self.resize / min(img.size)
            rw, rh = max(w, round(img.width * scale)), max(h, round(img.height * scale))
            img = img.resize((rw, rh), Image.BILINEAR)
            left, top = (rw - w) // 2, (rh - h) // 2
            img = img.crop((left, top, left + w, top + h))
        x = np.asarray(img, dtype=np.float32)
        x = x[:, :, None] if x.ndim == 2 else x
        if x.shape[2] != self.channels:  # grey from a 16-bit image feeding an RGB input
            x = np.repeat(x, self.channels, axis=2)
        if self.channel_order == "BGR":
            x = x[:, :, ::-1]
        x = (x - np.asarray(self.mean, np.float32)) / np.asarray(self.std, np.float32)
        if self.layout == "NCHW":
            x = x.transpose(2, 0, 1)
        return np.ascontiguousarray(x, dtype=self.dtype)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["size"] = list(self.size)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> Preprocess:
        d = dict(d)
        d["size"] = tuple(d["size"])
        d["mean"], d["std"] = tuple(d["mean"]), tuple(d["std"])
        return cls(**d)


def letterbox(img: Image.Image, size: tuple[int, int], pad_value: float = 0.0) -> Image.Image:
    """`img` scaled to fit inside `size` (H, W) with its aspect ratio, centred on a canvas
    filled with `pad_value`."""
    h, w = size
    scale = min(h / img.height, w / img.width)
    rw, rh = max(1, min(w, round(img.width * scale))), max(1, min(h, round(img.height * scale)))
    fill = int(round(pad_value))
    canvas = Image.new(img.mode, (w, h), fill if img.mode == "L" else (fill,) * 3)
    canvas.paste(img.resize((rw, rh), Image.BILINEAR), ((w - rw) // 2, (h - rh) // 2))
    return canvas


def round_up(size: tuple[int, int], multiple: int | None) -> tuple[int, int]:
    """(H, W) rounded up to a multiple (DBNet-style models need multiples of 32)."""
    if not multiple or multiple <= 1:
        return size
    return tuple(-(-int(d) // multiple) * multiple for d in size)  # type: ignore[return-value]


def detect_layout(shape: tuple | None) -> str:
    """NCHW unless the last axis looks like channels (1 or 3) and axis 1 does not."""
    if shape and len(shape) == 4 and shape[1] not in (1, 3) and shape[3] in (1, 3):
        return "NHWC"
    return "NCHW"


def make_preprocess(info: TensorInfo, preset: str = "imagenet", *,
                    size: tuple[int, int] | None = None, resize: int | None = None,
                    mean: tuple[float, ...] | None = None, std: tuple[float, ...] | None = None,
                    layout: str | None = None, channel_order: str | None = None,
                    letterbox: bool | None = None, pad_value: float | None = None,
                    multiple: int | None = None) -> Preprocess:
    """Build a Preprocess for an image input, taking size/layout from the model when static."""
    if preset not in PRESETS:
        raise ConfigError(f"unknown preprocessing preset {preset!r}; choose from {', '.join(PRESETS)}")
    if info.shape is None or len(info.shape) != 4:
        raise DataError(f"input '{info.name}' has shape {info.shape}, not a 4-D image batch",
                        hint="feed this model from a .npy/.npz file or a Python iterable")
    p = PRESETS[preset]
    layout = (layout or detect_layout(info.shape)).upper()
    if layout not in ("NCHW", "NHWC"):
        raise ConfigError(f"layout must be NCHW or NHWC, got {layout!r}")
    dims = info.shape[1:] if layout == "NCHW" else (info.shape[3], info.shape[1], info.shape[2])
    channels, mh, mw = (d if isinstance(d, int) and d > 0 else None for d in dims)
    channels = channels or 3
    if channels not in (1, 3):
        raise DataError(f"input '{info.name}' has {channels} channels; images give 1 or 3",
                        hint="feed this model from a .npy/.npz file or a Python iterable")
    if size is not None and ((mh and mh != size[0]) or (mw and mw != size[1])):
        raise DataError(f"--size {size[0]}x{size[1]} does not fit input '{info.name}' "
                        f"of static size {mh}x{mw}", hint=f"drop --size or use {mh}x{mw}")
    if size is not None and multiple:
        size = round_up(size, multiple)
    hw = (mh or (size or (None, None))[0], mw or (size or (None, None))[1])
    if hw[0] is None or hw[1] is None:
        raise ConfigError(f"input '{info.name}' has a dynamic image size",
                          hint="pass --size H[xW] (e.g. --size 224, --size 48x320)")
    if pad_value is not None and not 0 <= pad_value <= 255:
        raise ConfigError(f"--pad-value must be a pixel value in 0..255, got {pad_value:g}")
    if resize is None and p["crop_ratio"] is not None and not letterbox:
        resize = round(min(hw) / p["crop_ratio"])
    mean = tuple(mean or p["mean"]) * (channels if len(mean or p["mean"]) == 1 else 1)
    std = tuple(std or p["std"]) * (channels if len(std or p["std"]) == 1 else 1)
    if len(mean) != channels or len(std) != channels:
        raise ConfigError(f"--mean/--std need 1 or {channels} values")
    if any(s == 0 for s in std):
        raise ConfigError("--std values must be non-zero")
    order = (channel_order or "RGB").upper()
    if order not in ("RGB", "BGR"):
        raise ConfigError(f"channel order must be RGB or BGR, got {channel_order!r}")
    return Preprocess(size=(int(hw[0]), int(hw[1])), resize=resize, mean=mean, std=std,
                      layout=layout, channel_order=order, channels=channels,
                      dtype=info.dtype.name if info.is_float else "float32", preset=preset,
                      letterbox=bool(letterbox), pad_value=float(pad_value or 0.0))


def with_overrides(pre: Preprocess, **changes) -> Preprocess:
    return replace(pre, **{k: v for k, v in changes.items() if v is not None})
