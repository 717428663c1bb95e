"""Cost of one inference by input length: device instructions/cycles, the model's MACs, and
host-side times of the `infer` command against a no-op round trip (what the serial link costs)."""
from __future__ import annotations

import time

import numpy as np

from tinylm.harness.evaluate import DeviceEngine, EvalError


# op -> MACs of one node, from the node and the traced tensors (ops not listed count 0)
MAC_COUNTERS = {
    "MatMulInteger": lambda node, env: (env[node.inputs[0]].shape[0] * env[node.inputs[0]].shape[1]
                                        * env[node.inputs[1]].shape[1]),
    # EmbBERT-Q: scores q.kv and p.kv for every query row
    "AttentionInt": lambda node, env: 2 * (env[node.inputs[0]].shape[0] * env[node.inputs[1]].shape[0]
                                           * env[node.inputs[0]].shape[1]),
    # causal taps that exist: sum over t of min(t + 1, k), per channel
    "CausalDepthwiseConvInt": lambda node, env: (env[node.inputs[0]].shape[1] * sum(
        min(t + 1, env[node.inputs[1]].shape[0]) for t in range(env[node.inputs[0]].shape[0]))),
}


def graph_macs(graph, n: int) -> int:
    """Multiply-accumulates of the whole graph for an input of n tokens."""
    from tinylm.graph.reference import trace
    env = trace(graph, np.full(n, 2, np.int32))
    return int(sum(MAC_COUNTERS[nd.op](nd, env) for nd in graph.nodes if nd.op in MAC_COUNTERS))


def measure_costs(build_dir, lengths: list[int], port: str | None = None, repeats: int = 5) -> list[dict]:
    eng = DeviceEngine(build_dir, port)
    for n in lengths:
        if not 1 <= n <= eng.max_len:
            raise ValueError(f"length {n} is outside 1..{eng.max_len}")
    eng.start()
    rows = []
    try:
        dev = eng.device
        rng = np.random.default_rng(0)
        for n in lengths:
            ids = [2] + list(rng.integers(5, eng.graph.vocab, n - 1)) if n > 1 else [2]
            dev.load(ids)
            infer_t, noop_t = [], []
            for _ in range(repeats):
                t0 = time.perf_counter()
                logits = dev.infer_loaded()
                t1 = time.perf_counter()
                dev.command("name")
                t2 = time.perf_counter()
                infer_t.append(t1 - t0)
                noop_t.append(t2 - t1)
            ref = eng.reference.run(eng.graph, ids).tolist()
            if logits != ref:   # a mismatch is a bug, never a tolerance
                raise EvalError(f"device logits {logits} != reference {ref} at {n} tokens")
            rows.append({"tokens": n, **dev.cost(), "macs": graph_macs(eng.graph, n),
                         "infer_ms": 1000 * float(np.median(infer_t)), "noop_ms": 1000 * float(np.median(noop_t))})
    finally:
        eng.stop()
    return rows
