"""Lowering of the binary ops (BiPFT-style, tinylm/graph/ops.py "binary") to C kernel calls.

BinarizeInt -> `binarize_s8_b32`, BinaryMatMulInt -> `binary_matmul_b32_s32` (one call per node,
as every other op; codegen/emit.py asks this module for the call and for the proven bound).
Packed weights are ordinary uint32 weights: const arrays in flash, W = ceil(k/32) words per
output channel, so a k x n binary matrix takes 4 n ceil(k/32) bytes (k n / 8 when 32 | k: 1/8 of
the int8 matrix). Packed activations are uint32 tensors in the arena, 4 ceil(k/32) bytes a row.

Overflow: |BinaryMatMulInt| <= k, exactly (k - 2 popcount with 0 <= popcount <= k), so the
proof of a following bias Add is k + max|bias|, as MatMulInteger's is k * max|a| * max|b|.
"""
from __future__ import annotations

from tinylm.graph import GraphError

OPS = ("BinarizeInt", "BinaryMatMulInt")
# both are row-local in their first input (codegen/emit.py row tiles): the int32 product of a
# binary layer then lives one tile at a time, as MatMulInteger's does
TILEABLE = {"BinarizeInt": ((0,), ()), "BinaryMatMulInt": ((0,), ())}


def bound(node, default: int) -> int:
    """Largest |value| of the node's output for codegen/emit.check_bounds (default: other ops)."""
    if node.op == "BinaryMatMulInt":
        return int(node.attrs["k"])
    if node.op == "BinarizeInt":
        return 1          # packed bits, never an int32 accumulator
    return default


def _dim(d) -> str:
    return "n" if d == "n" else str(d)


def call(node, shape, ref, dim, weights) -> str:
    """The C call of a binary node. shape(t): its shape template ('n' for the token axis),
    ref(t): its C expression (a row slice inside a row tile), dim(t, axis): a dimension as C
    ('nr' for the rows of a tile), weights: the graph's constants (for per-channel lengths)."""
    i_, o = node.inputs, ref(node.outputs[0])
    if node.op == "BinarizeInt":
        _, k = shape(i_[0])
        if k == "n":   # ceil(n/32) words: shape templates have no such dimension, the arena would be short
            raise GraphError(f"node {node.name!r} (BinarizeInt): packs along an axis that grows with the "
                             "input length; only a fixed last axis can be packed")
        ch = weights[i_[1]].size if i_[1] in weights else shape(i_[1])[0]
        return f"binarize_s8_b32({ref(i_[0])}, {ref(i_[1])}, {_dim(ch)}, {o}, {dim(i_[0])}, {_dim(k)});"
    if node.op == "BinaryMatMulInt":
        return (f"binary_matmul_b32_s32({ref(i_[0])}, {ref(i_[1])}, {o}, {dim(i_[0])}, {dim(i_[1])}, "
                f"{int(node.attrs['k'])});")
    raise GraphError(f"node {node.name!r}: no kernel for op {node.op}")   # graph.load() refuses unknown ops
