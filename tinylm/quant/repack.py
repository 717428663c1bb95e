"""Lossless repacking of a binary graph's weights (issue 11): the same integer result in fewer bytes.

Two rewrites, each of a weight whose every reader is the input named, each exact by the spec
(tinylm/graph/ops.py):
- a Gather table of uint32 words that all fit in 16 bits -> uint16. This is the binary token
  table when a token has r <= 16 sign bits: one word a token whose upper 16 bits are padding
  (0). `ops.gather` zero-extends uint16 entries to uint32 words, so the rows it gives are the
  same uint32 rows (kernel gather_b16): 8192 x 1 words, 32 KB -> 16 KB.
- the shift tensor of a Requantize (values 1..62) -> int8 (kernel requantize_s32_s8_sh8):
  a per-channel shift of 128 channels, 512 B -> 128 B.
Nothing else changes: nodes, their order and attributes, names, every other weight, metadata.
The lowering applies it to every binary graph (quant/embbert.quantize_params); int8 graphs are
not repacked and keep their bytes. `scripts/repack_binary.py` converts files written before.
"""
from __future__ import annotations

import numpy as np
import onnx
from onnx import numpy_helper


def _readers(model: onnx.ModelProto) -> dict[str, set[tuple[str, int]]]:
    out: dict[str, set[tuple[str, int]]] = {}
    for node in model.graph.node:
        for j, t in enumerate(node.input):
            out.setdefault(t, set()).add((node.op_type, j))
    return out


def compact(arr: np.ndarray, uses: set[tuple[str, int]]) -> np.ndarray | None:
    """The narrower array that stores `arr` exactly for these readers ((op, input index)), or None."""
    if not uses:
        return None
    if uses == {("Gather", 0)} and arr.dtype == np.uint32 and arr.ndim == 2 \
            and (arr.size == 0 or int(arr.max()) <= 0xFFFF):
        return arr.astype(np.uint16)
    if uses == {("Requantize", 2)} and arr.dtype == np.int32 and arr.size \
            and -128 <= int(arr.min()) and int(arr.max()) <= 127:
        return arr.astype(np.int8)
    return None


def repack_binary(model: onnx.ModelProto) -> tuple[onnx.ModelProto, dict[str, tuple[str, str]]]:
    """A copy of `model` with its bit-packed Gather tables of <= 16-bit words stored as uint16 and
    its Requantize shifts as int8, and {weight: (old dtype, new dtype)} of what changed."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    readers, changed = _readers(out), {}
    for t in out.graph.initializer:
        arr = numpy_helper.to_array(t)
        new = compact(arr, readers.get(t.name, set()))
        if new is not None:
            assert np.array_equal(new.astype(np.int64), arr.astype(np.int64)), t.name
            t.CopyFrom(numpy_helper.from_array(new, t.name))
            changed[t.name] = (str(arr.dtype), str(new.dtype))
    onnx.checker.check_model(out)
    return out, changed
