"""Flags and preprocessing of PaddleOCR's models (ASSETS.md), shared by the realzoo tests."""
from __future__ import annotations

RAPIDOCR = "rapidocr-onnxruntime==1.4.4"
DET_FLAGS = ["--mean", "123.675,116.28,103.53", "--std", "58.395,57.12,57.375"]  # ImageNet mean/std
REC_FLAGS = ["--preset", "raw", "--mean", "127.5", "--std", "127.5", "--letterbox"]  # (x/255-0.5)/0.5
