"""Everything that reads or edits ONNX graphs lives in this package.

`model` loads and inspects (never edits); `edit` holds the primitives every pass
uses (copy, add outputs, insert nodes, finalise and check), so graph surgery has
one home and one set of invariants: the caller's ModelProto is never mutated and
every produced model passes `onnx.checker`.
"""
