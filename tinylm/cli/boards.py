"""CLI commands for boards: `tinylm boards` (the registry as a table or JSON) and
`tinylm flash BUILD_DIR` (PlatformIO upload of a build directory)."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from tinylm.cli.common import console, fail

PIP_HINT = "pip install platformio"


def board_rows() -> list[dict]:
    """One row per boards/*.toml: what `tinylm boards` shows."""
    from codegen import toolchain
    rows = []
    for name in toolchain.known_boards():
        b = toolchain.load_board(name)
        pio = b.get("platformio", {})
        rows.append({
            "board": b["name"], "description": b.get("description", ""),
            "core": b.get("core", ""), "fpu": b.get("fpu", ""), "clock_hz": b.get("clock_hz"),
            "flash_bytes": b["flash_bytes"], "ram_bytes": b["ram_bytes"],
            "stack_bytes": b["stack_bytes"],
            "flash_origin": b["flash_origin"], "ram_origin": b["ram_origin"],
            "runs_on": b.get("runs_on", "hardware"), "qemu_machine": b.get("qemu_machine"),
            "port": b["port"], "platformio_platform": pio.get("platform") or None,
            "platformio_board": pio.get("board") or None,
            "real_memory": b.get("real_memory", ""),
        })
    return rows


def _kib(n: int) -> str:
    return f"{n // 1024} KB" if n % (1024 * 1024) else f"{n // (1024 * 1024)} MB"


def boards(json_out: bool = typer.Option(False, "--json", help="print the table as JSON")):
    """List the boards (boards/*.toml): core, clock, flash/RAM budget, QEMU or hardware."""
    rows = board_rows()
    if json_out:
        print(json.dumps(rows, indent=2))
        return
    table = Table(title="tinylm boards (boards/*.toml)",
                  caption="* QEMU board: a PlatformIO board with a similar core, for reference only")
    for col, kw in [("board", {"style": "bold"}), ("core", {}), ("FPU", {}), ("clock", {"justify": "right"}),
                    ("flash", {"justify": "right"}), ("RAM", {"justify": "right"}), ("runs on", {}),
                    ("PlatformIO", {})]:
        table.add_column(col, **kw)
    for r in rows:
        runs = f"QEMU {r['qemu_machine']}" if r["runs_on"] == "qemu" else "hardware (--port)"
        pio = f"{r['platformio_platform']}/{r['platformio_board']}" if r["platformio_platform"] else "-"
        if r["runs_on"] == "qemu" and r["platformio_platform"]:
            pio += " *"
        clock = f"{r['clock_hz'] / 1e6:g} MHz" if r["clock_hz"] else "?"
        table.add_row(r["board"], r["core"], r["fpu"] or "-", clock, _kib(r["flash_bytes"]),
                      _kib(r["ram_bytes"]), runs, pio)
    Console().print(table)


def find_pio() -> str | None:
    """The PlatformIO CLI: on PATH, else next to this Python (a venv without activation)."""
    for name in ("pio", "platformio"):
        exe = shutil.which(name)
        if exe:
            return exe
    for name in ("pio", "platformio"):
        exe = Path(sys.executable).parent / name
        if exe.is_file() and os.access(exe, os.X_OK):
            return str(exe)
    return None


def installed_platforms(pio: str) -> list[str]:
    proc = subprocess.run([pio, "platform", "list", "--json-output"], capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"`{pio} platform list` failed: {proc.stderr.strip() or proc.stdout.strip()}")
    return [p["name"] for p in json.loads(proc.stdout or "[]")]


def flash(build_dir: Path = typer.Argument(..., help="build directory from `tinylm build --board <hardware board>`"),
          upload_port: str = typer.Option(None, "--upload-port", help="passed to PlatformIO (default: it autodetects)")):
    """Flash a build directory to its board with PlatformIO (`pio run -t upload`)."""
    from codegen import toolchain
    meta_file = build_dir / "build.json"
    if not meta_file.is_file():
        fail(f"{build_dir} is not a build directory (no build.json): run `tinylm build MODEL --board B --out {build_dir}`")
    meta = json.loads(meta_file.read_text())
    try:
        board = toolchain.load_board(meta["board"])
    except ValueError as e:
        fail(str(e))
    if board.get("runs_on") == "qemu":
        fail(f"board {board['name']} runs in QEMU ({board.get('qemu_machine')}): there is nothing to flash; "
              f"`tinylm eval {build_dir} --task TASK` starts QEMU itself")
    pio_cfg = board.get("platformio", {})
    platform = pio_cfg.get("platform")
    if not platform:
        fail(f"board {board['name']} has no PlatformIO platform in boards/{board['name']}.toml")
    if not (build_dir / "platformio.ini").is_file():
        fail(f"{build_dir / 'platformio.ini'} is missing: rebuild with `tinylm build`")
    pio = find_pio()
    if pio is None:
        fail(f"PlatformIO is not installed. Install it with `{PIP_HINT}`, then its platform with "
              f"`pio pkg install --global --platform {platform}`, and run `tinylm flash {build_dir}` again.")
    try:
        have = installed_platforms(pio)
    except (RuntimeError, json.JSONDecodeError) as e:
        fail(f"could not list PlatformIO platforms: {e}")
    if platform not in have:
        fail(f"PlatformIO platform {platform!r} is not installed (installed: {', '.join(have) or 'none'}). "
              f"Install it with `{pio} pkg install --global --platform {platform}` (it downloads the platform, "
              f"its toolchain and upload tool, so it needs internet), then run `tinylm flash {build_dir}` again.")
    cmd = [pio, "run", "-d", str(build_dir), "-e", board["name"], "-t", "upload"]
    if upload_port:
        cmd += ["--upload-port", upload_port]
    console.print(f"$ {' '.join(cmd)}", highlight=False)
    proc = subprocess.run(cmd, capture_output=True, text=True)
    out = (proc.stdout + proc.stderr).strip()
    if proc.returncode != 0:
        tail = "\n".join(out.splitlines()[-25:])
        fail(f"upload failed (pio exit code {proc.returncode}):\n{tail}")
    print(f"flashed {build_dir} to {board['name']} ({platform}/{pio_cfg.get('board')}, "
          f"upload {pio_cfg.get('upload_protocol', 'default')}).")
    print(f"next: tinylm eval {build_dir} --port {board.get('serial_hint', '/dev/ttyACM0')} --task emotion")
