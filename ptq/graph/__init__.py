"""Everything that reads, checks, edits or saves ONNX graphs lives in this package.

`model` loads and inspects (never edits): external weights over 900 MB stay on disk,
the checker and shape inference run on the weightless `skeleton`, so models over 2 GB
work; ONNX's own errors become ModelLoadErrors naming the file. `edit` holds the
primitives every pass uses (copy, add outputs, finalise and check, the ONNX Runtime
session input, the streamed `save_model`). `rules` is the Q/DQ registry, `qdq` and
`cast` the passes, `precisions` the read-back. Invariants: the caller's ModelProto is
never mutated and every produced model passes `onnx.checker`.
"""
