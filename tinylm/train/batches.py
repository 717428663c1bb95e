"""Batches for finetuning and prediction: padded to their longest example (rounded up to a
multiple of 16, so a few jit shapes serve a whole split), and windows over inputs longer than
max_len (tinylm/graph/windows.py), as the device runs them."""
from __future__ import annotations

import numpy as np


def bucket(n: int, max_len: int) -> int:
    return min(max_len, max(16, -(-n // 16) * 16))


def batches(ids: list[list[int]], order: np.ndarray, batch_size: int, max_len: int):
    """Fixed batch size (the last one padded with empty rows), length padded to a multiple of 16."""
    for i in range(0, len(order), batch_size):
        idx = order[i:i + batch_size]
        T = bucket(max(len(ids[j]) for j in idx), max_len)
        x = np.zeros((batch_size, T), np.int32)
        for r, j in enumerate(idx):
            x[r, :len(ids[j])] = ids[j]
        yield idx, x


def predict_logits(apply_fn, params, ids, batch_size, max_len, num_out):
    out = np.zeros((len(ids), num_out), np.float32)
    order = np.argsort([len(x) for x in ids], kind="stable")   # similar lengths together
    for idx, x in batches(ids, order, batch_size, max_len):
        out[idx] = np.asarray(apply_fn(params, x))[:len(idx)]
    return out


def random_windows(ids: list[list[int]], L: int, stride: int, rng) -> list[list[int]]:
    """One window of each input longer than L, drawn at random: over the epochs training sees
    every part of a long text, in the windows the device will run."""
    from tinylm.graph import windows
    out = []
    for x in ids:
        ws = windows.windows(x, L, stride)
        out.append(ws[int(rng.integers(len(ws)))] if len(ws) > 1 else x)
    return out


def predict_windowed(apply_fn, params, ids, L: int, stride: int | None, num_out: int) -> np.ndarray:
    """Float logits [N, C], summed over the windows of each input (stride None: no windows)."""
    if not stride:
        return predict_logits(apply_fn, params, ids, 64, L, num_out)
    from tinylm.graph import windows
    parts = [windows.windows(x, L, stride) for x in ids]
    flat = predict_logits(apply_fn, params, [w for p in parts for w in p], 64, L, num_out)
    ends = np.cumsum([len(p) for p in parts])
    return np.stack([flat[e - len(p):e].sum(0) for p, e in zip(parts, ends)])
