#!/usr/bin/env python3
"""EmbBERT-Q on the device, task by task: quantize each finetuned float run, build it for a
board, and evaluate float / integer reference / firmware (QEMU) on the validation split.

    .venv/bin/python scripts/embbert_q_suite.py --runs runs/pre/bench-tinynlp --tasks emotion,snips \
        [--board qemu-m4] [--imdb-sample 2000] [--device-sample N] [--out docs/embbert_q_suite.json] \
        [--onnx-dir models] [--build-dir build]

Each stage writes its JSON under BUILD_DIR/eq-<task>/ and is skipped when that JSON is already
complete, so an interrupted suite resumes where it stopped. Prints a markdown table.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from codegen.build import build  # noqa: E402
from tinylm.harness.evaluate import evaluate  # noqa: E402
from tinylm.quant.embbert import quantize_run  # noqa: E402


def done(path: Path) -> dict | None:
    if path.is_file():
        res = json.loads(path.read_text())
        if res.get("complete"):
            return res
    return None


def run_task(task: str, run_dir: Path, board: str, sample: int | None, device_sample: int | None = None,
             onnx_dir: Path = REPO / "models", build_dir: Path = REPO / "build") -> dict:
    bdir = build_dir / f"eq-{task}"
    bdir.mkdir(parents=True, exist_ok=True)
    onnx_path = onnx_dir / f"embbert-q-{task}.onnx"      # an existing file is used as it is
    if not onnx_path.is_file():
        quantize_run(run_dir, onnx_path, name=f"embbert-q-{task}")
    mem = build(onnx_path, board, bdir)
    kw = {"sample": sample} if sample else {}
    row = {"task": task, "flash_bytes": mem["flash_bytes"], "ram_bytes": mem["ram_bytes"],
           "max_len": mem["max_len"], "onnx_bytes": onnx_path.stat().st_size, "sampled": bool(sample)}
    for engine, target in (("float", run_dir), ("reference", onnx_path), ("device", bdir)):
        out = bdir / f"eval-{engine}.json"
        ekw = {"sample": device_sample} if engine == "device" and device_sample and not sample else kw
        res = done(out) or evaluate(target, task, json_out=out, resume=True, **ekw)
        row[engine] = res["score"]
        row[f"{engine}_examples"] = res["examples"]
        if engine == "device":
            row["mismatches"] = res["mismatches"]
            row["sampled"] = row["sampled"] or res["examples"] < row["reference_examples"]   # a sample, not all
            row["metric"] = res["metric"]
            row["instructions_mean"] = res.get("instructions_mean")
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=Path, required=True, help="directory holding one float run per task")
    ap.add_argument("--suite", default="tinynlp", choices=["tinynlp", "glue"])
    ap.add_argument("--tasks", default=None, help="default: the suite's tasks")
    ap.add_argument("--device-sample", type=int, default=None,
                    help="evaluate the device on a seeded sample of N (float and reference on all)")
    ap.add_argument("--board", default="qemu-m4")
    ap.add_argument("--imdb-sample", type=int, default=2000)
    ap.add_argument("--out", type=Path, default=REPO / "build" / "embbert_q_suite.json")
    ap.add_argument("--onnx-dir", type=Path, default=REPO / "models",
                    help="where embbert-q-<task>.onnx is written (or, if there already, read)")
    ap.add_argument("--build-dir", type=Path, default=REPO / "build", help="builds go to BUILD_DIR/eq-<task>")
    a = ap.parse_args()
    rows = []
    from tinynlp_data import GLUE
    tasks = a.tasks.split(",") if a.tasks else list(GLUE if a.suite == "glue" else
                                                      ["imdb", "ag_news", "cyberbullying", "limit", "emotion", "nlu", "snips"])
    for task in tasks:
        run_dir = a.runs / task
        if not (run_dir / "run.json").is_file():
            print(f"skip {task}: no run at {run_dir}", file=sys.stderr)
            continue
        a.onnx_dir.mkdir(parents=True, exist_ok=True)
        rows.append(run_task(task, run_dir, a.board, a.imdb_sample if task == "imdb" else None, a.device_sample,
                             a.onnx_dir, a.build_dir))
        a.out.write_text(json.dumps(rows, indent=2))
    print_table(rows, a.suite)


def print_table(rows: list[dict], a_suite: str = "tinynlp") -> None:
    print("| task | metric | float | int8 reference | device | examples | mismatches | flash (B) | RAM (B) | max_len "
          "| instructions per inference (mean) |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['task']} | {r.get('metric', 'accuracy')} | {100 * r['float']:.2f} | {100 * r['reference']:.2f} | {100 * r['device']:.2f} "
              f"| {r['device_examples']:,}{' (sample)' if r['sampled'] else ''} | {r['mismatches']} "
              f"| {r['flash_bytes']:,} | {r['ram_bytes']:,} | {r['max_len']} | {r['instructions_mean']:,.0f} |")
    if rows:
        avg = {e: 100 * sum(r[e] for r in rows) / len(rows) for e in ("float", "reference", "device")}
        print(f"| **average ({len(rows)})** | | **{avg['float']:.2f}** | **{avg['reference']:.2f}** "
              f"| **{avg['device']:.2f}** | | **{sum(r['mismatches'] for r in rows)}** | | | | |")
        if a_suite == "glue":
            from tinynlp_data.metrics import glue_average
            g = {e: 100 * glue_average({r["task"]: r[e] for r in rows}) for e in ("float", "reference")}
            print(f"GLUE average over {len(rows)} tasks (each its metric, WNLI as accuracy): "
                  f"float {g['float']:.2f}, int8 reference {g['reference']:.2f}")
        gap = max(abs(r["float"] - r["reference"]) for r in rows)
        print(f"largest |float - int8| gap: {100 * gap:.2f} points")

if __name__ == "__main__":
    main()
