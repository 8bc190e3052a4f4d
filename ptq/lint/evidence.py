"""Measured TensorRT figures the lint findings cite (so "expected effect" is a number, not a hunch).

Source: NVIDIA's trex ResNet18 example engines (TensorRT 8.4, A100 80GB PCIe, batch 32,
`trtexec` with CUDA graphs), copied with their manifest to tests/data/trt/
trex-resnet18-a100/<variant>/*.profile.metadata.json, key performance_summary.Throughput.
tests/lint/test_evidence.py re-reads those files and checks every number here.
"""
from __future__ import annotations

RESNET18_A100_QPS = {          # variant folder -> Throughput (qps, one query = 32 images)
    "fp32": 499.294,
    "fp16": 1155.36,
    "qat": 1130.01,                # Q/DQ on conv inputs only: the residual Add cannot fuse
    "qat-residual": 1823.37,       # + Q/DQ on each residual Add's skip input
    "qat-residual-qgap": 1990.03,  # + Q/DQ on the global average pooling input
}
SOURCE = "trex ResNet18 A100 engines (TensorRT 8.4, batch 32)"


def residual_effect() -> str:
    q = RESNET18_A100_QPS
    return (f"{SOURCE}: Q/DQ on conv inputs only ran {q['qat']:.0f} qps, slower than FP16 "
            f"({q['fp16']:.0f}); adding Q/DQ on the residual inputs: {q['qat-residual']:.0f} qps "
            f"({q['qat-residual'] / q['qat']:.2f}x)")


def pooling_effect() -> str:
    q = RESNET18_A100_QPS
    return (f"{SOURCE}: quantizing the global pooling input took {q['qat-residual']:.0f} -> "
            f"{q['qat-residual-qgap']:.0f} qps "
            f"({q['qat-residual-qgap'] / q['qat-residual']:.2f}x)")
