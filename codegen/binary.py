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

import dataclasses

import numpy as np

from tinylm.graph import OUTPUT, GraphError, Node, ops
from tinylm.graph.ops import packed_words

OPS = ("BinarizeInt", "BinaryMatMulInt", "BinaryMaskMatMulInt")
# both are row-local in their first input (codegen/emit.py row tiles): the int32 product of a
# binary layer then lives one tile at a time, as MatMulInteger's does
# (the second operand is read whole: packed weights, or the packed keys of binary attention)
TILEABLE = {"BinarizeInt": ((0,), ()), "BinaryMatMulInt": ((0,), (1,)), "BinaryMaskMatMulInt": ((0,), (1,))}


def bound(node, default: int, shapes=None, weights=None) -> int:
    """Largest |value| of the node's output for codegen/bounds.check_bounds (default: other ops)."""
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
    if node.op == DENSE:
        return (f"binary_dense_b32_b32({ref(i_[0])}, {whole(i_[1])}, {whole(i_[2])}, {o}, {dim(i_[0])}, "
                f"{_dim(shape(i_[1])[0])}, {int(node.attrs['k'])});")
    raise GraphError(f"node {node.name!r}: no kernel for op {node.op}")   # graph.load() refuses unknown ops


# ----------------------------------------------------------------------------- threshold folding
DENSE = "BinaryDense"   # codegen-internal: inputs a, packed w, thresholds; attr k; out packed bits
TILEABLE[DENSE] = ((0,), (1,))


def thresholds(k: int, bias, mult, shift, beta) -> np.ndarray:
    """int32 [n]: the smallest dot in [-k, k] with requantize(dot + bias) + beta >= 0 per output
    channel (k + 1 where there is none). requantize is non-decreasing in x (multiplier >= 0, round
    half up, clamp), so the bit BinarizeInt would set is exactly dot >= threshold."""
    x = np.arange(-k, k + 1, dtype=np.int64)[:, None] + np.asarray(bias, np.int64).reshape(1, -1)
    y = ops.requantize(x, mult, shift).astype(np.int64) + np.asarray(beta, np.int64).reshape(1, -1)
    ok = y >= 0
    return np.where(ok.any(axis=0), ok.argmax(axis=0) - k, k + 1).astype(np.int32)


def fuse(graph):
    """BinaryMatMulInt by a weight [+ Add of a bias] + Requantize + BinarizeInt (each intermediate
    read only by the next) -> one BinaryDense node: the Requantize and the sign fold into an int32
    threshold per output channel, so neither the int32 nor the int8 row exists. Nothing else
    changes; bounds are proved on the original graph before this runs."""
    nodes, weights = list(graph.nodes), dict(graph.weights)
    users = {}
    for i, nd in enumerate(nodes):
        for t in nd.inputs:
            users.setdefault(t, []).append(i)

    def next_of(t):
        u = users.get(t, [])
        return nodes[u[0]] if len(u) == 1 and t != OUTPUT else None

    drop, place, dead = set(), {}, set()
    for i, mm in enumerate(nodes):
        if mm.op != "BinaryMatMulInt" or mm.inputs[1] not in weights or mm.inputs[0] in weights:
            continue
        k, n = int(mm.attrs["k"]), weights[mm.inputs[1]].shape[0]
        chain, bias, nxt = [mm], np.zeros(n, np.int64), next_of(mm.outputs[0])
        if nxt is not None and nxt.op == "Add":
            other = [t for t in nxt.inputs if t != mm.outputs[0]]
            if len(other) != 1 or other[0] not in weights or weights[other[0]].size != n:
                continue
            bias = weights[other[0]].reshape(-1)
            chain.append(nxt)
            nxt = next_of(nxt.outputs[0])
        if nxt is None or nxt.op != "Requantize" or any(t not in weights for t in nxt.inputs[1:]):
            continue
        rq = nxt
        chain.append(rq)
        bz = next_of(rq.outputs[0])
        if bz is None or bz.op != "BinarizeInt" or bz.inputs[0] != rq.outputs[0] or bz.inputs[1] not in weights \
                or bz.attrs.get("words", packed_words(n)) != packed_words(n):
            continue
        chain.append(bz)
        thr = f"{bz.name}.threshold"
        weights[thr] = thresholds(k, bias, weights[rq.inputs[1]], weights[rq.inputs[2]], weights[bz.inputs[1]])
        place[id(bz)] = Node(DENSE, [mm.inputs[0], mm.inputs[1], thr], [bz.outputs[0]], bz.name, {"k": k})
        drop.update(id(c) for c in chain[:-1])
        dead.update(t for c in chain[1:] for t in c.inputs if t in weights)
    new = [place.get(id(nd), nd) for nd in nodes if id(nd) not in drop]
    used = {t for nd in new for t in nd.inputs}
    weights = {t: w for t, w in weights.items() if t in used or t not in dead}
    return dataclasses.replace(graph, nodes=new, weights=weights)
