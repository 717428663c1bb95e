"""Board registry, hardware ports (compile + link), PlatformIO projects, `tinylm boards`,
`tinylm flash`, and the same logits in QEMU on four cores."""
from __future__ import annotations

import json
import shutil
import stat
import subprocess
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from codegen import build as B
from codegen import toolchain
from tinylm.cli import boards as cli_boards
from tinylm import graph as G
from tinylm.cli import app

HAVE_GCC = shutil.which("arm-none-eabi-gcc") is not None
HAVE_QEMU = shutil.which("qemu-system-arm") is not None
needs_gcc = pytest.mark.skipif(not HAVE_GCC, reason="arm-none-eabi-gcc not installed (" + toolchain.APT_HINT + ")")
needs_qemu = pytest.mark.skipif(not HAVE_QEMU, reason="qemu-system-arm not installed (" + toolchain.APT_HINT + ")")

QEMU_BOARDS = ["qemu-m4", "qemu-m7", "qemu-m33", "qemu-m55"]
HARDWARE_BOARDS = ["nrf52", "nucleo-l476rg"]
runner = CliRunner()


def _out(res) -> str:
    return res.output + (res.stderr if res.stderr_bytes is not None else "")


# ---------------------------------------------------------------- registry

def test_every_descriptor_is_complete():
    names = toolchain.known_boards()
    assert set(QEMU_BOARDS + HARDWARE_BOARDS) <= set(names)
    for name in names:
        b = toolchain.load_board(name)
        assert b["name"] == name
        for key in ("core", "fpu", "clock_hz", "runs_on", "description", "real_memory"):
            assert key in b, (name, key)
        assert b["runs_on"] in ("qemu", "hardware")
        assert (toolchain.FIRMWARE_DIR / "ports" / b["port"]).is_dir()
        assert f"-mcpu={b['core']}" in b["cflags"]
        if b["runs_on"] == "qemu":
            assert b["qemu_machine"]
        else:
            assert b["platformio"]["platform"] and b["platformio"]["board"]


def test_nrf52_descriptor_figures():
    b = toolchain.load_board("nrf52")
    assert (b["core"], b["fpu"], b["clock_hz"]) == ("cortex-m4", "fpv4-sp-d16", 64_000_000)
    assert (b["flash_origin"], b["flash_bytes"], b["ram_origin"], b["ram_bytes"]) == (0, 1 << 20, 0x20000000, 256 << 10)
    assert (b["platformio"]["platform"], b["platformio"]["board"]) == ("nordicnrf52", "nrf52840_dk")
    assert (b["port"], b["runs_on"]) == ("nrf52", "hardware")


def test_qemu_machines():
    machines = {n: toolchain.load_board(n)["qemu_machine"] for n in QEMU_BOARDS}
    assert machines == {"qemu-m4": "mps2-an386", "qemu-m7": "mps2-an500",
                        "qemu-m33": "mps2-an505", "qemu-m55": "mps3-an547"}


def test_unknown_board_lists_known_ones(tmp_path):
    with pytest.raises(ValueError, match="known boards: .*nrf52.*qemu-m4"):
        toolchain.load_board("nrf53")
    res = runner.invoke(app, ["build", "--board", "nrf53", "--out", str(tmp_path / "b")])
    assert res.exit_code == 1
    text = " ".join(_out(res).split())
    assert "unknown board 'nrf53'" in text and "nrf52" in text and "qemu-m55" in text


def test_boards_table_and_json():
    res = runner.invoke(app, ["boards", "--json"])
    assert res.exit_code == 0, _out(res)
    rows = json.loads(res.stdout)
    by = {r["board"]: r for r in rows}
    assert set(by) == set(toolchain.known_boards())
    assert by["nrf52"]["clock_hz"] == 64_000_000 and by["nrf52"]["runs_on"] == "hardware"
    assert by["qemu-m33"]["qemu_machine"] == "mps2-an505"
    res = runner.invoke(app, ["boards"], env={"COLUMNS": "160"})
    assert res.exit_code == 0
    for name in by:
        assert name in res.stdout
    assert "64 MHz" in res.stdout and "QEMU mps3-an547" in res.stdout and "hardware" in res.stdout


# ---------------------------------------------------------------- hardware builds

@pytest.fixture(scope="module")
def hw_builds(tmp_path_factory):
    if not HAVE_GCC:
        pytest.skip("arm-none-eabi-gcc not installed")
    out = {}
    for name in HARDWARE_BOARDS:
        d = tmp_path_factory.mktemp(name)
        out[name] = (d, B.build(None, name, d))
    return out


