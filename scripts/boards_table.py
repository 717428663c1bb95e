#!/usr/bin/env python3
"""Builds one model for every board and, on QEMU boards, evaluates it on the first N examples
of a task: prints the markdown table of docs/results.md ("Boards").

    .venv/bin/python scripts/boards_table.py [--model models/default.onnx] [--task emotion] [--limit 20]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from codegen.build import DEFAULT_MODEL, build  # noqa: E402
from codegen.toolchain import known_boards, load_board  # noqa: E402
from tinylm.harness.evaluate import evaluate  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, default=DEFAULT_MODEL)
    ap.add_argument("--task", default="emotion")
    ap.add_argument("--limit", type=int, default=20)
    ap.add_argument("--out", type=Path, default=REPO / "build" / "boards")
    a = ap.parse_args()
    print("| board | flash (B) | RAM (B) | arena (B) | budget flash / RAM | instructions per inference "
          f"(mean of {a.limit}) | mismatches | accuracy ({a.limit}) |")
    print("|---|---|---|---|---|---|---|---|")
    for name in known_boards():
        board = load_board(name)
        out = a.out / name
        mem = build(a.model, name, out)
        budget = f"{board['flash_bytes'] // 1024} KB / {board['ram_bytes'] // 1024} KB"
        if board.get("runs_on") == "qemu":
            res = evaluate(out, a.task, limit=a.limit, json_out=out / "eval.json")
            cost = f"{res['instructions_mean']:,.0f}"
            rest = f"{res['mismatches']} | {res['score']:.2f}"
        else:
            cost, rest = "needs the board (DWT cycles)", "- | -"
        print(f"| {name} ({board.get('qemu_machine', 'hardware')}) | {mem['flash_bytes']:,} | {mem['ram_bytes']:,} "
              f"| {mem['arena_bytes']:,} | {budget} | {cost} | {rest} |", flush=True)


if __name__ == "__main__":
    main()
