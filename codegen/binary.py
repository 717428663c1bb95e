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

OPS = ("BinarizeInt", "BinaryMatMulInt", "BinaryMaskMatMulInt")
# both are row-local in their first input (codegen/emit.py row tiles): the int32 product of a
# binary layer then lives one tile at a time, as MatMulInteger's does
# (the second operand is read whole: packed weights, or the packed keys of binary attention)
TILEABLE = {"BinarizeInt": ((0,), ()), "BinaryMatMulInt": ((0,), (1,)), "BinaryMaskMatMulInt": ((0,), (1,))}


def bound(node, default: int, shapes=None, weights=None) -> int:
    """Largest |value| of the node's output for codegen/emit.check_bounds (default: other ops)."""
    if node.op == "BinaryMatMulInt":
        return int(node.attrs["k"])
    if node.op == "BinaryMaskMatMulInt":   # |2 popcount(m & v) - popcount(m)| <= popcount(m) <= 32 W
        t = node.inputs[0]
        width = shapes[t][0][-1] if t in shapes else weights[t].shape[-1]
        return 32 * int(width)
    if node.op == "BinarizeInt":
        return 1          # packed bits, never an int32 accumulator
    return default


def _dim(d) -> str:
    return "n" if d == "n" else str(d)


def call(node, shape, ref, whole, dim, graph) -> str:
    """The C call of a binary node. shape(t): its shape template ('n' for the token axis),
    ref(t): its C expression (a row slice inside a row tile), whole(t): the whole tensor (the
    second operand, read whole), dim(t, axis): a dimension as C
    ('nr' for the rows of a tile), graph: the (fused) graph."""
    weights, max_len = graph.weights, graph.max_len
    producers = {n.outputs[0]: n.op for n in graph.nodes}
    i_, o = node.inputs, ref(node.outputs[0])
    if node.op == "BinarizeInt":
        _, k = shape(i_[0])
        words = node.attrs.get("words")
        if k == "n" and (words is None or 32 * int(words) < max_len):
            # ceil(n/32) words: shape templates have no such dimension, the arena would be short
            raise GraphError(f"node {node.name!r} (BinarizeInt): packs along an axis that grows with the "
                             f"input length; that needs attribute words >= ceil(max_len/32) = {-(-max_len // 32)}")
        words = int(words) if words is not None else -(-int(k) // 32)
        ch = weights[i_[1]].size if i_[1] in weights else shape(i_[1])[0]
        return f"binarize_s8_b32({ref(i_[0])}, {ref(i_[1])}, {_dim(ch)}, {o}, {dim(i_[0])}, {_dim(k)}, {words});"
    if node.op == "BinaryMaskMatMulInt":
        if producers.get(i_[0]) != "BinarizeInt":   # its padding bits must be 0: BinarizeInt's are
            raise GraphError(f"node {node.name!r} (BinaryMaskMatMulInt): the mask {i_[0]!r} must be a "
                             "BinarizeInt output (its padding bits must be 0)")
        return (f"binary_mask_matmul_b32_s32({ref(i_[0])}, {whole(i_[1])}, {o}, {dim(i_[0])}, {_dim(shape(i_[1])[0])}, "
                f"{shape(i_[0])[1]});")
    if node.op == "BinaryMatMulInt":
        return (f"binary_matmul_b32_s32({ref(i_[0])}, {whole(i_[1])}, {o}, {dim(i_[0])}, {_dim(shape(i_[1])[0])}, "
                f"{int(node.attrs['k'])});")
    raise GraphError(f"node {node.name!r}: no kernel for op {node.op}")   # graph.load() refuses unknown ops
