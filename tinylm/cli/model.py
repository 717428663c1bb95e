"""CLI commands of the spine: train, quantize, build, eval."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

console = Console(stderr=True)


def _fail(msg: str, code: int = 1):
    console.print(f"[red]error:[/red] {msg}", highlight=False)
    raise typer.Exit(code)


def _progress() -> Progress:
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TimeRemainingColumn(), TextColumn("{task.fields[info]}"), console=console,
                    disable=not console.is_terminal)


def train(task: str = typer.Option(..., help="task name, e.g. emotion"),
          out: Path = typer.Option(..., help="run directory to write"),
          config: str = typer.Option("tiny", help="model config: tiny (default model) or micro (seconds, for tests)"),
          epochs: int = typer.Option(6, help="training epochs; the best one on validation is kept"),
          lr: float = typer.Option(1e-3, help="peak learning rate (AdamW, cosine decay)"),
          seed: int = typer.Option(0),
          limit: Optional[int] = typer.Option(None, help="use only the first N training examples"),
          data_dir: Optional[Path] = typer.Option(None, help="data bundle root (default: $TINYLM_DATA, then ../shared/data)"),
          train_file: Optional[Path] = typer.Option(None, help="a training JSONL(.gz) file instead of the task's train split"),
          val_file: Optional[Path] = typer.Option(None, help="a validation JSONL(.gz) file instead of the task's validation split")):
    """Train the small transformer classifier (Flax) on a task's train split."""
    from tinylm.train.tiny import train_tiny
    with _progress() as prog:
        bar = prog.add_task("training", total=None, info="")

        def cb(epoch, i, steps, loss):
            prog.update(bar, total=steps * epochs, completed=epoch * steps + i + 1,
                        info=f"epoch {epoch + 1} loss {loss:.3f}")
        try:
            meta = train_tiny(task, out, config, epochs=epochs, lr=lr, seed=seed, data_dir=data_dir,
                              train_file=train_file, val_file=val_file, limit=limit, progress=cb)
        except (KeyError, ValueError) as e:
            _fail(str(e).strip("'\""))
    console.print(f"best validation {meta['metric']}: {meta['val_score']:.4f} "
                  f"({meta['train_seconds']} s) -> {out}")


def quantize(run: Path = typer.Argument(..., help="float run directory (from tinylm train)"),
             out: Path = typer.Option(..., help="quantized ONNX file to write"),
             calib: int = typer.Option(1024, help="training examples used to calibrate activation scales"),
             name: Optional[str] = typer.Option(None, help="model name stored in the graph"),
             data_dir: Optional[Path] = typer.Option(None),
             qat: bool = typer.Option(False, "--qat", help="EmbBERT: quantization-aware training on the train split (best epoch on validation, in the integer forward)"),
             epochs: int = typer.Option(2, help="--qat: training epochs"),
             limit: Optional[int] = typer.Option(None, help="--qat: train on a random N training examples"),
             max_len: Optional[int] = typer.Option(None, "--max-len", help="EmbBERT PTQ: longest input of the graph (default: the run's; at most the position table)")):
    """Quantize a float run to an integer-only ONNX graph (int8 weights and activations)."""
    from tinylm.train.floatrun import RunError
    from tinylm.train.floatrun import FloatRun
    try:
        arch = FloatRun(run).arch
        if qat:
            if arch != "embbert":
                _fail(f"{run}: --qat is implemented for EmbBERT runs (arch {arch!r})")
            from tinylm.quant.qat import qat_run
            with _progress() as prog:
                bar = prog.add_task("QAT", total=None, info="")

                def cb(r):
                    prog.update(bar, total=r["total"], completed=r["done"], info=r["info"])
                    if not console.is_terminal and "validation" in r["info"]:
                        console.print(r["info"], highlight=False)
                res = qat_run(run, out, epochs=epochs, calib=min(calib, 256), limit=limit, name=name,
                              data_dir=data_dir, on_log=cb)
            console.print(f"QAT: best epoch {res['best_epoch']} (0 = PTQ), validation {res['metric']} "
                          f"{res['score']:.4f} in the integer forward ({res['wall_s']:.0f} s)")
        elif arch == "embbert":   # EmbBERT-Q (tinylm/quant/embbert.py); calibration on <= 256 examples
            from tinylm.quant.embbert import quantize_run
            quantize_run(run, out, calib=min(calib, 256), name=name, data_dir=data_dir, max_len=max_len)
        else:
            from tinylm.quant.tiny import quantize_run
            quantize_run(run, out, calib=calib, name=name, data_dir=data_dir)
    except (RunError, ValueError) as e:
        _fail(str(e))
    from tinylm import graph
    g = graph.load(out)
    console.print(f"{out}: {len(g.nodes)} nodes, {sum(w.nbytes for w in g.weights.values())} weight bytes, "
                  f"sha256 {g.sha256[:16]}")


