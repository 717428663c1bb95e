"""Board descriptors, linker scripts, the arm-none-eabi build, and ELF memory reports.

A board descriptor is boards/<name>.toml. The linker script is rendered from its memory map so
that the same origins/sizes/stack govern the build and the budget check."""
from __future__ import annotations

import shutil
import struct
import subprocess
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
BOARDS_DIR = REPO / "boards"
FIRMWARE_DIR = REPO / "firmware"

APT_HINT = ("apt-get install -y --no-install-recommends "
            "gcc-arm-none-eabi libnewlib-arm-none-eabi qemu-system-arm")

_REQUIRED = ("name", "cflags", "flash_origin", "flash_bytes", "ram_origin", "ram_bytes",
             "stack_bytes", "port")


class ToolchainError(RuntimeError):
    """The cross toolchain is missing or a build failed."""


def known_boards() -> list[str]:
    return sorted(p.stem for p in BOARDS_DIR.glob("*.toml"))


def load_board(name: str) -> dict:
    """Reads boards/<name>.toml; an unknown name is an error that lists the known boards."""
    path = BOARDS_DIR / f"{name}.toml"
    if not path.is_file():
        raise ValueError(f"unknown board {name!r}; known boards: {', '.join(known_boards()) or 'none'}")
    with open(path, "rb") as f:
        board = tomllib.load(f)
    missing = [k for k in _REQUIRED if k not in board]
    if missing:
        raise ValueError(f"board descriptor {path} lacks {', '.join(missing)}")
    if board["stack_bytes"] % 8 or board["stack_bytes"] >= board["ram_bytes"]:
        raise ValueError(f"board {name}: stack_bytes must be a multiple of 8 and below ram_bytes")
    return board


def render_linker_script(board: dict) -> str:
    """GNU ld script: vectors+code+rodata in flash, .data in RAM loaded from flash, .bss after
    it, and the stack as its own NOLOAD section at the very top of RAM (so it shows in the ELF
    and overlapping it with .bss fails the link).

    A board whose reset vector address lies outside its flash region (QEMU mps3-an547 reads it
    at 0x00000000, in a 512 KB ITCM too small for the image) names vectors_origin/vectors_bytes:
    the vector table then gets that region of its own, and counts as flash."""
    vectors_mem = vectors_sec = ""
    if "vectors_origin" in board:
        vectors_mem = (f"\n  VECTORS (rx) : ORIGIN = {board['vectors_origin']:#010x}, "
                       f"LENGTH = {board.get('vectors_bytes', 1024)}")
        vectors_sec = "  .isr_vector : { KEEP(*(.isr_vector)) } > VECTORS\n"
    return f"""/* Rendered by codegen/toolchain.py from boards/{board['name']}.toml; do not edit. */
ENTRY(Reset_Handler)
MEMORY
{{
  FLASH (rx)  : ORIGIN = {board['flash_origin']:#010x}, LENGTH = {board['flash_bytes']}
  RAM   (rwx) : ORIGIN = {board['ram_origin']:#010x}, LENGTH = {board['ram_bytes']}{vectors_mem}
}}
__stack_size = {board['stack_bytes']};

SECTIONS
{{
{vectors_sec}  .text :
  {{
    KEEP(*(.isr_vector))
    *(.text .text.*)
    *(.rodata .rodata.*)
    . = ALIGN(4);
  }} > FLASH
  .ARM.exidx : {{ *(.ARM.exidx .ARM.exidx.* .gnu.linkonce.armexidx.*) }} > FLASH

  .data : ALIGN(4)
  {{
    __data_start = .;
    *(.data .data.*)
    . = ALIGN(4);
    __data_end = .;
  }} > RAM AT > FLASH
  __data_load = LOADADDR(.data);

  .bss (NOLOAD) : ALIGN(4)
  {{
    __bss_start = .;
    *(.bss .bss.* COMMON)
    . = ALIGN(4);
    __bss_end = .;
  }} > RAM

  .stack (ORIGIN(RAM) + LENGTH(RAM) - __stack_size) (NOLOAD) :
  {{
    __stack_bottom = .;
    . += __stack_size;
    __stack_top = .;
  }} > RAM
  ASSERT(__bss_end <= __stack_bottom, "RAM overflow: .data + .bss run into the stack")

  /DISCARD/ : {{ *(.ARM.attributes.*) }}
}}
"""


def _gcc() -> str:
    gcc = shutil.which("arm-none-eabi-gcc")
    if gcc is None:
        raise ToolchainError(f"arm-none-eabi-gcc not found on PATH; install it with: {APT_HINT}")
    return gcc


def _shared_port_dirs(board: dict) -> list[Path]:
    """ports/common (start-up, every board) plus the shared pieces a descriptor names in
    `shared_ports`, e.g. common-dwt (DWT cycle-counter time base of the hardware ports)."""
    return [FIRMWARE_DIR / "ports" / d for d in ["common", *board.get("shared_ports", [])]]


