"""Static activation arena: offsets from a liveness-based planner.

A tensor lives from the node that writes it to the last node that reads it (both included,
so a kernel never writes over its own inputs). Tensors whose lifetimes do not overlap may
share bytes. Placement is greedy: largest tensor first, at the lowest offset that does not
collide with an already placed tensor whose lifetime overlaps -- the classic heuristic, close
to optimal for the chain-like graphs of transformers.
"""
from __future__ import annotations

from dataclasses import dataclass

ALIGN = 8


@dataclass
class Buffer:
    name: str
    size: int          # bytes at the longest input
    first: int         # index of the node that writes it
    last: int          # index of the last node that reads it
    offset: int = -1


def _align(v: int) -> int:
    return (v + ALIGN - 1) // ALIGN * ALIGN


def lifetimes(nodes, sizes: dict[str, int], outputs: set[str]) -> list[Buffer]:
    """Buffers for every activation that some node writes; graph outputs live to the end."""
    bufs = {}
    for i, node in enumerate(nodes):
        for t in node.inputs:
            if t in bufs:
                bufs[t].last = i
        for t in node.outputs:
            bufs[t] = Buffer(t, sizes[t], i, i)
    for t in outputs:
        if t in bufs:
            bufs[t].last = len(nodes)
    return list(bufs.values())


def plan(buffers: list[Buffer]) -> int:
    """Sets every buffer's offset; returns the arena size in bytes."""
    placed: list[Buffer] = []
    for buf in sorted(buffers, key=lambda b: (-b.size, b.first)):
        clashes = sorted((p for p in placed if p.first <= buf.last and buf.first <= p.last),
                         key=lambda p: p.offset)
        offset = 0
        for p in clashes:
            if offset + buf.size <= p.offset:
                break
            offset = max(offset, _align(p.offset + p.size))
        buf.offset = offset
        placed.append(buf)
    return max((_align(b.offset + b.size) for b in buffers), default=0)


def check(buffers: list[Buffer]) -> None:
    """No two buffers that are alive at once share a byte (used by the tests)."""
    for i, a in enumerate(buffers):
        for b in buffers[i + 1:]:
            live = a.first <= b.last and b.first <= a.last
            overlap = a.offset < b.offset + b.size and b.offset < a.offset + a.size
            if live and overlap:
                raise AssertionError(f"{a.name} and {b.name} overlap in the arena while both live")
