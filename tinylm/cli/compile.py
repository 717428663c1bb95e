"""`tinylm quantize` (a float run -> an integer-only ONNX graph) and `tinylm build` (a graph ->
C, firmware and its memory report for a board)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from tinylm.cli.common import console, fail, progress


def quantize(run: Path = typer.Argument(..., help="float run directory (from tinylm train)"),
             out: Path = typer.Option(..., help="quantized ONNX file to write"),
             calib: int = typer.Option(1024, help="training examples used to calibrate activation scales"),
             name: Optional[str] = typer.Option(None, help="model name stored in the graph"),
             data_dir: Optional[Path] = typer.Option(None),
             qat: bool = typer.Option(False, "--qat", help="EmbBERT: quantization-aware training on the train split (best epoch on validation, in the integer forward)"),
             epochs: int = typer.Option(2, help="--qat: training epochs"),
             limit: Optional[int] = typer.Option(None, min=1, help="--qat: train on a random N training examples"),
             max_len: Optional[int] = typer.Option(None, "--max-len", help="EmbBERT PTQ: longest input of the graph (default: the run's; at most the position table)"),
             bits: int = typer.Option(8, help="8: EmbBERT-Q / int8; 1: a binary EmbBERT run (trained with "
                                      "tinylm finetune --binary) lowered to the binary ops")):
    """Quantize a float run to an integer-only ONNX graph (int8 weights and activations, or with
    --bits 1 the 1-bit weights and activations of a binary run)."""
    from tinylm.train.floatrun import RunError
    from tinylm.train.floatrun import FloatRun
    try:
        fr = FloatRun(run)
        arch, binary = fr.arch, bool(fr.config.get("binary", False))
        if bits not in (1, 8):
            fail(f"--bits {bits}: 8 (int8) or 1 (binary)")
        if bits == 1 and not binary:
            fail(f"{run} is not a binary model: train one from it first, e.g. tinylm finetune --init-from "
                 f"{run} --binary --teacher {run} --task {fr.task} --out runs/binary-{fr.task}")
        if bits == 8 and binary:
            fail(f"{run} is a binary model (config binary): quantize it with --bits 1")
        if qat:
            if arch != "embbert":
                fail(f"{run}: --qat is implemented for EmbBERT runs (arch {arch!r})")
            from tinylm.quant.qat import qat_run
            with progress() as prog:
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
        fail(str(e))
    from tinylm import graph
    g = graph.load(out)
    console.print(f"{out}: {len(g.nodes)} nodes, {sum(w.nbytes for w in g.weights.values())} weight bytes, "
                  f"sha256 {g.sha256[:16]}")


def build(model: Optional[Path] = typer.Argument(None, help="quantized ONNX graph; default: the bundled models/default.onnx"),
          board: str = typer.Option(..., help="board name (see boards/), e.g. qemu-m4"),
          out: Path = typer.Option(..., help="build directory to write (a PlatformIO project)"),
          no_compile: bool = typer.Option(False, "--no-compile", help="generate sources only"),
          json_out: bool = typer.Option(False, "--json", help="print memory.json to stdout"),
          report: bool = typer.Option(False, "--report", help="also print flash/RAM by tensor and by ELF section"),
          rows_per_pass: str = typer.Option("auto", "--rows-per-pass", help="token rows per row tile, i.e. per weight pass of the fully connected layers: more rows, more RAM, fewer instructions (2 = two rows share each weight word); 'auto': the most that fit the board's RAM (recorded in memory.json)"),
          windows: Optional[int] = typer.Option(None, "--windows", metavar="STRIDE", help="accept inputs longer than the model's L: the device runs windows of L tokens STRIDE apart and sums their logits (e.g. L/2 - 1 for half-overlapping windows; docs/protocol.md); with --max-input"),
          max_input: Optional[int] = typer.Option(None, "--max-input", help="with --windows: the longest input in tokens the device accepts (6 bytes of RAM a token)")):
    """Generate C for a quantized graph, link the firmware for a board and report its memory."""
    from codegen.build import BudgetError, build as do_build
    from codegen.toolchain import ToolchainError
    from tinylm.graph import GraphError
    try:
        rpp = rows_per_pass if rows_per_pass == "auto" else int(rows_per_pass)
        if (windows is None) != (max_input is None):
            fail("--windows and --max-input go together (a stride and the longest input)")
        win = {"stride": windows, "max_input": max_input} if windows else None
        mem = do_build(model, board, out, compile=not no_compile, rows_per_pass=rpp, windows=win)
    except (GraphError, BudgetError, ToolchainError, ValueError, KeyError) as e:
        fail(str(e).strip("'\""))
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
                  f"(activations total {mem['activations_total_bytes']} B), {mem['rows_per_pass']} rows per pass"
                  + (f", inputs up to {max_input} tokens as windows {windows} apart" if windows else ""))
