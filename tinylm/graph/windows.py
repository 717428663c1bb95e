"""Inputs longer than the model's L: overlapping windows whose logits are summed.

An encoded input is [first] body [last] (for a text: [CLS] tokens [SEP]). When it has more than
L ids, the model runs on windows [first] body[s : s + W] [last] with W = L - 2 and starts
s = 0, stride, 2 * stride, ... up to the first window that reaches the end of the body, and the
logits of all windows are added. A bag-of-words model sees a whole review; with windows ours
does too, at the cost of one inference per window.

This is the spec of the device's rule (firmware/runtime/windows.c runs it on the board, bit for
bit): integer logits are summed in 64 bits and saturated to int32, which never triggers for
real heads (|logit| < 2^24, at most TINYLM_INPUT_MAX / stride windows) but keeps both sides
defined for any input.
"""
from __future__ import annotations

from typing import Callable

import numpy as np


class WindowError(ValueError):
    pass


def check(L: int, stride: int, max_input: int) -> None:
    """A window policy a build can run: 1 <= stride <= L - 2 and max_input >= L."""
    if L < 3:
        raise WindowError(f"windows need a model of at least 3 tokens (L = {L})")
    if not 1 <= stride <= L - 2:
        raise WindowError(f"window stride {stride} must be in 1..{L - 2} (L - 2 for L = {L})")
    if max_input < L:
        raise WindowError(f"--max-input {max_input} is below the model's L = {L}: nothing to window")
    if max_input > 65535:
        raise WindowError(f"--max-input {max_input} is over 65535 tokens")


def spans(n: int, L: int, stride: int) -> list[tuple[int, int]]:
    """(start, length) into the body (ids[1:n-1]) of each window of an n-id input."""
    if n <= L:
        return [(0, n - 2)]
    m, W = n - 2, L - 2
    out, s = [], 0
    while True:
        out.append((s, min(W, m - s)))
        if s + W >= m:
            return out
        s += stride


def windows(ids, L: int, stride: int) -> list[list[int]]:
    """The inputs the model runs on: the ids themselves when they fit, else their windows."""
    ids = [int(i) for i in ids]
    if len(ids) <= L:
        return [ids]
    first, body, last = ids[0], ids[1:-1], ids[-1]
    return [[first, *body[s:s + k], last] for s, k in spans(len(ids), L, stride)]


def run(run_one: Callable[[list[int]], np.ndarray], ids, L: int, stride: int | None) -> np.ndarray:
    """The summed logits of run_one over the windows of ids (stride None: one window, the input
    as it is). Integer logits are summed as the device sums them; float ones in float."""
    if not stride or len(ids) <= L:
        return np.asarray(run_one(list(ids)))
    outs = [np.asarray(run_one(w)) for w in windows(ids, L, stride)]
    if outs[0].dtype.kind in "iu":
        total = np.sum(np.stack(outs).astype(np.int64), axis=0)
        return np.clip(total, -2 ** 31, 2 ** 31 - 1).astype(np.int32)
    return np.sum(np.stack(outs), axis=0)
