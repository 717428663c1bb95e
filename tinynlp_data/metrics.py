"""Task metrics in plain numpy: accuracy, F1 (of class 1), Matthews correlation, Spearman."""
from __future__ import annotations

import numpy as np


def accuracy(pred, gold) -> float:
    pred, gold = np.asarray(pred), np.asarray(gold)
    return float((pred == gold).mean()) if len(gold) else 0.0


def f1(pred, gold, positive: int = 1) -> float:
    pred, gold = np.asarray(pred) == positive, np.asarray(gold) == positive
    tp = float((pred & gold).sum())
    denom = float(pred.sum() + gold.sum())
    return 2 * tp / denom if denom else 0.0


def matthews(pred, gold) -> float:
    """Multiclass Matthews correlation (Gorodkin's R_K); equals the binary MCC for 2 classes."""
    pred, gold = np.asarray(pred), np.asarray(gold)
    k = int(max(pred.max(initial=0), gold.max(initial=0))) + 1
    c = np.zeros((k, k), np.float64)
    np.add.at(c, (gold, pred), 1)
    t, p, n = c.sum(1), c.sum(0), c.sum()
    num = np.trace(c) * n - t @ p
    den = np.sqrt(n * n - p @ p) * np.sqrt(n * n - t @ t)
    return float(num / den) if den else 0.0


def _ranks(x) -> np.ndarray:
    x = np.asarray(x, np.float64)
    order = np.argsort(x, kind="mergesort")
    ranks = np.empty(len(x))
    ranks[order] = np.arange(len(x))
    # average ranks over ties
    _, inv, counts = np.unique(x, return_inverse=True, return_counts=True)
    sums = np.zeros(len(counts))
    np.add.at(sums, inv, ranks)
    return (sums / counts)[inv]


def spearman(pred, gold) -> float:
    a, b = _ranks(pred), _ranks(gold)
    a, b = a - a.mean(), b - b.mean()
    den = np.sqrt((a * a).sum() * (b * b).sum())
    return float((a * b).sum() / den) if den else 0.0


METRICS = {"accuracy": accuracy, "f1": f1, "matthews": matthews, "spearman": spearman}


def compute_metric(name: str, pred, gold) -> float:
    return METRICS[name](pred, gold)


def glue_average(scores: dict, require_all: bool = False) -> float:
    """Unweighted mean of the GLUE tasks' metric values ({task: score}, each in [0, 1]).

    Each task contributes its registry metric (Matthews for CoLA, F1 for MRPC/QQP, Spearman for
    STS-B, accuracy otherwise). With require_all, all 9 tasks must be present."""
    from .registry import GLUE, get_task
    for name in scores:
        if get_task(name).suite != "glue":
            raise ValueError(f"{name!r} is not a GLUE task; GLUE tasks: {', '.join(GLUE)}")
    missing = [t for t in GLUE if t not in scores]
    if require_all and missing:
        raise ValueError(f"GLUE average needs all 9 tasks; missing: {', '.join(missing)}")
    if not scores:
        raise ValueError("GLUE average of no tasks")
    return float(np.mean([float(v) for v in scores.values()]))