def _symbol(elf: Path, name: str) -> int:
    nm = subprocess.run(["arm-none-eabi-nm", str(elf)], capture_output=True, text=True, check=True).stdout
    for line in nm.splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[2] == name:
            return int(parts[0], 16)
    raise KeyError(name)


@needs_gcc
@pytest.mark.parametrize("name", HARDWARE_BOARDS)
def test_hardware_port_compiles_and_links_within_budget(hw_builds, name):
    d, mem = hw_builds[name]
    board = toolchain.load_board(name)
    assert 0 < mem["flash_bytes"] <= board["flash_bytes"]
    assert 0 < mem["ram_bytes"] <= board["ram_bytes"]
    elf = d / "firmware.elf"
    assert toolchain.elf_memory(elf)["flash_bytes"] == mem["flash_bytes"]
    assert _symbol(elf, "vector_table") == board["flash_origin"]
    assert _symbol(elf, "__stack_top") == board["ram_origin"] + board["ram_bytes"]
    # the project's src/ holds this board's port and no other
    src = {p.name for p in (d / "src").iterdir()}
    port = {p.name for p in (toolchain.FIRMWARE_DIR / "ports" / board["port"]).iterdir()}
    assert port <= src and "board_qemu.c" not in src


@needs_gcc
def test_nrf52_port_uses_dwt_cycles_and_uarte(hw_builds):
    d, _ = hw_builds["nrf52"]
    strings = subprocess.run(["arm-none-eabi-strings", str(d / "firmware.elf")], capture_output=True,
                             text=True, check=True).stdout.split()
    assert "cycles" in strings and "nrf52" in strings
    src = (d / "src" / "board_nrf52.c").read_text() + (d / "src" / "board_dwt.c").read_text()
    for needle in ("0x40002000u", "0x01D7E000u", "TINYLM_UART_TX_PIN 6u", "TINYLM_UART_RX_PIN 8u",
                   "0xE0001004u", "HFCLKSTART"):
        assert needle in src


@pytest.mark.parametrize("name", HARDWARE_BOARDS)
def test_platformio_ini_validates(tmp_path, name):
    from platformio.project.config import ProjectConfig
    B.build(None, name, tmp_path, compile=False)
    board = toolchain.load_board(name)
    cfg = ProjectConfig(str(tmp_path / "platformio.ini"))
    assert cfg.validate(envs=[name], silent=True)
    assert cfg.warnings == []
    env = f"env:{name}"
    assert cfg.get(env, "platform") == board["platformio"]["platform"]
    assert cfg.get(env, "board") == board["platformio"]["board"]
    assert cfg.get(env, "monitor_speed") == 115200
    assert cfg.get(env, "board_build.ldscript") == "linker.ld"
    assert cfg.get(env, "upload_protocol") == board["platformio"]["upload_protocol"]
    flags = cfg.get(env, "build_flags")
    assert all(f in flags for f in board["cflags"])
    assert f'-DTINYLM_BOARD_NAME=\\"{name}\\"' in flags
    assert any(f.startswith("-DTINYLM_CPU_HZ=") for f in flags)
    assert cfg.get(env, "extra_scripts") == ["pre:tinylm_extra.py"]
    assert "-mfloat-abi=hard" in (tmp_path / "tinylm_extra.py").read_text()
    ld = (tmp_path / "linker.ld").read_text()
    assert f"ORIGIN = {board['flash_origin']:#010x}, LENGTH = {board['flash_bytes']}" in ld
    assert (tmp_path / "src" / "main.c").is_file()


def test_model_too_large_is_refused_with_budget_table(tmp_path, monkeypatch):
    boards = tmp_path / "boards"
    boards.mkdir()
    text = (toolchain.BOARDS_DIR / "nrf52.toml").read_text()
    (boards / "tiny-nrf.toml").write_text(text.replace('name = "nrf52"', 'name = "tiny-nrf"')
                                          .replace("flash_bytes = 1048576", "flash_bytes = 262144"))
    monkeypatch.setattr(toolchain, "BOARDS_DIR", boards)
    with pytest.raises(B.BudgetError) as e:
        B.build(None, "tiny-nrf", tmp_path / "out")
    msg = str(e.value)
    g = G.load(B.DEFAULT_MODEL)
    largest = max(g.weights, key=lambda k: g.weights[k].nbytes)   # the token table
    assert "does not fit board tiny-nrf" in msg and "budget 262144" in msg
    assert "tensor" in msg and largest in msg            # the per-tensor table
    res = runner.invoke(app, ["build", "--board", "tiny-nrf", "--out", str(tmp_path / "out2")])
    assert res.exit_code == 1 and largest in _out(res)
    assert not (tmp_path / "out2" / "firmware.elf").exists()


