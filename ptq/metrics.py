"""Comparison metrics: pure functions of (reference outputs, candidate outputs).

Each metric scores one output tensor (sample axis first); a model with several
outputs is scored by its worst output. With labels, accuracy metrics score the
candidate against the truth instead of against the reference.

| name     | definition                                                   | better |
|----------|--------------------------------------------------------------|--------|
| cosine   | mean over samples of cos(ref_i, cand_i), each sample flattened | higher |
| max-abs  | max |ref - cand|                                             | lower  |
| mean-abs | mean |ref - cand|                                            | lower  |
| mse      | mean (ref - cand)^2                                          | lower  |
| snr      | 10 log10(sum ref^2 / sum (ref - cand)^2) dB, capped at 300   | higher |
| top1     | share of samples whose argmax (class axis 1) matches the ref | higher |
| top5     | share whose reference argmax is in the candidate's top 5     | higher |
| top1-acc | share whose candidate argmax equals the label (needs labels) | higher |
| top5-acc | share whose label is in the candidate's top 5 (needs labels) | higher |
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from ptq.errors import ConfigError

SNR_CAP_DB = 300.0  # identical outputs: a finite number JSON can hold


def cosine(ref: np.ndarray, cand: np.ndarray) -> float:
    r = ref.reshape(len(ref), -1).astype(np.float64)
    c = cand.reshape(len(cand), -1).astype(np.float64)
    nr, nc = np.linalg.norm(r, axis=1), np.linalg.norm(c, axis=1)
    dot = (r * c).sum(axis=1)
    both_zero = (nr == 0) & (nc == 0)
    with np.errstate(invalid="ignore", divide="ignore"):
        cos = np.where(both_zero, 1.0, np.where((nr == 0) | (nc == 0), 0.0, dot / (nr * nc)))
    return float(np.clip(cos, -1.0, 1.0).mean())


def max_abs(ref: np.ndarray, cand: np.ndarray) -> float:
    return float(np.max(np.abs(ref.astype(np.float64) - cand))) if ref.size else 0.0


def mean_abs(ref: np.ndarray, cand: np.ndarray) -> float:
    return float(np.mean(np.abs(ref.astype(np.float64) - cand))) if ref.size else 0.0


def mse(ref: np.ndarray, cand: np.ndarray) -> float:
    return float(np.mean((ref.astype(np.float64) - cand) ** 2)) if ref.size else 0.0


def snr_db(ref: np.ndarray, cand: np.ndarray) -> float:
    signal = float(np.sum(ref.astype(np.float64) ** 2))
    noise = float(np.sum((ref.astype(np.float64) - cand) ** 2))
    if noise == 0.0:
        return SNR_CAP_DB
    if signal == 0.0:
        return -SNR_CAP_DB
    return float(min(SNR_CAP_DB, 10.0 * np.log10(signal / noise)))


def _classes(x: np.ndarray) -> np.ndarray:
    """Move the class axis (1) last so argmax/top-k work for [N,C] and [N,C,H,W] alike."""
    if x.ndim < 2:
        raise ConfigError(f"top-k metrics need a class axis; output has shape {x.shape}")
    return np.moveaxis(x, 1, -1)


def _topk(x: np.ndarray, k: int) -> np.ndarray:
    k = min(k, x.shape[-1])
    return np.argpartition(-x, k - 1, axis=-1)[..., :k]


def top1_agreement(ref: np.ndarray, cand: np.ndarray) -> float:
    return float(np.mean(_classes(ref).argmax(-1) == _classes(cand).argmax(-1)))


def top5_agreement(ref: np.ndarray, cand: np.ndarray) -> float:
    truth = _classes(ref).argmax(-1)
    return float(np.mean((_topk(_classes(cand), 5) == truth[..., None]).any(-1)))


def top1_accuracy(cand: np.ndarray, labels: np.ndarray) -> float:
    return float(np.mean(_classes(cand).argmax(-1) == labels))


def top5_accuracy(cand: np.ndarray, labels: np.ndarray) -> float:
    return float(np.mean((_topk(_classes(cand), 5) == np.asarray(labels)[..., None]).any(-1)))


@dataclass(frozen=True)
class Metric:
    name: str
    fn: Callable[..., float]
    higher_is_better: bool
    needs_labels: bool = False

    def score_tensor(self, ref: np.ndarray, cand: np.ndarray, labels: np.ndarray | None) -> float:
        if self.needs_labels:
            if labels is None:
                raise ConfigError(f"metric '{self.name}' needs labels",
                                  hint="use an image folder with class sub-folders, or an npz "
                                       "with a 'labels' array")
            return self.fn(cand, labels)
        return self.fn(ref, cand)

    def score(self, ref: dict[str, np.ndarray], cand: dict[str, np.ndarray],
              labels: np.ndarray | None = None, outputs: list[str] | None = None) -> float:
        """Worst score over the outputs (label metrics use the first output only)."""
        names = outputs or list(ref)
        if self.needs_labels:
            names = names[:1]
        scores = [self.score_tensor(ref[n], cand[n], labels) for n in names]
        return min(scores) if self.higher_is_better else max(scores)

    def better(self, a: float, b: float) -> bool:
        return a > b if self.higher_is_better else a < b

    def gain(self, new: float, old: float) -> float:
        """How much `new` improves on `old`, positive = better, whatever the direction."""
        return (new - old) if self.higher_is_better else (old - new)


METRICS: dict[str, Metric] = {m.name: m for m in [
    Metric("cosine", cosine, True),
    Metric("max-abs", max_abs, False),
    Metric("mean-abs", mean_abs, False),
    Metric("mse", mse, False),
    Metric("snr", snr_db, True),
    Metric("top1", top1_agreement, True),
    Metric("top5", top5_agreement, True),
    Metric("top1-acc", top1_accuracy, True, needs_labels=True),
    Metric("top5-acc", top5_accuracy, True, needs_labels=True),
]}


def get_metric(name: str) -> Metric:
    try:
        return METRICS[name]
    except KeyError:
        raise ConfigError(f"unknown metric {name!r}; choose from {', '.join(METRICS)} "
                          "or give a hook as package.module:function") from None
