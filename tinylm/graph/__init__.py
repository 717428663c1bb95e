"""The integer graph: its file format (format.py), the integer semantics of every op
(ops.py, the spec) and the interpreter that runs a graph with them (reference.py).

Numpy only: codegen, the harness and the quantizers all stand on this package, and it imports
none of them (nor JAX)."""
from __future__ import annotations

from pathlib import Path

from tinylm.graph.format import (DOMAIN, FORMAT_VERSION, INPUT, OPS, OPSET, OUTPUT, Graph,  # noqa: F401
                                 GraphBuilder, GraphError, Node, pack_tokenizer, read, save)


def load(path: str | Path) -> Graph:
    """Reads and checks a model file: the format, then shapes and dtypes by running the
    reference on inputs of several lengths (tinylm/graph/reference.py check_shapes). Every failure
    is a one-line GraphError."""
    from tinylm.graph.reference import check_shapes
    graph = read(path)
    check_shapes(graph, path)
    return graph
