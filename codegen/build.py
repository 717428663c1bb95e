"""`tinylm build`: quantized graph -> self-contained firmware project -> linked ELF + memory.json.

The build directory is a PlatformIO project (platformio.ini + src/) whose src/ holds the
generated model and copies of the runtime, kernels and board port; the ELF is linked from
exactly those files with arm-none-eabi-gcc, so what PlatformIO builds is what we tested.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

from tinylm import graph as G

from . import emit, toolchain

REPO = Path(__file__).resolve().parent.parent
DEFAULT_MODEL = REPO / "models" / "default.onnx"
# Flash and RAM the runtime needs besides weights and arena: an upper estimate used to refuse
# an over-budget model before any compiler runs (the real figures come from the ELF).
RUNTIME_FLASH_ESTIMATE = 16 * 1024
RUNTIME_RAM_ESTIMATE = 2 * 1024


class BudgetError(ValueError):
    """The model does not fit the board; the message carries the per-tensor table."""


def memory_table(low: emit.Lowered, L: int) -> list[dict]:
    rows = [{"tensor": onnx_name, "kind": "weight", "section": "flash (.rodata)", "dtype": dt,
             "shape": shape, "bytes": nbytes} for _, onnx_name, dt, shape, nbytes in low.weights]
    for buf in sorted(low.buffers, key=lambda b: b.offset):
        shp, dt = low.activations[buf.name]
        rows.append({"tensor": buf.name, "kind": "activation", "section": "ram (arena)",
                     "dtype": str(dt), "shape": [L if d == "n" else d for d in shp],
                     "bytes": buf.size, "arena_offset": buf.offset})
    return rows


def format_table(rows: list[dict], limit: int | None = None) -> str:
    rows = sorted(rows, key=lambda r: -r["bytes"])
    shown = rows[:limit] if limit else rows
    out = [f"{'tensor':<28} {'kind':<10} {'shape':<14} {'bytes':>9}"]
    out += [f"{r['tensor'][:28]:<28} {r['kind']:<10} {str(r['shape']):<14} {r['bytes']:>9}" for r in shown]
    if limit and len(rows) > limit:
        rest = sum(r["bytes"] for r in rows[limit:])
        out.append(f"{'(' + str(len(rows) - limit) + ' more)':<28} {'':<10} {'':<14} {rest:>9}")
    return "\n".join(out)


def budget_check(rows, arena: int, board: dict) -> dict:
    weights = sum(r["bytes"] for r in rows if r["kind"] == "weight")
    est = {"flash_bytes": weights + RUNTIME_FLASH_ESTIMATE,
           "ram_bytes": arena + board["stack_bytes"] + RUNTIME_RAM_ESTIMATE}
    over = [f"{k.split('_')[0]} needs about {est[k]} bytes, budget {board[k]}" for k in est if est[k] > board[k]]
    if over:
        raise BudgetError(f"model does not fit board {board['name']}: " + "; ".join(over)
                          + f"\n(weights {weights} B + runtime ~{RUNTIME_FLASH_ESTIMATE} B flash; arena {arena} B"
                          f" + stack {board['stack_bytes']} B + runtime ~{RUNTIME_RAM_ESTIMATE} B RAM)\n"
                          + format_table(rows))
    return est


def build(model: str | Path | None, board_name: str, out: str | Path, *, compile: bool = True) -> dict:
    model = Path(model) if model else DEFAULT_MODEL
    board = toolchain.load_board(board_name)
    graph = G.load(model)
    low = emit.lower(graph)
    rows = memory_table(low, graph.max_len)
    budget_check(rows, low.arena_bytes, board)

    out = Path(out)
    src = out / "src"
    if src.exists():
        shutil.rmtree(src)
    src.mkdir(parents=True)
    shutil.copy(model, out / "model.onnx")
    (src / "model.c").write_text(low.model_c)
    (src / "weights.c").write_text(low.weights_c)
    (src / "weights.h").write_text(low.weights_h)
    for f in toolchain.firmware_sources(board) + _headers(board):
        shutil.copy(f, src / f.name)
    (out / "platformio.ini").write_text(platformio_ini(board))

    activations_total = sum(b.size for b in low.buffers)
    mem = {"board": board["name"], "model": graph.name, "model_sha256": graph.sha256,
           "arena_bytes": low.arena_bytes, "activations_total_bytes": activations_total,
           "weights_bytes": sum(r["bytes"] for r in rows if r["kind"] == "weight"),
           "flash_budget": board["flash_bytes"], "ram_budget": board["ram_bytes"],
           "max_len": graph.max_len, "tensors": rows}
    if compile:
        c_files = sorted(src.glob("*.c"))
        elf = toolchain.compile_firmware(c_files, [src], board, out)
        sections = toolchain.elf_memory(elf)
        mem.update({k: sections[k] for k in ("flash_bytes", "ram_bytes")})
        mem["sections"] = {k: sections[k] for k in ("text", "data", "bss", "stack")}
        problems = toolchain.check_budget(sections, board)
        if problems:
            raise BudgetError("linked image over budget: " + "; ".join(problems) + "\n" + format_table(rows))
    (out / "memory.json").write_text(json.dumps(mem, indent=2))
    (out / "build.json").write_text(json.dumps({"board": board["name"], "model": "model.onnx",
                                                "elf": "firmware.elf" if compile else None,
                                                "model_sha256": graph.sha256}, indent=2))
    return mem


def _headers(board: dict) -> list[Path]:
    return [h for d in toolchain.firmware_include_dirs(board) for h in sorted(Path(d).glob("*.h"))]


def platformio_ini(board: dict) -> str:
    pio = board.get("platformio", {})
    flags = " ".join(board["cflags"][:0] + ["-O2", "-std=c11", f"-DTINYLM_BOARD_NAME=\\\"{board['name']}\\\""])
    lines = ["; Generated by tinylm build. `pio run -t upload` builds these sources and flashes the board.",
             f"[env:{board['name']}]", f"platform = {pio.get('platform', '')}", f"board = {pio.get('board', '')}"]
    if pio.get("framework"):
        lines.append(f"framework = {pio['framework']}")
    lines += [f"build_flags = {flags} -Wl,-Tlinker.ld -nostartfiles",
              "board_build.ldscript = linker.ld", "monitor_speed = 115200", ""]
    return "\n".join(lines)
