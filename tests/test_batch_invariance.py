"""Ranges depend on the images, not on the batch size or their order (power-of-two histogram grid)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ptq.calibration import CalibrateConfig, PreprocessOptions, calibrate, open_model_data
from ptq.calibrators import Method
from ptq.graph.model import load_model

DIGITS = PreprocessOptions(preset="raw", mean=(0.0,), std=(255.0,))


def test_same_images_any_batch_size_or_order_give_the_same_ranges(digits_model_path: Path,
                                                                  digits_calib_images: Path,
                                                                  tmp_path: Path) -> None:
    config = CalibrateConfig(algorithms=tuple(Method), preprocess=DIGITS)
    source = open_model_data(digits_model_path, load_model(digits_model_path), digits_calib_images, config)
    x = np.concatenate([b.feeds[next(iter(b.feeds))] for b in source.batches(64)])
    np.save(tmp_path / "ordered.npy", x)
    np.save(tmp_path / "shuffled.npy", x[np.random.default_rng(0).permutation(len(x))])
    runs = {}
    for data, bs in (("ordered", 1), ("ordered", 7), ("ordered", 32), ("shuffled", 7)):
        cfg = CalibrateConfig(algorithms=tuple(Method), batch_size=bs)
        runs[(data, bs)] = calibrate(digits_model_path, tmp_path / f"{data}.npy", cfg)
    base = runs[("ordered", 32)]
    for key, table in runs.items():
        for name, t in table.tensors.items():
            b = base.tensors[name]
            assert t.histogram.bin_width == b.histogram.bin_width, (key, name)
            np.testing.assert_array_equal(t.histogram.counts, b.histogram.counts, err_msg=f"{key} {name}")
            assert t.amax == b.amax, (key, name)          # every algorithm, bit for bit
            assert t.choice == b.choice, (key, name)
            # float64 sums of float32 partial sums: order changes only the last bits
            np.testing.assert_allclose(t.channel_mean, b.channel_mean, rtol=1e-9, atol=1e-12)