def firmware_sources(board: dict, model_c_files=()) -> list[Path]:
    """runtime + the shared Cortex-M start-up + the board's port + kernels + the model's C files."""
    files = sorted((FIRMWARE_DIR / "runtime").glob("*.c"))
    for d in _shared_port_dirs(board):
        files += sorted(d.glob("*.c"))
    port_dir = FIRMWARE_DIR / "ports" / board["port"]
    if not port_dir.is_dir():
        raise ValueError(f"board {board['name']}: port directory {port_dir} does not exist")
    files += sorted(port_dir.glob("*.c"))
    kernels = FIRMWARE_DIR / "kernels"
    if kernels.is_dir():
        files += sorted(kernels.glob("*.c"))
    return files + [Path(f) for f in model_c_files]


def firmware_include_dirs(board: dict) -> list[Path]:
    dirs = [FIRMWARE_DIR / "runtime", FIRMWARE_DIR / "ports" / board["port"], *_shared_port_dirs(board)]
    if (FIRMWARE_DIR / "kernels").is_dir():
        dirs.append(FIRMWARE_DIR / "kernels")
    return dirs


def compile_firmware(c_files, include_dirs, board: dict, out_dir, *, opt: str = "-O2",
                     defines: dict | None = None, name: str = "firmware") -> Path:
    """Compiles and links c_files into out_dir/<name>.elf (with <name>.map and linker.ld).
    No C library start files; newlib-nano's libc is on the link line only so that compiler-
    generated memcpy/memset calls resolve (nothing else is pulled in; see the .map)."""
    gcc = _gcc()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    ld = out / "linker.ld"
    ld.write_text(render_linker_script(board))
    elf, map_file = out / f"{name}.elf", out / f"{name}.map"
    defs = {"TINYLM_BOARD_NAME": f'"{board["name"]}"', **board.get("defines", {}), **(defines or {})}
    cmd = [gcc, *board["cflags"], opt, "-g", "-std=c11", "-Wall", "-Wextra", "-Werror=implicit-function-declaration",
           "-ffunction-sections", "-fdata-sections", "-ffreestanding",
           *[f"-D{k}={v}" for k, v in defs.items()],
           *[f"-I{d}" for d in include_dirs],
           *[str(f) for f in c_files],
           "-nostartfiles", "--specs=nano.specs", f"-T{ld}",
           "-Wl,--gc-sections", f"-Wl,-Map={map_file}", "-o", str(elf), "-lgcc"]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise ToolchainError(f"firmware build failed:\n$ {' '.join(cmd)}\n{proc.stderr}")
    return elf


_SHF_WRITE, _SHF_ALLOC = 0x1, 0x2
_SHT_NOBITS = 8


def _sections(elf: Path):
    """(name, type, flags, size) of each section, read from the ELF32 little-endian headers."""
    data = Path(elf).read_bytes()
    if data[:4] != b"\x7fELF" or data[4] != 1 or data[5] != 1:
        raise ValueError(f"{elf} is not a 32-bit little-endian ELF")
    e_shoff, = struct.unpack_from("<I", data, 0x20)
    e_shentsize, e_shnum, e_shstrndx = struct.unpack_from("<HHH", data, 0x2E)
    headers = [struct.unpack_from("<IIIIIIIIII", data, e_shoff + i * e_shentsize)
               for i in range(e_shnum)]
    strtab_off = headers[e_shstrndx][4]
    for sh_name, sh_type, sh_flags, _addr, _off, sh_size, *_ in headers:
        end = data.index(b"\0", strtab_off + sh_name)
        yield data[strtab_off + sh_name:end].decode(), sh_type, sh_flags, sh_size


def elf_memory(elf) -> dict:
    """text/data/bss/stack bytes of a firmware ELF, plus flash_bytes = text + data and
    ram_bytes = data + bss + stack."""
    mem = {"text": 0, "data": 0, "bss": 0, "stack": 0}
    for name, sh_type, flags, size in _sections(elf):
        if not flags & _SHF_ALLOC:
            continue
        if name == ".stack":
            mem["stack"] += size
        elif sh_type == _SHT_NOBITS:
            mem["bss"] += size
        elif flags & _SHF_WRITE:
            mem["data"] += size
        else:
            mem["text"] += size
    mem["flash_bytes"] = mem["text"] + mem["data"]
    mem["ram_bytes"] = mem["data"] + mem["bss"] + mem["stack"]
    return mem


def check_budget(mem: dict, board: dict) -> list[str]:
    """Human-readable overruns of the board's flash/RAM (empty if it fits)."""
    problems = []
    for key in ("flash_bytes", "ram_bytes"):
        if mem[key] > board[key]:
            problems.append(f"{key.split('_')[0]}: {mem[key]} bytes > {board[key]} on {board['name']}")
    return problems
