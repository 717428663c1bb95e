"""Kernel fusion and weight packing for the generated C (codegen only: the graph and its
semantics are unchanged, only how the forward pass is cut into kernel calls).

MatMulInteger by a weight [+ Add of a bias row] + Requantize [+ Lut] becomes one node of the
codegen-internal op FullyConnected, emitted as one `fully_connected_s8` call: the int32 product
and the int32 sum never reach the arena. Its weight is stored in the packed order the kernel
reads (pack_fc_weights; layout in firmware/kernels/fully_connected_s8.c), its shifts as int32
(an int8 shift tensor is widened). Bounds are proved on
the original graph (bounds.check_bounds) before this runs, so every int32 partial sum the fused
kernel forms is covered by the same proof.
"""
from __future__ import annotations

import dataclasses

import numpy as np

from tinylm.graph import OUTPUT, Graph, Node

FC = "FullyConnected"   # inputs: x, packed w, mult, shift, then bias / lut if present (attrs name them)


def pack_fc_weights(w: np.ndarray) -> np.ndarray:
    """w int8 [k, n] -> the same bytes in fully_connected_s8's order, returned as shape [k, n]
    (the shape is only a label: the content is the packed stream). For each block of four
    columns j0.. (fewer in the last block): every group of four k-rows, column by column
    (4 bytes each), then the k % 4 leftover rows column by column."""
    w = np.asarray(w)
    k, n = w.shape
    kq, out = k // 4, []
    for j0 in range(0, n, 4):
        blk = w[:, j0:j0 + 4]                                   # [k, nb]
        nb = blk.shape[1]
        groups = blk[:4 * kq].reshape(kq, 4, nb).transpose(0, 2, 1)   # [g, c, 4]
        out.append(groups.reshape(-1))
        out.append(blk[4 * kq:].T.reshape(-1))                # [c, k % 4]
    return np.concatenate(out).astype(w.dtype).reshape(k, n)


def _consumers(nodes) -> dict[str, list[int]]:
    users: dict[str, list[int]] = {}
    for i, node in enumerate(nodes):
        for t in node.inputs:
            users.setdefault(t, []).append(i)
    return users


def fuse(graph: Graph) -> Graph:
    """The graph with every fusable MatMulInteger chain replaced by one FullyConnected node (at
    the position of the chain's last node) and those weights packed. Nothing else changes."""
    nodes, weights = graph.nodes, dict(graph.weights)
    users = _consumers(nodes)

    def only_user(t, i_min):
        u = users.get(t, [])
        return nodes[u[0]] if len(u) == 1 and u[0] > i_min and t != OUTPUT else None

    drop, place = set(), {}
    for i, mm in enumerate(nodes):
        if mm.op != "MatMulInteger" or mm.inputs[1] not in weights or mm.inputs[0] in weights:
            continue
        w = mm.inputs[1]
        if len(users.get(w, [])) != 1 or weights[w].dtype != np.int8 or weights[w].ndim != 2:
            continue
        chain, bias = [i], ""
        nxt = only_user(mm.outputs[0], i)
        if nxt is not None and nxt.op == "Add":
            other = [t for t in nxt.inputs if t != mm.outputs[0]]
            b = weights.get(other[0]) if len(other) == 1 else None
            if b is None or b.size != weights[w].shape[1] or b.dtype != np.int32:
                continue
            bias = other[0]
            chain.append(nodes.index(nxt))
            nxt = only_user(nxt.outputs[0], chain[-1])
        if nxt is None or nxt.op != "Requantize" or nxt.inputs[0] != nodes[chain[-1]].outputs[0]:
            continue
        if any(t not in weights for t in nxt.inputs[1:]):
            continue
        chain.append(nodes.index(nxt))
        mult, shift, lut = nxt.inputs[1], nxt.inputs[2], ""
        after = only_user(nxt.outputs[0], chain[-1])
        if after is not None and after.op == "Lut" and after.inputs[0] == nxt.outputs[0] \
                and after.inputs[1] in weights:
            chain.append(nodes.index(after))
            lut = after.inputs[1]
        last = nodes[chain[-1]]
        fused = Node(FC, [mm.inputs[0], w, mult, shift] + [t for t in (bias, lut) if t],
                     [last.outputs[0]], mm.name.removesuffix(".mm") or mm.name,
                     {"bias": bias or None, "lut": lut or None})
        drop.update(chain[:-1])
        place[chain[-1]] = fused
        weights[w] = pack_fc_weights(weights[w])
        # the kernel reads int32 shifts; a graph may store them as int8 (binary graphs,
        # tinylm/quant/repack.py): the same values, widened here (3 bytes a channel of flash)
        weights[shift] = weights[shift].astype(np.int32)
    new_nodes = [place.get(i, n) for i, n in enumerate(nodes) if i not in drop]
    return dataclasses.replace(graph, nodes=new_nodes, weights=weights)