# ---------------------------------------------------------------- eval / flash on hardware builds

@pytest.fixture
def nrf52_project(tmp_path):
    B.build(None, "nrf52", tmp_path / "n", compile=False)
    return tmp_path / "n"


def test_eval_on_hardware_build_without_port_names_the_flag(nrf52_project):
    res = runner.invoke(app, ["eval", str(nrf52_project), "--task", "emotion", "--limit", "1"])
    assert res.exit_code == 1
    text = " ".join(_out(res).split())
    assert "board nrf52 is real hardware" in text and "--port" in text


def test_flash_without_platformio_says_what_to_install(nrf52_project, monkeypatch):
    monkeypatch.setattr(cli_boards, "find_pio", lambda: None)
    res = runner.invoke(app, ["flash", str(nrf52_project)])
    assert res.exit_code == 1
    text = " ".join(_out(res).split())
    assert "pip install platformio" in text
    assert "pio pkg install --global --platform nordicnrf52" in text


def test_flash_without_the_platform_says_what_to_install(nrf52_project):
    pio = cli_boards.find_pio()
    if pio is None:
        pytest.skip("PlatformIO not installed")
    if "nordicnrf52" in cli_boards.installed_platforms(pio):
        pytest.skip("nordicnrf52 is installed here")
    res = runner.invoke(app, ["flash", str(nrf52_project)])
    assert res.exit_code == 1
    text = " ".join(_out(res).split())
    assert "platform 'nordicnrf52' is not installed" in text
    assert "pkg install --global --platform nordicnrf52" in text


def _fake_pio(tmp_path: Path, rc: int) -> Path:
    log = tmp_path / "pio-args.txt"
    exe = tmp_path / "pio"
    exe.write_text(f"""#!/bin/sh
if [ "$1" = platform ]; then echo '[{{"name": "nordicnrf52"}}]'; exit 0; fi
echo "$@" > {log}
echo "Uploading .pio/build/nrf52/firmware.hex"
exit {rc}
""")
    exe.chmod(exe.stat().st_mode | stat.S_IEXEC)
    return exe


@pytest.mark.parametrize("rc", [0, 1])
def test_flash_runs_pio_upload_and_reports(nrf52_project, tmp_path, monkeypatch, rc):
    exe = _fake_pio(tmp_path, rc)
    monkeypatch.setattr(cli_boards, "find_pio", lambda: str(exe))
    res = runner.invoke(app, ["flash", str(nrf52_project)])
    args = (tmp_path / "pio-args.txt").read_text().split()
    assert args == ["run", "-d", str(nrf52_project), "-e", "nrf52", "-t", "upload"]
    if rc == 0:
        assert res.exit_code == 0, _out(res)
        assert "flashed" in res.stdout and "--port /dev/ttyACM0" in res.stdout
    else:
        assert res.exit_code == 1
        assert "upload failed (pio exit code 1)" in _out(res) and "Uploading" in _out(res)


def test_flash_refuses_a_qemu_build(tmp_path):
    B.build(None, "qemu-m4", tmp_path / "q", compile=False)
    res = runner.invoke(app, ["flash", str(tmp_path / "q")])
    assert res.exit_code == 1 and "runs in QEMU" in " ".join(_out(res).split())


# ---------------------------------------------------------------- same logits on four QEMU cores

@needs_gcc
@needs_qemu
def test_same_logits_on_qemu_m4_m7_m33_m55(tmp_path):
    from tinylm.graph import reference
    from tinylm.harness.device import Device
    from tinylm.harness.qemu import QemuBoard

    g = G.load(B.DEFAULT_MODEL)
    rng = np.random.default_rng(5)
    vocab = int(g.meta["vocab"])
    inputs = [[2, 3], [2] + rng.integers(5, vocab, 20).tolist() + [3],
              rng.integers(0, vocab, g.max_len).tolist(), [2] + [vocab - 1] * 10 + [3]]
    want = [reference.run(g, ids).tolist() for ids in inputs]
    got, instr = {}, {}
    for name in QEMU_BOARDS:
        mem = B.build(None, name, tmp_path / name)
        board = toolchain.load_board(name)
        assert mem["flash_bytes"] <= board["flash_bytes"] and mem["ram_bytes"] <= board["ram_bytes"]
        with QemuBoard(board, tmp_path / name / "firmware.elf") as q, Device(q.url, timeout=60) as d:
            info = d.info()
            assert info["board"] == name and info["hash"] == g.sha256[:16]
            got[name] = [d.infer(ids) for ids in inputs]
            instr[name] = d.cost()["instructions"]
    for name in QEMU_BOARDS:
        assert got[name] == want, name
        assert instr[name] > 100_000, name
