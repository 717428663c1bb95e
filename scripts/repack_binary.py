"""Repacks binary model files written before tinylm/quant/repack.py (uint32 token sign table,
int32 Requantize shifts) in place, without retraining, after checking that the repacked graph gives
the old one's integer reference logits on the task's validation split.

    .venv/bin/python scripts/repack_binary.py models/binary-*.onnx [--limit N] [--data-dir D]

Per file: the dtypes changed, weight bytes before -> after, and the examples whose logits were
compared (all of the validation split unless --limit). A file is replaced only if every logit is
equal; a file already repacked is left as it is.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tinylm import graph as G  # noqa: E402
from tinylm.graph import reference  # noqa: E402
from tinylm.quant.repack import repack_binary  # noqa: E402
from tinylm.tokenizer import encode, load_tokenizer  # noqa: E402


def weight_bytes(g) -> int:
    return sum(w.nbytes for w in g.weights.values())


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("paths", nargs="+", type=Path)
    ap.add_argument("--limit", type=int, default=None, help="compare logits on the first N validation examples")
    ap.add_argument("--data-dir", default=None)
    args = ap.parse_args()
    from tinynlp_data import load_split
    status = 0
    for path in args.paths:
        old_g = G.load(path)
        new_model, changed = repack_binary(onnx.load(str(path)))
        if not changed:
            print(f"{path}: already repacked ({weight_bytes(old_g):,} weight bytes)")
            continue
        fd, tmp = tempfile.mkstemp(suffix=".onnx", dir=path.parent)
        os.close(fd)
        try:
            G.save(new_model, tmp)
            new_g = G.load(tmp)
            val = load_split(old_g.meta["task"], "validation", args.data_dir)
            val = val[:args.limit] if args.limit else val
            tok = load_tokenizer(old_g.meta["tokenizer"])
            t0, bad = time.time(), 0
            for e in val:
                ids = encode(tok, e.text, e.text_b, old_g.max_len)
                bad += not np.array_equal(reference.run(old_g, ids), reference.run(new_g, ids))
            kinds = sorted({f"{a}->{b}" for a, b in changed.values()})
            print(f"{path}: {len(changed)} weights repacked ({', '.join(kinds)}); weight bytes "
                  f"{weight_bytes(old_g):,} -> {weight_bytes(new_g):,}; reference logits equal on "
                  f"{len(val) - bad} / {len(val)} validation examples of {old_g.meta['task']} "
                  f"({time.time() - t0:.0f} s)")
            if bad:
                print(f"{path}: {bad} examples differ: file left unchanged")
                status = 1
                continue
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    return status


if __name__ == "__main__":
    raise SystemExit(main())
