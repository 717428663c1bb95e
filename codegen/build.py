"""`tinylm build`: quantized graph -> self-contained firmware project -> linked ELF + memory.json.

The build directory is a PlatformIO project (platformio.ini + src/) whose src/ holds the
generated model and copies of the runtime, kernels and board port; the ELF is linked from
exactly those files with arm-none-eabi-gcc, so what PlatformIO builds is what we tested.
"""
from __future__ import annotations

import json
import shutil

import numpy as np
from pathlib import Path

from tinylm import graph as G
from tinylm.graph.reference import shape_templates

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


# `tinylm build --rows-per-pass auto`: the tallest row tile tried first. fully_connected_s8
# shares each weight pass between two rows, so taller tiles only cost RAM.
AUTO_ROWS = (2, 1)


def lower_rows(graph, board: dict, rows_per_pass: int | str = 1):
    """(Lowered, rows per pass): row tiles of `rows_per_pass` rows, or for "auto" the tallest
    of AUTO_ROWS whose arena fits the board's RAM budget (budget_check's estimate)."""
    if rows_per_pass != "auto":
        if int(rows_per_pass) < 1:
            raise ValueError(f"rows per pass must be >= 1 or 'auto', got {rows_per_pass}")
        return emit.lower(graph, tile_rows=int(rows_per_pass)), int(rows_per_pass)
    for r in AUTO_ROWS:
        low = emit.lower(graph, tile_rows=r)
        try:
            budget_check(memory_table(low, graph.max_len), low.arena_bytes, board)
        except BudgetError:
            if r == AUTO_ROWS[-1]:
                raise
            continue
        return low, r
    raise AssertionError("unreachable")


def build(model: str | Path | None, board_name: str, out: str | Path, *, compile: bool = True,
          rows_per_pass: int | str = "auto", windows: dict | None = None) -> dict:
    """windows: {"stride": S, "max_input": N} to accept inputs of up to N ids, longer than the
    model's L, as windows (tinylm/graph/windows.py); None: inputs of at most L ids."""
    model = Path(model) if model else DEFAULT_MODEL
    board = toolchain.load_board(board_name)
    graph = G.load(model)
    if windows:
        from tinylm.graph import windows as win
        windows = {"stride": int(windows["stride"]), "max_input": int(windows["max_input"])}
        win.check(graph.max_len, windows["stride"], windows["max_input"])
    low, rows_chosen = lower_rows(graph, board, rows_per_pass)
    rows = memory_table(low, graph.max_len)
    budget_check(rows, low.arena_bytes, board)

    out = Path(out)
    src = out / "src"
    if src.exists():
        shutil.rmtree(src)
    src.mkdir(parents=True)
    if not (out / "model.onnx").exists() or not (out / "model.onnx").samefile(model):
        shutil.copy(model, out / "model.onnx")
    (src / "model.c").write_text(low.model_c)
    (src / "weights.c").write_text(low.weights_c)
    (src / "weights.h").write_text(low.weights_h)
    for f in toolchain.firmware_sources(board) + _headers(board):
        shutil.copy(f, src / f.name)
    defines = model_defines(graph, windows)
    (out / "platformio.ini").write_text(platformio_ini(board, defines))
    (out / "tinylm_extra.py").write_text(platformio_extra_script(board))
    (out / "linker.ld").write_text(toolchain.render_linker_script(board))

    activations_total = sum(b.size for b in low.buffers)
    # what one buffer per tensor at full length would take: the baseline the planner beats
    activations_full = sum(emit.size_at(shp, graph.max_len) * np.dtype(dt).itemsize
                           for name, (shp, dt) in shape_templates(graph).items() if name != G.INPUT)
    mem = {"board": board["name"], "model": graph.name, "model_sha256": graph.sha256,
           "arena_bytes": low.arena_bytes, "activations_total_bytes": activations_total,
           "activations_full_bytes": activations_full,
           "weights_bytes": sum(r["bytes"] for r in rows if r["kind"] == "weight"),
           "flash_budget": board["flash_bytes"], "ram_budget": board["ram_bytes"],
           "max_len": graph.max_len, "rows_per_pass": rows_chosen,
           "rows_per_pass_setting": str(rows_per_pass), "windows": windows, "tensors": rows}
    if compile:
        c_files = sorted(src.glob("*.c"))
        elf = toolchain.compile_firmware(c_files, [src], board, out, defines=defines)
        sections = toolchain.elf_memory(elf)
        mem.update({k: sections[k] for k in ("flash_bytes", "ram_bytes")})
        mem["sections"] = {k: sections[k] for k in ("text", "data", "bss", "stack")}
        problems = toolchain.check_budget(sections, board)
        if problems:
            raise BudgetError("linked image over budget: " + "; ".join(problems) + "\n" + format_table(rows))
    (out / "memory.json").write_text(json.dumps(mem, indent=2))
    (out / "build.json").write_text(json.dumps({"board": board["name"], "model": "model.onnx",
                                                "elf": "firmware.elf" if compile else None,
                                                "model_sha256": graph.sha256, "windows": windows}, indent=2))
    return mem


