"""Writes the evaluation sample that ships with tinylm (tinynlp_data/samples/): a seeded random
subset of a task's validation split, in the bundle format, for a first run without the data.

    .venv/bin/python scripts/make_sample.py --task emotion --n 200
"""
from __future__ import annotations

import argparse
import gzip
import json

import numpy as np

from tinynlp_data import get_task, load_split
from tinynlp_data.samples import sample_path

ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
ap.add_argument("--task", default="emotion")
ap.add_argument("--n", type=int, default=200)
ap.add_argument("--seed", type=int, default=0)
args = ap.parse_args()
task = get_task(args.task)
val = load_split(task, "validation")
pick = sorted(np.random.default_rng(args.seed).choice(len(val), size=min(args.n, len(val)), replace=False))
out = sample_path(task.name)
with gzip.GzipFile(out, "wb", mtime=0) as f:     # mtime 0: the same bytes on every run
    for i in pick:
        e = val[i]
        row = {"id": e.id, "text": e.text, "label": e.label} if e.text_b is None else \
            {"id": e.id, "text_a": e.text, "text_b": e.text_b, "label": e.label}
        f.write((json.dumps(row) + "\n").encode())
print(f"{out}: {len(pick)} of {len(val)} {task.name} validation examples (seed {args.seed})")
