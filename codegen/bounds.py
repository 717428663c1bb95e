"""The int32 overflow proof codegen runs before it emits C: from shapes and weights, the largest
|value| every int32 tensor can take. A model whose accumulators could pass int32 is refused,
naming the node (tinylm/graph/ops.py assumes exact int32 sums everywhere)."""
from __future__ import annotations

import numpy as np

from tinylm.graph import INPUT, Graph, GraphError

from . import binary

INT32_MAX = 2 ** 31 - 1


class BoundError(GraphError):
    """An int32 accumulator could overflow: the model is refused with the node named."""


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
        elif node.op == "SegmentIds":
            b = 2
        elif node.op == "AttentionInt":
            d = shapes[node.inputs[0]][0][1] if node.inputs[0] in shapes else graph.weights[node.inputs[0]].shape[1]
            scores = d * ins[0] * ins[1]              # q . kv over d
            acc = graph.max_len * 127 * ins[1]        # sum_j p_j * kv_j, p <= 127
            b = max(scores, acc)
            if b > INT32_MAX:
                what = "scores q.kv" if scores > INT32_MAX else "sum of p * kv"
                raise BoundError(f"node {node.name!r} ({node.op}): accumulator bound {b} ({what}) exceeds "
                                 "int32; the model could overflow on the device")
            b = 128
        elif node.op == "CausalDepthwiseConvInt":
            k = graph.weights[node.inputs[1]].shape[0] if node.inputs[1] in graph.weights else graph.max_len
            b = ins[2] + min(k, graph.max_len) * ins[0] * ins[1]
        else:
            b = binary.bound(node, 128, shapes, graph.weights)
        if b > INT32_MAX:
            raise BoundError(f"node {node.name!r} ({node.op}): accumulator bound {b} exceeds int32; "
                             "the model could overflow on the device")
        bound[out] = b


# Ops whose output row i depends only on row i of their "row" inputs: a run of them can be
# executed a few rows at a time (a row tile), so tensors that live only inside the run need
# tile-sized buffers instead of L-row ones. op -> (row inputs, context inputs); every other
# input must be a weight. Context inputs are read whole (AttentionInt's keys/values, the
# convolution's window of earlier rows), so they must be complete before the run starts.
