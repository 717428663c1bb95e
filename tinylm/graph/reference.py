"""The integer reference: a numpy interpreter of the quantized graph.

It is the spec of what the device computes: each node runs the tinylm.graph.ops function that
defines its exact integer result, and the firmware must produce the same logits bit for bit.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from tinylm.graph import ops
from tinylm.graph.format import INPUT, OUTPUT, Graph, GraphError, Node, check_attrs


def _expect(node: Node, arr: np.ndarray, dtype, ndim: int | None, what: str) -> None:
    if arr.dtype != np.dtype(dtype):
        raise GraphError(f"node {node.name!r} ({node.op}): {what} is {arr.dtype}, expected {np.dtype(dtype)}")
    if ndim is not None and arr.ndim != ndim:
        raise GraphError(f"node {node.name!r} ({node.op}): {what} has shape {arr.shape}, expected {ndim}-D")


def _exp_table(node: Node, t: np.ndarray) -> None:
    _expect(node, t, np.uint16, 1, "exp table")
    if t.shape[0] == 0:
        raise GraphError(f"node {node.name!r} ({node.op}): exp table is empty (K >= 1 entries required)")
    if t[0] == 0:
        raise GraphError(f"node {node.name!r} ({node.op}): exp table entry 0 must be > 0")


def run_node(node: Node, args: list[np.ndarray]) -> np.ndarray:
    a = node.attrs
    op = node.op
    bad = check_attrs(node)   # graphs built in memory never went through format.read
    if bad:
        raise GraphError(bad)
    if op == "Gather":
        data, idx = args
        if data.dtype not in (np.int8, np.uint16, np.uint32) or data.ndim != 2:   # int8 or bit-packed rows
            raise GraphError(f"node {node.name!r} (Gather): data must be 2-D int8, uint16 or uint32 (bit-packed), "
                             f"not {data.dtype}{list(data.shape)}")
        if idx.dtype not in (np.int32, np.int64) or idx.ndim != 1:
            raise GraphError(f"node {node.name!r} (Gather): indices must be 1-D int32/int64")
        if int(a.get("axis", 0)) != 0:
            raise GraphError(f"node {node.name!r} (Gather): only axis 0 is supported")
        return ops.gather(data, idx)
    if op == "MatMulInteger":
        x, w = args
        _expect(node, x, np.int8, 2, "A")
        _expect(node, w, np.int8, 2, "B")
        if x.shape[1] != w.shape[0]:
            raise GraphError(f"node {node.name!r} (MatMulInteger): shape mismatch {x.shape} x {w.shape}")
        return ops.matmul_integer(x, w)
    if op == "Add":
        x, b = args
        _expect(node, x, np.int32, 2, "A")
        _expect(node, b, np.int32, None, "B")
        if b.shape not in (x.shape, (x.shape[1],), (1, x.shape[1])):
            raise GraphError(f"node {node.name!r} (Add): cannot broadcast {b.shape} to {x.shape}")
        return ops.add_int32(x, b)
    if op == "Transpose":
        (x,) = args
        _expect(node, x, np.int8, 2, "input")
        if list(a.get("perm", [1, 0])) != [1, 0]:
            raise GraphError(f"node {node.name!r} (Transpose): only perm [1, 0] is supported")
        return ops.transpose(x)
    if op == "Requantize":
        x, m, s = args
        _expect(node, x, np.int32, 2, "input")
        _expect(node, m, np.int32, 1, "multiplier")
        if s.dtype not in (np.int8, np.int32) or s.ndim != 1:
            raise GraphError(f"node {node.name!r} (Requantize): shift must be 1-D int32 or int8, "
                             f"not {s.dtype}{list(s.shape)}")
        if m.shape != s.shape or m.shape[0] not in (1, x.shape[1]):
            raise GraphError(f"node {node.name!r} (Requantize): multiplier/shift length {m.shape[0]} "
                             f"must be 1 or {x.shape[1]}")
        if m.min() < 0 or s.min() < 1 or s.max() > 62:
            raise GraphError(f"node {node.name!r} (Requantize): multiplier must be >= 0 and shift in 1..62")
        return ops.requantize(x, m, s)
    if op == "AddInt8":
        x, y = args
        _expect(node, x, np.int8, 2, "A")
        _expect(node, y, np.int8, 2, "B")
        if x.shape != y.shape:
            raise GraphError(f"node {node.name!r} (AddInt8): shape mismatch {x.shape} + {y.shape}")
        return ops.add_int8(x, y, a["ma"], a["mb"], a["shift"])
    if op == "PositionIds":
        return ops.position_ids(args[0])
    if op == "Lut":
        x, t = args
        _expect(node, x, np.int8, 2, "input")
        _expect(node, t, np.int8, 1, "table")
        if t.shape[0] != 256:
            raise GraphError(f"node {node.name!r} (Lut): table must have 256 entries")
        return ops.lut(x, t)
    if op == "SoftmaxInt":
        x, t = args
        _expect(node, x, np.int32, 2, "input")
        _exp_table(node, t)
        if x.shape[1] > 65536:   # the uint32 sum of a row of uint16 exps
            raise GraphError(f"node {node.name!r} (SoftmaxInt): rows of {x.shape[1]} columns; at most 65536")
        return ops.softmax_int(x, a["multiplier"], a["shift"], t)
    if op == "RMSNormInt":
        x, g = args
        _expect(node, x, np.int8, 2, "input")
        _expect(node, g, np.int8, 1, "gain")
        if g.shape[0] != x.shape[1]:
            raise GraphError(f"node {node.name!r} (RMSNormInt): gain length {g.shape[0]} != {x.shape[1]}")
        if not 1 <= x.shape[1] <= 4096:   # where ops.rmsnorm_int proves its int32 bound
            raise GraphError(f"node {node.name!r} (RMSNormInt): width {x.shape[1]} is outside 1..4096")
        return ops.rmsnorm_int(x, g, a["multiplier"], a["shift"])
    if op == "SegmentIds":
        (ids,) = args
        if ids.dtype not in (np.int32, np.int64) or ids.ndim != 1:
            raise GraphError(f"node {node.name!r} (SegmentIds): input must be 1-D int32/int64")
        return ops.segment_ids(ids)
    if op == "AttentionInt":
        q, kv, t = args
        _expect(node, q, np.int8, 2, "query")
        _expect(node, kv, np.int8, 2, "keys/values")
        _exp_table(node, t)
        if q.shape[1] != kv.shape[1]:
            raise GraphError(f"node {node.name!r} (AttentionInt): width mismatch {q.shape} vs {kv.shape}")
        return ops.attention_int(q, kv, a["multiplier"], a["shift"], t, a["out_multiplier"], a["out_shift"])
    if op == "CausalDepthwiseConvInt":
        x, w, b = args
        _expect(node, x, np.int8, 2, "input")
        _expect(node, w, np.int8, 2, "weight")
        _expect(node, b, np.int32, 1, "bias")
        if w.shape[1] != x.shape[1] or b.shape[0] != x.shape[1]:
            raise GraphError(f"node {node.name!r} (CausalDepthwiseConvInt): weight {w.shape} / bias "
                             f"{b.shape} do not match input width {x.shape[1]}")
        if w.shape[0] < 1:
            raise GraphError(f"node {node.name!r} (CausalDepthwiseConvInt): weight has no taps (k >= 1 required)")
        return ops.causal_dwconv_int(x, w, b)
    if op == "BinarizeInt":
        x, beta = args
        _expect(node, x, np.int8, 2, "input")
        _expect(node, beta, np.int32, 1, "beta")
        if beta.shape[0] not in (1, x.shape[1]):
            raise GraphError(f"node {node.name!r} (BinarizeInt): beta length {beta.shape[0]} must be 1 or {x.shape[1]}")
        words = a.get("words")
        if words is not None and words < ops.packed_words(x.shape[1]):
            raise GraphError(f"node {node.name!r} (BinarizeInt): words = {words} cannot hold {x.shape[1]} values")
        return ops.binarize_int(x, beta, words=words)
    if op == "BinaryMatMulInt":
        x, w = args
        _expect(node, x, np.uint32, 2, "A (packed)")
        _expect(node, w, np.uint32, 2, "B (packed)")
        words = ops.packed_words(a["k"])
        if x.shape[1] != words or w.shape[1] != words:
            raise GraphError(f"node {node.name!r} (BinaryMatMulInt): k = {a['k']} needs {words} words per row, "
                             f"got A {x.shape} and B {w.shape}")
        return ops.binary_matmul_int(x, w, a["k"])
    if op == "BinaryMaskMatMulInt":
        mk, v = args
        _expect(node, mk, np.uint32, 2, "mask (packed)")
        _expect(node, v, np.uint32, 2, "values (packed)")
        if mk.shape[1] != v.shape[1]:
            raise GraphError(f"node {node.name!r} (BinaryMaskMatMulInt): packed widths differ, {mk.shape} x {v.shape}")
        return ops.binary_mask_matmul_int(mk, v)
    raise GraphError(f"node {node.name!r}: unsupported op {op}")


def trace(graph: Graph, ids) -> dict[str, np.ndarray]:
    """Runs the graph on one input and returns every tensor by name."""
    ids = np.asarray(ids, np.int32)
    if ids.ndim != 1 or not 1 <= len(ids) <= graph.max_len:
        raise ValueError(f"input must be 1..{graph.max_len} token ids, got {len(ids)}")
    if ids.min() < 0 or ids.max() >= graph.vocab:
        bad = int(np.argmax((ids < 0) | (ids >= graph.vocab)))
        raise ValueError(f"token id {ids[bad]} at {bad} >= vocab {graph.vocab}")
    env = dict(graph.weights)
    env[INPUT] = ids
    for node in graph.nodes:
        try:
            args = [env[i] for i in node.inputs]
        except KeyError as e:
            raise GraphError(f"node {node.name!r} ({node.op}): input {e.args[0]!r} is not defined before it") from None
        try:
            env[node.outputs[0]] = run_node(node, args)
        except GraphError:
            raise
        except (ValueError, IndexError, TypeError, KeyError, ArithmeticError) as e:
            raise GraphError(f"node {node.name!r} ({node.op}): {e}") from None
    if OUTPUT not in env:
        raise GraphError(f"no node produces the output {OUTPUT!r}")
    return env


def run(graph: Graph, ids) -> np.ndarray:
    """Integer logits [C] for one input of token ids."""
    return trace(graph, ids)[OUTPUT].reshape(-1)


def check_tables(graph: Graph) -> None:
    """Every table a Gather reads against every id that can index it, for any input: token ids
    up to V-1, positions up to L-1, segment ids 1..2, or a constant's values. The C kernel does
    not check (an id past the table reads past the weight array), so this must hold statically;
    an index computed any other way has no proven range and is refused."""
    V, L = graph.vocab, graph.max_len
    ranges = {INPUT: (0, V - 1, f"token ids up to {V - 1} (tinylm.vocab {V})")}
    for name, w in graph.weights.items():
        if w.dtype.kind in "iu" and w.ndim <= 1 and w.size:
            ranges[name] = (int(w.min()), int(w.max()), f"values {int(w.min())}..{int(w.max())} (constant {name!r})")
    for node in graph.nodes:
        out = node.outputs[0]
        if node.op == "PositionIds":
            ranges[out] = (0, L - 1, f"positions up to {L - 1} (tinylm.max_len {L})")
        elif node.op == "SegmentIds":
            ranges[out] = (1, 2, "segment ids up to 2 (1 up to the first [SEP], 2 after)")
        elif node.op == "Gather":
            data, idx = node.inputs
            if idx not in ranges:
                raise GraphError(f"node {node.name!r} (Gather): cannot bound the index {idx!r}: it must be "
                                 f"{INPUT}, PositionIds, SegmentIds or a constant")
            lo, hi, why = ranges[idx]
            table = graph.weights.get(data)
            if table is not None and table.ndim == 2 and (lo < 0 or hi >= table.shape[0]):
                raise GraphError(f"node {node.name!r} (Gather): table {data!r} has {table.shape[0]} rows "
                                 f"but its index {idx!r} takes {why}")


def probe_inputs(graph: Graph) -> list[np.ndarray]:
    """Inputs the load-time check runs: lengths 1, 2, 3, L/2, L-1 and L, each spanning token ids
    0..V-1 with a [SEP] in the middle, so that segment 2, the largest id and both length extremes
    all occur. (Index ranges for every input are proven by check_tables; these catch shapes.)"""
    V, L = graph.vocab, graph.max_len
    probes = []
    for n in sorted({1, 2, 3, L // 2, L - 1, L} & set(range(1, L + 1))):
        ids = np.linspace(0, V - 1, n).round().astype(np.int32) if n > 1 else np.array([V - 1], np.int32)
        if n >= 2 and ops.SEP_ID < V:
            ids[(n - 1) // 2] = ops.SEP_ID
        probes.append(ids)
    return probes


def check_shapes(graph: Graph, where: str | Path = "") -> None:
    """Tables against their indices, then every node on the probe inputs; the output is [1, C]."""
    prefix = f"{where}: " if where else ""
    try:
        check_tables(graph)
    except GraphError as e:
        raise GraphError(prefix + str(e)) from None
    for ids in probe_inputs(graph):
        try:
            out = trace(graph, ids)[OUTPUT]
        except GraphError as e:
            raise GraphError(prefix + str(e)) from None
        expected = (1, max(1, len(graph.label_names)))
        if out.shape != expected or out.dtype != np.int32:
            raise GraphError(f"{prefix}output {OUTPUT!r} is {out.dtype}{list(out.shape)}, expected int32{list(expected)}")


def shape_templates(graph: Graph) -> dict[str, tuple]:
    """Shape of every activation with 'n' where it grows with the input length."""
    a = trace(graph, np.full(2, 2, np.int32))
    b = trace(graph, np.full(3, 2, np.int32))
    out = {}
    for name, x in a.items():
        if name in graph.weights:
            continue
        y = b[name]
        dims = []
        for da, db in zip(x.shape, y.shape):
            if da == db:
                dims.append(da)
            elif (da, db) == (2, 3):
                dims.append("n")
            else:
                raise GraphError(f"tensor {name!r}: dimension grows as {da}->{db}, only n is supported")
        out[name] = (tuple(dims), x.dtype)
    return out
