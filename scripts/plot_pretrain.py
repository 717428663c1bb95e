"""Masked-LM loss and masked-token accuracy against tokens seen, for pretraining runs.

    .venv/bin/python scripts/plot_pretrain.py models/embbert-pre:"corpus, flax init" \
        runs/tapt-ag_news:"ag_news TAPT, delta init" --out docs/pretrain-curves.png

Reads each run's log.jsonl (the lines `tinylm pretrain` writes); a moving mean over 10 log lines
smooths the per-batch noise. Needs matplotlib (`pip install matplotlib`; not a test dependency).
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np


def curve(run: Path):
    rows = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines() if line.strip()]
    rows = [r for r in rows if "mlm_loss" in r and "tokens" in r]
    if not rows:
        raise SystemExit(f"{run}/log.jsonl: no pretraining log lines")
    t = np.array([r["tokens"] for r in rows], float)
    smooth = lambda v: np.convolve(v, np.ones(10) / 10, mode="valid") if len(v) >= 10 else np.asarray(v)
    k = len(smooth(t))
    return t[len(t) - k:], smooth([r["mlm_loss"] for r in rows]), smooth([r["mlm_acc"] for r in rows])


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+", help="RUN_DIR[:label]")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.8))
    for spec in args.runs:
        path, _, label = spec.partition(":")
        t, loss, acc = curve(Path(path))
        a.plot(t / 1e6, loss, label=label or path)
        b.plot(t / 1e6, 100 * acc, label=label or path)
    a.set(xlabel="tokens seen (M)", ylabel="masked-LM loss (train batches)", title="MLM loss")
    b.set(xlabel="tokens seen (M)", ylabel="masked-token accuracy (%)", title="masked-token accuracy")
    for ax in (a, b):
        ax.grid(alpha=0.3)
    b.legend(fontsize=8)
    fig.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=110)
    print(args.out)


if __name__ == "__main__":
    main()
