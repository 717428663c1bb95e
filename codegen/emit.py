"""Lowers the quantized graph to C: weights.c/weights.h (const, aligned, in flash) and
model.c (one static arena, straight-line kernel calls, llama2.c style).

Every node becomes exactly one call of the kernel its op names in tinylm/graph/ops.py, with
dimensions written as C expressions of `n`, the number of tokens of this input.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tinylm.graph import INPUT, OUTPUT, Graph
from tinylm.graph.ops import attention_scratch_bytes
from tinylm.graph.reference import shape_templates

from . import binary, fuse, planner
from .bounds import BoundError, check_bounds  # noqa: F401  (part of this module's interface)
from .names import c_comment, c_idents, c_string, check_model_name
from .scores import logit_scale_q

# Gather's kernel by table dtype: int8 rows, bit-packed uint32 rows, bit-packed rows of <= 16 bits
# a word stored as uint16 (zero-extended to uint32 words, tinylm.graph.ops.gather)
GATHER = {np.dtype(np.int8): "gather_s8", np.dtype(np.uint32): "gather_b32", np.dtype(np.uint16): "gather_b16"}
CTYPE = {np.dtype(np.int8): "int8_t", np.dtype(np.int32): "int32_t", np.dtype(np.int64): "int32_t",
         np.dtype(np.uint16): "uint16_t", np.dtype(np.uint32): "uint32_t"}


@dataclass
class Lowered:
    model_c: str
    weights_c: str
    weights_h: str
    buffers: list            # planner.Buffer, with offsets
    arena_bytes: int
    weights: list            # (c name, onnx name, dtype, shape, bytes)
    activations: dict        # name -> (shape template, dtype)


def dim_expr(d) -> str:
    return "n" if d == "n" else str(d)


def size_expr(shape) -> str:
    parts = [dim_expr(d) for d in shape]
    return "*".join(parts) if parts else "1"


def size_at(shape, n: int) -> int:
    return int(np.prod([n if d == "n" else d for d in shape], dtype=np.int64)) if shape else 1


TILEABLE = {
    "MatMulInteger": ((0,), ()),
    "Add": ((0, 1), ()),
    "Requantize": ((0,), ()),
    "Lut": ((0,), ()),
    "AddInt8": ((0, 1), ()),
    "RMSNormInt": ((0,), ()),
    "Gather": ((1,), ()),
    "AttentionInt": ((0,), (1,)),
    "CausalDepthwiseConvInt": ((), (0,)),
    fuse.FC: ((0,), ()), **binary.TILEABLE,
}
TILE_ROWS = 1   # rows per tile: 1 keeps the RAM of a fused EmbBERT layer at ~2 KB


@dataclass
class Region:
    start: int
    end: int          # inclusive node indices


def _tile_regions(graph: Graph, shapes) -> tuple[list[Region], dict]:
    """Maximal runs (>= 2 nodes) of tileable nodes; returns them and, per node index, the
    (row inputs, context inputs) of a node that sits in a run."""
    def row_dim_n(t):
        return t in shapes and len(shapes[t][0]) >= 1 and shapes[t][0][0] == "n"

    info = {}
    for i, node in enumerate(graph.nodes):
        spec = TILEABLE.get(node.op)
        if spec is None or not row_dim_n(node.outputs[0]) or node.outputs[0] == OUTPUT:
            continue
        rows, ctx = spec
        rows = [node.inputs[j] for j in rows if node.inputs[j] not in graph.weights]
        ctx = [node.inputs[j] for j in ctx]
        others = [t for j, t in enumerate(node.inputs) if t not in rows and t not in ctx]
        if any(t not in graph.weights for t in others) or not all(row_dim_n(t) for t in rows):
            continue
        if any(t not in shapes and t not in graph.weights for t in ctx):
            continue
        info[i] = (rows, ctx)
    # a tensor read whole (context) must be complete before its readers run: its producer
    # closes the run it belongs to
    context = {t for v in info.values() for t in v[1]}
    regions, cur, produced = [], None, set()
    for i, node in enumerate(graph.nodes):
        if i in info and cur is not None and not (produced & context):
            cur.end = i
        elif i in info:
            if cur is not None:
                regions.append(cur)
            cur, produced = Region(i, i), set()
        else:
            if cur is not None:
                regions.append(cur)
            cur, produced = None, set()
            continue
        produced.add(node.outputs[0])
    if cur is not None:
        regions.append(cur)
    return [r for r in regions if r.end > r.start], info


def lower(graph: Graph, tile_rows: int = TILE_ROWS, fused: bool = True) -> Lowered:
    check_model_name(graph.name)
    shapes = shape_templates(graph)
    check_bounds(graph, shapes)
    if fused:   # after the proof, which covers the fused kernels' partial sums (codegen/fuse.py)
        graph = binary.fuse(fuse.fuse(graph))
    L = graph.max_len

    # --- weights: const arrays in flash
    wnames, weights, wdecl, wdefs = c_idents(graph.weights, "w_", "weights"), [], [], []
    for name, arr in graph.weights.items():
        arr = arr.astype(np.int32) if arr.dtype == np.int64 else arr
        ctype = CTYPE[arr.dtype]
        cname = wnames[name]
        count = max(1, arr.size)
        weights.append((cname, name, str(arr.dtype), list(arr.shape), arr.nbytes))
        wdecl.append(f"extern const {ctype} {cname}[{count}];  /* {c_comment(name)} {list(arr.shape)} */")
        wdefs.append(f"const {ctype} {cname}[{count}] __attribute__((aligned(4))) = {{\n"
                     + _c_array(arr.reshape(-1)) + "\n};")

    # --- row tiles: which tensors only ever exist a tile at a time
    regions, tinfo = _tile_regions(graph, shapes)
    region_of = {i: r for r in regions for i in range(r.start, r.end + 1)}
    consumers: dict[str, list[int]] = {}
    for i, node in enumerate(graph.nodes):
        for t in node.inputs:
            consumers.setdefault(t, []).append(i)
    tile_local = set()
    for r in regions:
        for i in range(r.start, r.end + 1):
            t = graph.nodes[i].outputs[0]
            users = consumers.get(t, [])
            if t != OUTPUT and users and all(region_of.get(u) is r and t in tinfo[u][0] for u in users):
                tile_local.add(t)

    def rows_at(t):  # rows the buffer is sized for
        return tile_rows if t in tile_local else L

    # --- activations: one arena, offsets from the liveness planner
    sizes = {}
    for t, (shp, dt) in shapes.items():
        if t == INPUT:
            continue
        n_rows = rows_at(t)
        sizes[t] = size_at(shp, n_rows) * np.dtype(dt).itemsize
        if t in tile_local:
            sizes[t] = size_at(shp, 1) * np.dtype(dt).itemsize * tile_rows
    buffers = planner.lifetimes(graph.nodes, sizes, {OUTPUT})
    by_name = {b.name: b for b in buffers}
    for r in regions:   # full tensors touched by a tile loop live across the whole loop
        for i in range(r.start, r.end + 1):
            node = graph.nodes[i]
            for t in node.inputs + node.outputs:
                if t in by_name and t not in tile_local:
                    by_name[t].first = min(by_name[t].first, r.start)
                    by_name[t].last = max(by_name[t].last, r.end)
    scratch = {}
    for i, node in enumerate(graph.nodes):
        if node.op == "AttentionInt":
            d = shapes[node.inputs[1]][0][1]
            name = node.outputs[0] + ".scratch"
            scratch[i] = name
            buffers.append(planner.Buffer(name, attention_scratch_bytes(L, d), i, i))
    arena = planner.plan(buffers)
    planner.check(buffers)
    anames = {INPUT: "ids", **c_idents([b.name for b in buffers], "t_", "tensors")}
    decls = []
    for buf in sorted(buffers, key=lambda b: b.first):
        cname = anames[buf.name]
        if buf.name.endswith(".scratch") and buf.name not in shapes:
            decls.append(f"    int32_t *const {cname} = (int32_t *)(arena + {buf.offset});  /* scratch */")
            continue
        shp, dt = shapes[buf.name]
        shown = [f"{tile_rows} (tile)" if d == "n" and buf.name in tile_local else d for d in shp]
        decls.append(f"    {CTYPE[np.dtype(dt)]} *const {cname} = ({CTYPE[np.dtype(dt)]} *)(arena + {buf.offset});"
                     f"  /* {shown} */")

    def shape(t):
        if t in shapes:
            return shapes[t][0]
        return tuple(graph.weights[t].shape)

    def dtype(t):
        return graph.weights[t].dtype if t in graph.weights else np.dtype(shapes[t][1])

    def node_calls(i, node, tiled: bool) -> list[str]:
        row_in = set(tinfo[i][0]) if tiled else set()

        def ref(t, as_row=False):
            if t in wnames:
                return wnames[t]
            base = anames[t]
            if tiled and (as_row or t == node.outputs[0]) and t not in tile_local:
                shp = shape(t)
                stride = size_expr(shp[1:]) if len(shp) > 1 else "1"
                return f"({base} + r0 * {stride})" if stride != "1" else f"({base} + r0)"
            return base

        def dim(t, axis=0):
            d = shape(t)[axis]
            if tiled and axis == 0 and d == "n" and (t in row_in or t == node.outputs[0]):
                return "nr"
            return dim_expr(d)

        def size(t):
            return "*".join([dim(t, 0)] + [dim_expr(d) for d in shape(t)[1:]])

        i_, o, a = node.inputs, ref(node.outputs[0]), node.attrs
        R = lambda t: ref(t, t in row_in)  # noqa: E731
        out = [f"/* {c_comment(node.name)} */"]
        if node.op == "Gather":
            rows, cols = shape(i_[0])
            out.append(f"{GATHER[dtype(i_[0])]}({R(i_[0])}, {dim_expr(rows)}, {dim_expr(cols)}, "
                       f"{R(i_[1])}, {dim(i_[1])}, {o});")
        elif node.op == "PositionIds":
            out.append(f"position_ids_s32(n, {o});")
        elif node.op == "SegmentIds":
            out.append(f"segment_ids_s32({R(i_[0])}, n, {o});")
        elif node.op == "MatMulInteger":
            _, k = shape(i_[0])
            _, nn = shape(i_[1])
            out.append(f"matmul_s8_s32({R(i_[0])}, {R(i_[1])}, {o}, {dim(i_[0])}, {dim_expr(k)}, {dim_expr(nn)});")
        elif node.op == fuse.FC:
            _, k = shape(i_[0])
            _, nn = shape(i_[1])
            ch = graph.weights[i_[2]].size
            bias = wnames[a["bias"]] if a["bias"] else "NULL"
            lut = wnames[a["lut"]] if a["lut"] else "NULL"
            out.append(f"fully_connected_s8({R(i_[0])}, {R(i_[1])}, {bias}, {R(i_[2])}, {R(i_[3])}, {ch}, {lut}, "
                       f"{o}, {dim(i_[0])}, {dim_expr(k)}, {dim_expr(nn)});")
        elif node.op == "Add":
            _, c = shape(i_[0])
            b_rows = dim(i_[0]) if tuple(shape(i_[1])) == tuple(shape(i_[0])) else "1"
            out.append(f"add_s32({R(i_[0])}, {R(i_[1])}, {o}, {dim(i_[0])}, {dim_expr(c)}, {b_rows});")
        elif node.op == "Requantize":
            _, c = shape(i_[0])
            ch = graph.weights[i_[1]].size
            kernel = "requantize_s32_s8_sh8" if dtype(i_[2]) == np.int8 else "requantize_s32_s8"
            out.append(f"{kernel}({R(i_[0])}, {R(i_[1])}, {R(i_[2])}, {ch}, {o}, {dim(i_[0])}, {dim_expr(c)});")
        elif node.op == "AddInt8":
            out.append(f"add_s8({R(i_[0])}, {R(i_[1])}, {o}, {size(i_[0])}, {a['ma']}, {a['mb']}, {a['shift']});")
        elif node.op == "Lut":
            out.append(f"lut_s8({R(i_[0])}, {R(i_[1])}, {o}, {size(i_[0])});")
        elif node.op == "Transpose":
            r, c = shape(i_[0])
            out.append(f"transpose_s8({R(i_[0])}, {o}, {dim_expr(r)}, {dim_expr(c)});")
        elif node.op == "SoftmaxInt":
            r, c = shape(i_[0])
            k = graph.weights[i_[1]].size
            out.append(f"softmax_s32_s8({R(i_[0])}, {o}, {dim_expr(r)}, {dim_expr(c)}, "
                       f"{a['multiplier']}, {a['shift']}, {R(i_[1])}, {k});")
        elif node.op == "RMSNormInt":
            _, c = shape(i_[0])
            out.append(f"rmsnorm_s8({R(i_[0])}, {R(i_[1])}, {o}, {dim(i_[0])}, {dim_expr(c)}, "
                       f"{a['multiplier']}, {a['shift']});")
        elif node.op == "AttentionInt":
            _, d = shape(i_[0])
            k = graph.weights[i_[2]].size
            out.append(f"attention_s8({R(i_[0])}, {ref(i_[1])}, {o}, {dim(i_[0])}, {dim_expr(shape(i_[1])[0])}, "
                       f"{dim_expr(d)}, {a['multiplier']}, {a['shift']}, {R(i_[2])}, {k}, "
                       f"{a['out_multiplier']}, {a['out_shift']}, {anames[scratch[i]]});")
        elif node.op == "CausalDepthwiseConvInt":
            _, d = shape(i_[0])
            k = shape(i_[1])[0]
            t0, rows = ("r0", "nr") if tiled else ("0", dim_expr(shape(i_[0])[0]))
            out.append(f"causal_dwconv_s8_s32({ref(i_[0])}, {R(i_[1])}, {R(i_[2])}, {o}, {t0}, {rows}, "
                       f"{dim_expr(d)}, {k});")
        else:  # the binary ops (codegen/binary.py); it refuses an unknown op
            out.append(binary.call(node, shape, R, ref, dim, graph))
        return out

    calls = []
    i = 0
    starts = {r.start: r for r in regions}
    while i < len(graph.nodes):
        if i in starts:
            r = starts[i]
            calls.append(f"    /* row tiles of {tile_rows}: nodes {c_comment(graph.nodes[r.start].name)} .. "
                         f"{c_comment(graph.nodes[r.end].name)} */")
            calls.append(f"    for (int32_t r0 = 0; r0 < n; r0 += {tile_rows}) {{")
            calls.append(f"        const int32_t nr = (n - r0 < {tile_rows}) ? (n - r0) : {tile_rows};")
            calls.append("        (void)nr;")
            for j in range(r.start, r.end + 1):
                calls += ["        " + line for line in node_calls(j, graph.nodes[j], True)]
            calls.append("    }")
            i = r.end + 1
        else:
            calls += ["    " + line for line in node_calls(i, graph.nodes[i], False)]
            i += 1

    num_labels = max(1, len(graph.label_names))
    logit_q = logit_scale_q(graph.meta.get("logit_scale"))
    model_c = MODEL_C.format(
        name=c_comment(graph.name), name_c=c_string(graph.name), hash=graph.sha256[:16], vocab=graph.vocab,
        max_len=L, labels=num_labels, logit_scale=c_comment(str(graph.meta.get("logit_scale"))),
        logit_mult=logit_q[0], logit_shift=logit_q[1], arena=max(arena, 8), decls="\n".join(decls), calls="\n".join(calls), out=anames[OUTPUT])
    weights_h = WEIGHTS_H.format(decls="\n".join(wdecl))
    weights_c = '#include "weights.h"\n\n' + "\n\n".join(wdefs) + "\n"
    acts = {t: (tuple(tile_rows if d == "n" else d for d in shp) if t in tile_local else shp, dt)
            for t, (shp, dt) in shapes.items()}
    for i, name in scratch.items():
        acts[name] = ((attention_scratch_bytes(L, shapes[graph.nodes[i].inputs[1]][0][1]) // 4,), np.dtype(np.int32))
    return Lowered(model_c, weights_c, weights_h, buffers, arena, weights, acts)


def _c_array(flat: np.ndarray, per_line: int = 24) -> str:
    if flat.size == 0:
        return "    0"
    vals = [str(int(v)) + ("u" if flat.dtype == np.uint32 else "") for v in flat]
    return "\n".join("    " + ", ".join(vals[i:i + per_line]) + ","
                     for i in range(0, len(vals), per_line))


WEIGHTS_H = """/* Generated by tinylm codegen: model constants, placed in flash. Do not edit. */
#ifndef TINYLM_WEIGHTS_H
#define TINYLM_WEIGHTS_H
#include <stdint.h>

{decls}

#endif
"""

MODEL_C = """/* Generated by tinylm codegen from {name} (sha256 {hash}...). Do not edit.
 * One static arena, offsets planned at build time; every line of the forward pass is one kernel. */
#include "tinylm_model.h"
#include "tinylm_kernels.h"
#include "weights.h"

#define ARENA_BYTES {arena}
static int8_t arena[ARENA_BYTES] __attribute__((aligned(8)));

const tinylm_model_info_t tinylm_model_info = {{
    {name_c}, "{hash}", {vocab}, {max_len}, {labels}, ARENA_BYTES,
    {logit_mult}, {logit_shift},   /* logit scale {logit_scale} for the m-results scores (codegen/scores.py) */
}};

int tinylm_model_run(const int32_t *ids, int32_t n, int32_t *logits) {{
{decls}

{calls}

    for (int32_t j = 0; j < {labels}; j++) logits[j] = {out}[j];
    return 0;
}}
"""