def build(model: Optional[Path] = typer.Argument(None, help="quantized ONNX graph; default: the bundled models/default.onnx"),
          board: str = typer.Option(..., help="board name (see boards/), e.g. qemu-m4"),
          out: Path = typer.Option(..., help="build directory to write (a PlatformIO project)"),
          no_compile: bool = typer.Option(False, "--no-compile", help="generate sources only"),
          json_out: bool = typer.Option(False, "--json", help="print memory.json to stdout"),
          report: bool = typer.Option(False, "--report", help="also print flash/RAM by tensor and by ELF section")):
    """Generate C for a quantized graph, link the firmware for a board and report its memory."""
    from codegen.build import BudgetError, build as do_build
    from codegen.toolchain import ToolchainError
    from tinylm.graph import GraphError
    try:
        mem = do_build(model, board, out, compile=not no_compile)
    except (GraphError, BudgetError, ToolchainError, ValueError, KeyError) as e:
        _fail(str(e).strip("'\""))
    if json_out:
        print(json.dumps({k: v for k, v in mem.items() if k != "tensors"}, indent=2))
        return
    if report:
        from codegen.build import format_table
        print(format_table(mem["tensors"], limit=20))
        if "sections" in mem:
            print("ELF sections: " + ", ".join(f"{k} {v} B" for k, v in mem["sections"].items()))
    console.print(f"built {out} for {board}: flash {mem.get('flash_bytes', '?')} / {mem['flash_budget']} B, "
                  f"RAM {mem.get('ram_bytes', '?')} / {mem['ram_budget']} B, arena {mem['arena_bytes']} B "
                  f"(activations total {mem['activations_total_bytes']} B)")


def eval_cmd(target: Path = typer.Argument(..., help="build directory (device), quantized .onnx (integer reference) or run directory (float)"),
             task: str = typer.Option(..., help="task name"),
             data: Optional[Path] = typer.Option(None, help="evaluate this JSONL(.gz) file instead of the validation split"),
             data_dir: Optional[Path] = typer.Option(None, help="data bundle root"),
             limit: Optional[int] = typer.Option(None, help="only the first N examples"),
             sample: Optional[int] = typer.Option(None, help="a fixed random subset of N examples (seeded by --seed)"),
             seed: int = typer.Option(0, help="seed of --sample"),
             port: Optional[str] = typer.Option(None, help="device serial port or URL (/dev/ttyACM0, socket://host:port, rfc2217://...); default for qemu-* boards: start QEMU"),
             json_path: Optional[Path] = typer.Option(None, "--json", help="write results JSON here (default: <target>/eval-<task>.json)"),
             resume: bool = typer.Option(False, help="continue an interrupted run without repeating examples")):
    """Evaluate a model on a task: float run, integer reference or firmware over serial."""
    from tinylm.harness.evaluate import EvalError, evaluate
    from tinylm.train.floatrun import RunError
    from tinylm.graph import GraphError
    with _progress() as prog:
        bar = prog.add_task(f"eval {task}", total=None, info="")
        mism = [0]

        def cb(done, total, rec):
            mism[0] += 0 if rec.get("match", True) else 1
            prog.update(bar, total=total, completed=done,
                        info=f"mismatches {mism[0]}" if "match" in rec else "")
        try:
            res = evaluate(target, task, data=str(data) if data else None, data_dir=data_dir, limit=limit,
                           sample=sample, seed=seed, port=port, json_out=json_path, resume=resume, progress=cb)
        except (EvalError, GraphError, RunError, KeyError, ValueError) as e:
            _fail(str(e).strip("'\""))
    lines = [f"{res['task']} {res['metric']}: {res['score']:.4f} on {res['examples']} examples ({res['engine']})"
             if res["score"] is not None else f"{res['task']}: no examples evaluated"]
    if "mismatches" in res:
        lines.append(f"mismatches with the integer reference: {res['mismatches']}")
        if res.get("first_mismatch"):
            lines.append(f"first mismatch: {res['first_mismatch']}")
    if "instructions_mean" in res:
        lines.append(f"instructions per inference (mean): {res['instructions_mean']:.0f}")
    if "wall_s_per_example" in res:
        lines.append(f"harness wall time per example: {res['wall_s_per_example'] * 1000:.1f} ms "
                     f"(infer command {res['infer_share']:.0%}, loading input {res['load_share']:.0%}, "
                     f"cost query + reference check {res['check_share']:.0%})")
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
         json_out: bool = typer.Option(False, "--json", help="print JSON")):
    """Instructions (QEMU) or cycles (hardware) per inference by input length, and host round-trip times."""
    from tinylm.harness.costs import measure_costs
    from tinylm.harness.evaluate import EvalError
    try:
        rows = measure_costs(build_dir, [int(x) for x in lengths.split(",")], port=port, repeats=repeats)
    except (EvalError, ValueError) as e:
        _fail(str(e))
    if json_out:
        print(json.dumps(rows, indent=2))
        return
    unit = "instructions" if "instructions" in rows[0] else "cycles"
    print(f"{'tokens':>6} {unit:>12} {'MACs':>10} {unit[:5] + '/MAC':>10} {'infer ms':>9} {'noop ms':>8}")
    for r in rows:
        print(f"{r['tokens']:>6} {r[unit]:>12} {r['macs']:>10} {r[unit] / r['macs']:>10.2f} "
              f"{r['infer_ms']:>9.2f} {r['noop_ms']:>8.2f}")


def register(app: typer.Typer) -> None:
    app.command()(cost)
    app.command()(train)
    app.command()(quantize)
    app.command()(build)
    app.command("eval")(eval_cmd)
