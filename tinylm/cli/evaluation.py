"""`tinylm eval` (a float run, a graph on the integer reference, or firmware over serial, on a
task) and `tinylm cost` (instructions or cycles per inference by input length)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from tinylm.cli.common import console, fail, progress


def eval_cmd(target: Path = typer.Argument(..., help="build directory (device), quantized .onnx (integer reference) or run directory (float)"),
             task: str = typer.Option(..., help="task name"),
             data: Optional[Path] = typer.Option(None, help="evaluate this JSONL(.gz) file instead of the validation split"),
             data_dir: Optional[Path] = typer.Option(None, help="data bundle root"),
             limit: Optional[int] = typer.Option(None, min=1, help="only the first N examples (N >= 1; omit for all)"),
             sample: Optional[int] = typer.Option(None, min=1, help="a fixed random subset of N examples (seeded by --seed)"),
             seed: int = typer.Option(0, help="seed of --sample"),
             port: Optional[str] = typer.Option(None, help="device serial port or URL (/dev/ttyACM0, socket://host:port, rfc2217://...); default for qemu-* boards: start QEMU"),
             json_path: Optional[Path] = typer.Option(None, "--json", help="write results JSON here (default: eval-<task>-<engine>.json in the build or run directory, eval-<task>-reference-<name>.json beside a .onnx; for anything in the repository's models/: runs/eval/<name>/)"),
             resume: bool = typer.Option(False, help="continue an interrupted run without repeating examples"),
             force: bool = typer.Option(False, "--force", help="evaluate even if the model's label names are not the task's"),
             workers: int = typer.Option(1, min=1, help="QEMU instances evaluating in parallel (qemu-* builds); results equal one worker's"),
             windows: Optional[int] = typer.Option(None, "--windows", metavar="STRIDE", help="float run or .onnx: inputs longer than L as windows STRIDE apart, logits summed, as a build made with `tinylm build --windows` runs them (a build uses its own); with --max-input"),
             max_input: Optional[int] = typer.Option(None, "--max-input", help="with --windows: truncate inputs to this many tokens")):
    """Evaluate a model on a task: float run, integer reference or firmware over serial."""
    from tinylm.harness.evaluate import EvalError, evaluate
    from tinylm.train.floatrun import RunError
    from tinylm.graph import GraphError
    if (windows is None) != (max_input is None):
        fail("--windows and --max-input go together (a stride and the longest input)")
    with progress() as prog:
        bar = prog.add_task(f"eval {task}", total=None, info="")
        mism = [0]

        def cb(done, total, rec):
            mism[0] += 0 if rec.get("match", True) else 1
            prog.update(bar, total=total, completed=done,
                        info=f"mismatches {mism[0]}" if "match" in rec else "")
        try:
            res = evaluate(target, task, data=str(data) if data else None, data_dir=data_dir, limit=limit,
                           sample=sample, seed=seed, port=port, json_out=json_path, resume=resume, progress=cb,
                           force=force, workers=workers,
                           windows={"stride": windows, "max_input": max_input} if windows else None)
        except (EvalError, GraphError, RunError, KeyError, ValueError) as e:
            fail(str(e).strip("'\""))
    lines = [f"{res['task']} {res['metric']}: {res['score']:.4f} on {res['examples']} examples ({res['engine']})"
             if res["score"] is not None else f"{res['task']}: no examples evaluated"]
    if "mismatches" in res:
        lines.append(f"mismatches with the integer reference: {res['mismatches']}"
                     + (f" (logits), {res['score_mismatches']} (m-results scores)" if "score_mismatches" in res else ""))
        if res.get("first_mismatch"):
            lines.append(f"first mismatch: {res['first_mismatch']}")
    if "instructions_mean" in res:
        lines.append(f"instructions per inference (mean): {res['instructions_mean']:.0f}")
    if "wall_s_per_example" in res:
        lines.append(f"harness wall time per example: {res['wall_s_per_example'] * 1000:.1f} ms "
                     f"(infer command {res['infer_share']:.0%}, loading input {res['load_share']:.0%}, "
                     f"cost query + reference check {res['check_share']:.0%})")
    if "device_share" in res:
        lines.append(f"wall time {res['wall_s']:.1f} s with {res['workers']} worker(s); "
                     f"devices computing {res['device_share']:.0%} of it")
    mem_file = Path(target) / "memory.json"
    if mem_file.is_file():
        mem = json.loads(mem_file.read_text())
        lines.append(f"flash {mem.get('flash_bytes')} B, RAM {mem.get('ram_bytes')} B, arena {mem['arena_bytes']} B")
    lines.append(f"results: {res['json']}")
    for line in lines:
        print(line)
    if res.get("interrupted"):
        console.print(f"[yellow]{res['interrupted']}[/yellow]")
        raise typer.Exit(3)


def cost(build_dir: Path = typer.Argument(..., help="build directory of a qemu-* board (or give --port)"),
         lengths: str = typer.Option("8,16,32,64", help="comma-separated input lengths in tokens"),
         port: Optional[str] = typer.Option(None, help="device port/URL instead of starting QEMU"),
         repeats: int = typer.Option(5, help="host-timed repetitions per length"),
         json_out: bool = typer.Option(False, "--json", help="print JSON"),
         cycle_model: bool = typer.Option(False, "--cycle-model", help="QEMU boards: also estimate Cortex-M4 cycles and ms at 64 MHz (nRF52840) from the executed instruction mix and the M4 TRM's cycle counts (an estimate, not a measurement; tinylm/harness/cycles.py)")):
    """Instructions (QEMU) or cycles (hardware) per inference by input length, and host round-trip times."""
    from tinylm.harness.costs import measure_costs
    from tinylm.harness.evaluate import EvalError
    if cycle_model:
        from tinylm.harness.cycles import estimate
        try:
            rows = estimate(build_dir, [int(x) for x in lengths.split(",")])
        except (EvalError, ValueError, OSError) as e:
            fail(str(e))
        if json_out:
            print(json.dumps(rows, indent=2))
            return
        print(f"{'tokens':>6} {'instructions':>12} {'est. cycles':>12} {'cycles/MAC':>10} {'est. ms @64MHz':>15}"
              f" {'range ms':>15}  taken/not-taken branches, loads+stores")
        for r in rows:
            print(f"{r['tokens']:>6} {r['instructions']:>12} {r['cycles']:>12} {r['cycles'] / r['macs']:>10.2f} "
                  f"{r['ms']:>15.1f} {r['ms_low']:>7.1f}..{r['ms_high']:<7.1f}  {r.get('branch_taken', 0)}/"
                  f"{r.get('branch_not_taken', 0)}, {r.get('load', 0) + r.get('store', 0) + r.get('load_pair', 0)}")
        print("ESTIMATE (Cortex-M4 TRM cycle counts on the instructions QEMU executed, zero wait states); "
              "a board's DWT counter measures the real figure")
        return
    try:
        rows = measure_costs(build_dir, [int(x) for x in lengths.split(",")], port=port, repeats=repeats)
    except (EvalError, ValueError) as e:
        fail(str(e))
    if json_out:
        print(json.dumps(rows, indent=2))
        return
    unit = "instructions" if "instructions" in rows[0] else "cycles"
    print(f"{'tokens':>6} {unit:>12} {'MACs':>10} {unit[:5] + '/MAC':>10} {'infer ms':>9} {'noop ms':>8}")
    for r in rows:
        print(f"{r['tokens']:>6} {r[unit]:>12} {r['macs']:>10} {r[unit] / r['macs']:>10.2f} "
              f"{r['infer_ms']:>9.2f} {r['noop_ms']:>8.2f}")


def kernels(boards: str = typer.Option("qemu-m4,qemu-m7,qemu-m33,qemu-m55", help="comma-separated QEMU boards"),
            kernels_dir: Optional[Path] = typer.Option(None, help="benchmark the kernels in this directory instead of firmware/kernels (e.g. an older checkout's)"),
            unfused: bool = typer.Option(False, "--unfused", help="fully connected as matmul_s8_s32 + add_s32 + requantize_s32_s8 on unpacked weights (the models' chain before fusion)"),
            seed: int = typer.Option(0, help="seed of the random kernel inputs"),
            json_out: bool = typer.Option(False, "--json", help="print JSON")):
    """Instructions per MAC (per element for softmax, norm, requantize) of each kernel and shape on
    QEMU cores, every output checked bit for bit against its numpy twin."""
    from codegen.toolchain import ToolchainError
    from tinylm.harness.kernels import KernelMismatch, cases, run_cases
    from tinylm.harness.qemu import QemuError
    names = [b for b in boards.split(",") if b]
    rows = []
    try:
        for b in names:
            rows += run_cases(b, cases(seed), kernels_dir=kernels_dir, unfused=unfused)
    except (KernelMismatch, ToolchainError, QemuError, ValueError, RuntimeError) as e:
        fail(str(e))
    if json_out:
        print(json.dumps(rows, indent=2))
        return
    table: dict = {}
    for r in rows:
        table.setdefault((r["kernel"], r["shape"], r["unit"]), {})[r["board"]] = r["per_unit"]
    print(f"{'kernel':<26} {'shape':<24} {'per':<8}" + "".join(f"{b:>10}" for b in names))
    for (kern, shape, unit), per in table.items():
        print(f"{kern:<26} {shape:<24} {unit:<8}" + "".join(f"{per.get(b, float('nan')):>10.2f}" for b in names))
    print("instructions per MAC (per element where the unit says so), QEMU -icount; "
          "every output equal to its numpy twin")