def _headers(board: dict) -> list[Path]:
    return [h for d in toolchain.firmware_include_dirs(board) for h in sorted(Path(d).glob("*.h"))]


def model_defines(graph, windows: dict | None = None) -> dict:
    """The runtime's input and logits buffers sized to this model, not to the largest one (with
    windows: to the longest input, 6 bytes a token)."""
    d = {"TINYLM_INPUT_MAX": graph.max_len, "TINYLM_LABELS_MAX": max(1, len(graph.label_names))}
    if windows:
        d.update(TINYLM_INPUT_MAX=windows["max_input"], TINYLM_WINDOW_STRIDE=windows["stride"])
    return d


def platformio_flags(board: dict, model: dict | None = None) -> tuple[list[str], list[str]]:
    """(compile flags, link flags) of the PlatformIO build: the same as compile_firmware's."""
    defines = {"TINYLM_BOARD_NAME": f'\\"{board["name"]}\\"', **board.get("defines", {}), **(model or {})}
    cflags = [*board["cflags"], "-O2", "-std=c11", "-ffunction-sections", "-fdata-sections",
              "-ffreestanding", *[f"-D{k}={v}" for k, v in defines.items()]]
    ldflags = [*board["cflags"], "-nostartfiles", "--specs=nano.specs", "-Wl,--gc-sections"]
    return cflags, ldflags


def platformio_ini(board: dict, model: dict | None = None) -> str:
    """platformio.ini for the build directory: the board's real PlatformIO platform and board,
    no framework (bare metal: src/ holds everything), the rendered linker.ld, the descriptor's
    compiler flags and defines, and link flags via tinylm_extra.py (PlatformIO's platform
    builders add their own -mcpu/-specs to the link; the float ABI must match the objects)."""
    pio = board.get("platformio", {})
    cflags, _ = platformio_flags(board, model)
    lines = ["; Generated by tinylm build from boards/%s.toml; do not edit (rebuild instead)." % board["name"]]
    if board.get("runs_on") == "qemu":
        lines.append("; QEMU board: `tinylm eval` runs firmware.elf in QEMU (%s). This project names a "
                     "PlatformIO board with a similar core for reference only." % board.get("qemu_machine"))
    else:
        lines.append("; `tinylm flash <this dir>` runs `pio run -t upload` here; `pio device monitor` "
                     "shows the serial port.")
    if not pio.get("platform"):
        lines.append("; No PlatformIO platform has this core (%s): the env below has no platform and "
                     "cannot be built by PlatformIO." % board.get("core"))
    lines += ["", "[platformio]", "src_dir = src", "", f"[env:{board['name']}]"]
    if pio.get("platform"):
        lines += [f"platform = {pio['platform']}", f"board = {pio['board']}"]
    if pio.get("framework"):
        lines.append(f"framework = {pio['framework']}")
    if pio.get("upload_protocol"):
        lines.append(f"upload_protocol = {pio['upload_protocol']}")
    lines += ["board_build.ldscript = linker.ld",
              f"board_build.f_cpu = {board.get('clock_hz', 0)}L",
              "build_flags =", *[f"    {f}" for f in cflags],
              "extra_scripts = pre:tinylm_extra.py",
              "monitor_speed = 115200", ""]
    return "\n".join(lines)


def platformio_extra_script(board: dict) -> str:
    _, ldflags = platformio_flags(board)
    return ("# Generated by tinylm build: link flags matching the objects' float ABI (PlatformIO's\n"
            "# build_flags reach the compiler; these reach the linker).\n"
            "Import(\"env\")\n"
            f"env.Append(LINKFLAGS={ldflags!r})\n")
