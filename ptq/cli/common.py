"""Flag groups shared by several subcommands (defined once, added where needed)."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Callable, Iterator
from contextlib import contextmanager

from ptq.calibration import PreprocessOptions
from ptq.datasets.preprocess import PRESETS
from ptq.errors import ConfigError


def new_parser(subparsers, name: str, summary: str, description: str,
               epilog: str = "") -> argparse.ArgumentParser:
    p = subparsers.add_parser(name, help=summary, description=description, epilog=epilog,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    g = p.add_argument_group("output and logging")
    g.add_argument("-v", "--verbose", action="count", default=0,
                   help="more detail (-vv: debug log and tracebacks)")
    g.add_argument("-q", "--quiet", action="count", default=0,
                   help="only errors; no progress bar")
    return p


def add_data_args(p: argparse.ArgumentParser, *, required: bool = True) -> None:
    g = p.add_argument_group("data")
    g.add_argument("--data", required=required, metavar="PATH",
                   help="folder of images (recursive; class sub-folders become labels), or a "
                        ".npy (single input) / .npz (keyed by input name, optional 'labels') file")
    g.add_argument("--batch-size", type=int, default=None, metavar="N",
                   help="images per inference (default: auto, ~128 MB of activations, 32 MB a core "
                        "on machines of more than 4 cores, 1 GiB on the GPU; a fixed batch "
                        "dimension in the model wins)")
    g.add_argument("--max-images", type=int, default=None, metavar="N",
                   help="use a seeded random subset of N images (default: all)")
    g.add_argument("--seed", type=int, default=0, help="seed for --max-images (default: 0)")
    g.add_argument("--strict", action="store_true",
                   help="fail on an unreadable image instead of skipping it with a warning")
    g = p.add_argument_group("preprocessing (images only; x = (pixel - mean) / std, pixel in 0..255)")
    g.add_argument("--preset", default="imagenet", choices=sorted(PRESETS),
                   help="imagenet: resize 256, crop 224, ImageNet mean/std; efficientnet-lite: "
                        "same crop, (x-127)/128; raw: resize to the input size, no normalisation "
                        "(default: imagenet)")
    g.add_argument("--size", type=_size, default=None, metavar="H[xW]",
                   help="network input size when the model's is dynamic (e.g. 640, 48x320)")
    g.add_argument("--size-multiple", dest="multiple", type=int, default=None, metavar="K",
                   help="round --size up to a multiple of K (DBNet-style detectors: 32)")
    g.add_argument("--letterbox", action="store_const", const=True, default=None,
                   help="keep the aspect ratio: scale the image to fit --size and pad the rest "
                        "(detectors, text recognizers) instead of the centre crop")
    g.add_argument("--pad-value", type=float, default=None, metavar="V",
                   help="letterbox padding as a pixel value 0..255 (default: 0; YOLO uses 114)")
    g.add_argument("--resize", type=int, default=None, metavar="N",
                   help="resize the shorter side to N before the centre crop")
    g.add_argument("--mean", type=_floats, default=None, metavar="M[,M,M]", help="per-channel mean")
    g.add_argument("--std", type=_floats, default=None, metavar="S[,S,S]", help="per-channel std")
    g.add_argument("--layout", choices=["NCHW", "NHWC"], default=None,
                   help="input layout (default: detected from the model input shape)")
    g.add_argument("--channel-order", choices=["RGB", "BGR"], default=None,
                   help="channel order the model expects (default: RGB)")


def add_runtime_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--providers", default="auto", metavar="LIST",
                   help="ONNX Runtime execution providers: auto (CUDA if available, else CPU), "
                        "cpu, cuda, or full provider names, comma separated (default: auto). "
                        "The EP that actually ran is reported: ORT falls back to CPU when the "
                        "CUDA libraries do not load (an error with 'cuda', a warning with auto)")


def preprocess_options(args: argparse.Namespace) -> PreprocessOptions:
    return PreprocessOptions(preset=args.preset, size=args.size, resize=args.resize,
                             mean=args.mean, std=args.std, layout=args.layout,
                             channel_order=args.channel_order, letterbox=args.letterbox,
                             pad_value=args.pad_value, multiple=args.multiple)


def _size(text: str) -> tuple[int, int]:
    try:
        vals = [int(v) for v in text.replace("x", ",").split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected H, HxW or H,W, got {text!r}") from None
    if len(vals) not in (1, 2) or min(vals) <= 0:
        raise argparse.ArgumentTypeError(f"expected H or H,W with positive values, got {text!r}")
    return (vals[0], vals[-1])


def _floats(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None


def default_outdir(model: str | Path) -> Path:
    return Path("ptq-out") / Path(model).stem


@contextmanager
def progress_bar(args: argparse.Namespace, total: int | None, desc: str,
                 unit: str = "img") -> Iterator[Callable[[int], None]]:
    """A tqdm bar on stderr (hidden with -q or when stderr is not a terminal and -v is off).

    Yields a callable `update(n)`; it also has `set_total(n)` for library code that
    learns the total only after opening the data (see ptq.calibration)."""
    from tqdm import tqdm

    disable = args.quiet > 0 or (not sys.stderr.isatty() and args.verbose == 0)
    with tqdm(total=total, desc=desc, unit=unit, disable=disable, dynamic_ncols=True,
              leave=False) as bar:
        yield _Progress(bar)


class _Progress:
    def __init__(self, bar) -> None:
        self._bar = bar

    def __call__(self, n: int) -> None:
        self._bar.update(n)

    def set_total(self, total: int) -> None:
        self._bar.total = total
        self._bar.refresh()


def positive(name: str, value: int | None) -> None:
    if value is not None and value <= 0:
        raise ConfigError(f"--{name} must be positive, got {value}")
