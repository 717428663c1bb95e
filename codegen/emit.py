"""Lowers the quantized graph to C: weights.c/weights.h (const, aligned, in flash) and
model.c (one static arena, straight-line kernel calls, llama2.c style).

Every node becomes exactly one call of the kernel its op names in tinylm/ops.py, with
dimensions written as C expressions of `n`, the number of tokens of this input.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from tinylm.graph import INPUT, OUTPUT, Graph, GraphError
from tinylm.reference import shape_templates

from . import planner

CTYPE = {np.dtype(np.int8): "int8_t", np.dtype(np.int32): "int32_t", np.dtype(np.int64): "int32_t",
         np.dtype(np.uint16): "uint16_t"}
INT32_MAX = 2 ** 31 - 1


class BoundError(GraphError):
    """An int32 accumulator could overflow: the model is refused with the node named."""


@dataclass
class Lowered:
    model_c: str
    weights_c: str
    weights_h: str
    buffers: list            # planner.Buffer, with offsets
    arena_bytes: int
    weights: list            # (c name, onnx name, dtype, shape, bytes)
    activations: dict        # name -> (shape template, dtype)


def c_ident(name: str, prefix: str) -> str:
    return prefix + re.sub(r"[^0-9A-Za-z_]", "_", name)


def dim_expr(d) -> str:
    return "n" if d == "n" else str(d)


def size_expr(shape) -> str:
    parts = [dim_expr(d) for d in shape]
    return "*".join(parts) if parts else "1"


def size_at(shape, n: int) -> int:
    return int(np.prod([n if d == "n" else d for d in shape], dtype=np.int64)) if shape else 1


def check_bounds(graph: Graph, shapes) -> None:
    """Largest |value| of every int32 tensor, proved from shapes and weights."""
    bound = {INPUT: graph.vocab}
    for name, w in graph.weights.items():
        bound[name] = int(np.abs(w.astype(np.int64)).max()) if w.size else 0
    for node in graph.nodes:
        out = node.outputs[0]
        ins = [bound.get(i, 128) for i in node.inputs]
        if node.op == "MatMulInteger":
            k = shapes[node.inputs[0]][0][1] if node.inputs[0] in shapes else graph.weights[node.inputs[0]].shape[1]
            k = graph.max_len if k == "n" else k
            b = k * ins[0] * ins[1]
        elif node.op == "Add":
            b = ins[0] + ins[1]
        elif node.op == "PositionIds":
            b = graph.max_len
        elif node.op == "Gather":
            b = ins[0]
        else:
            b = 128
        if b > INT32_MAX:
            raise BoundError(f"node {node.name!r} ({node.op}): accumulator bound {b} exceeds int32; "
                             "the model could overflow on the device")
        bound[out] = b


def lower(graph: Graph) -> Lowered:
    shapes = shape_templates(graph)
    check_bounds(graph, shapes)
    L = graph.max_len

    # --- weights: const arrays in flash
    wnames, weights, wdecl, wdefs = {}, [], [], []
    for name, arr in graph.weights.items():
        arr = arr.astype(np.int32) if arr.dtype == np.int64 else arr
        ctype = CTYPE[arr.dtype]
        cname = c_ident(name, "w_")
        wnames[name] = cname
        count = max(1, arr.size)
        weights.append((cname, name, str(arr.dtype), list(arr.shape), arr.nbytes))
        wdecl.append(f"extern const {ctype} {cname}[{count}];  /* {name} {list(arr.shape)} */")
        wdefs.append(f"const {ctype} {cname}[{count}] __attribute__((aligned(4))) = {{\n"
                     + _c_array(arr.reshape(-1)) + "\n};")

    # --- activations: one arena, offsets from the liveness planner
    sizes = {t: size_at(shp, L) * np.dtype(dt).itemsize for t, (shp, dt) in shapes.items() if t != INPUT}
    buffers = planner.lifetimes(graph.nodes, sizes, {OUTPUT})
    arena = planner.plan(buffers)
    planner.check(buffers)
    anames = {INPUT: "ids"}
    decls = []
    for buf in sorted(buffers, key=lambda b: b.first):
        shp, dt = shapes[buf.name]
        cname = c_ident(buf.name, "t_")
        anames[buf.name] = cname
        decls.append(f"    {CTYPE[np.dtype(dt)]} *const {cname} = ({CTYPE[np.dtype(dt)]} *)(arena + {buf.offset});"
                     f"  /* {list(shp)} */")

    def ref(t):
        return wnames.get(t) or anames[t]

    def shape(t):
        if t in shapes:
            return shapes[t][0]
        return tuple(graph.weights[t].shape)

    calls = []
    for node in graph.nodes:
        i, o, a = node.inputs, ref(node.outputs[0]), node.attrs
        calls.append(f"    /* {node.name} */")
        if node.op == "Gather":
            rows, cols = shape(i[0])
            count = dim_expr(shape(i[1])[0])
            calls.append(f"    gather_s8({ref(i[0])}, {dim_expr(rows)}, {dim_expr(cols)}, {ref(i[1])}, {count}, {o});")
        elif node.op == "PositionIds":
            calls.append(f"    position_ids_s32(n, {o});")
        elif node.op == "MatMulInteger":
            m, k = shape(i[0])
            _, nn = shape(i[1])
            calls.append(f"    matmul_s8_s32({ref(i[0])}, {ref(i[1])}, {o}, {dim_expr(m)}, {dim_expr(k)}, {dim_expr(nn)});")
        elif node.op == "Add":
            r, c = shape(i[0])
            b_rows = dim_expr(r) if tuple(shape(i[1])) == tuple(shape(i[0])) else "1"
            calls.append(f"    add_s32({ref(i[0])}, {ref(i[1])}, {o}, {dim_expr(r)}, {dim_expr(c)}, {b_rows});")
        elif node.op == "Requantize":
            r, c = shape(i[0])
            ch = graph.weights[i[1]].size
            calls.append(f"    requantize_s32_s8({ref(i[0])}, {ref(i[1])}, {ref(i[2])}, {ch}, {o}, {dim_expr(r)}, {dim_expr(c)});")
        elif node.op == "AddInt8":
            calls.append(f"    add_s8({ref(i[0])}, {ref(i[1])}, {o}, {size_expr(shape(i[0]))}, "
                         f"{a['ma']}, {a['mb']}, {a['shift']});")
        elif node.op == "Lut":
            calls.append(f"    lut_s8({ref(i[0])}, {ref(i[1])}, {o}, {size_expr(shape(i[0]))});")
        elif node.op == "Transpose":
            r, c = shape(i[0])
            calls.append(f"    transpose_s8({ref(i[0])}, {o}, {dim_expr(r)}, {dim_expr(c)});")
        elif node.op == "SoftmaxInt":
            r, c = shape(i[0])
            k = graph.weights[i[1]].size
            calls.append(f"    softmax_s32_s8({ref(i[0])}, {o}, {dim_expr(r)}, {dim_expr(c)}, "
                         f"{a['multiplier']}, {a['shift']}, {ref(i[1])}, {k});")
        elif node.op == "RMSNormInt":
            r, c = shape(i[0])
            calls.append(f"    rmsnorm_s8({ref(i[0])}, {ref(i[1])}, {o}, {dim_expr(r)}, {dim_expr(c)}, "
                         f"{a['multiplier']}, {a['shift']});")
        else:  # graph.load() already refuses unknown ops
            raise GraphError(f"node {node.name!r}: no kernel for op {node.op}")

    num_labels = max(1, len(graph.label_names))
    model_c = MODEL_C.format(
        name=graph.name, hash=graph.sha256[:16], vocab=graph.vocab, max_len=L, labels=num_labels,
        arena=max(arena, 8), decls="\n".join(decls), calls="\n".join(calls), out=anames[OUTPUT])
    weights_h = WEIGHTS_H.format(decls="\n".join(wdecl))
    weights_c = '#include "weights.h"\n\n' + "\n\n".join(wdefs) + "\n"
    return Lowered(model_c, weights_c, weights_h, buffers, arena, weights, shapes)


def _c_array(flat: np.ndarray, per_line: int = 24) -> str:
    if flat.size == 0:
        return "    0"
    vals = [str(int(v)) for v in flat]
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
    "{name}", "{hash}", {vocab}, {max_len}, {labels}, ARENA_BYTES,
}};

int tinylm_model_run(const int32_t *ids, int32_t n, int32_t *logits) {{
{decls}

{calls}

    for (int32_t j = 0; j < {labels}; j++) logits[j] = {out}[j];
    return 0;
}}
"""
