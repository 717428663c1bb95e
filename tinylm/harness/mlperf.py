"""The MLPerf Tiny benchmark runner (benchmark/runner of mlcommons/tiny) as a client of our
firmware: `tinylm mlperf export` writes what it reads, `tinylm mlperf serve` puts a qemu-* build
on a pseudo-terminal for it. Steps: docs/mlperf.md.

What the runner reads (its datasets.py, script.py, device_manager.py, main.py):
- DATASET/<model>/ one binary file per example, sent as is by `db load N` + `db HEX` chunks:
  here the token ids as little-endian uint16, exactly what `tinylm eval` loads;
- DATASET/<model>/y_labels.csv without a header: file, number of classes, true class;
- a tests yaml keyed by the model id that `profile%` reports (m-model-[<model name>]), whose
  `model:` names the folder; accuracy: loop over every file, `infer 1 0`; performance: loop 5
  files, `infer N W` with N sized so each window lasts >= 10 s on the device clock (m-lap-us);
- a devices yaml whose `dut` entry matches the serial port by USB vid/pid and, with `check_name`,
  by the `m-name-dut-[...]` reply.
A pty has no USB ids, so for QEMU the export also writes qemu_port.py, a launcher that lists
the pty as a port with the ids of the devices yaml and then runs the runner's main.py unchanged."""
from __future__ import annotations

import json
import math
import re
import select
import subprocess
import time
from pathlib import Path

from tinylm.harness.evaluate import DeviceEngine, EvalError, check_labels, open_engine, select_examples
from tinylm.tokenizer import encode

# USB ids of the boards' debug probes (the serial port the runner must find) ...
USB_IDS = {"nrf52": {0x1366: [0x1015, 0x1051, 0x0105]},      # SEGGER J-Link OB of the nRF52840-DK
           "nucleo-l476rg": {0x0483: [0x374B]}}               # ST-LINK/V2-1
QEMU_USB = {0x1209: [0x0001]}   # ... and for a QEMU pty: pid.codes' test id, given to it by qemu_port.py
WINDOW_S = 12.0                 # performance window on the device clock (the runner wants >= 10 s)

SHIM = '''"""Runs the MLPerf Tiny runner's main.py (the current directory) on a QEMU pty written by
`tinylm mlperf serve`: the pty is listed as a serial port with the USB ids of devices.yaml
(a pty has none), and USB scanning is skipped when libusb is absent. Nothing else changes.
usage: cd tiny/benchmark/runner && python {out}/qemu_port.py /dev/pts/N -- --dataset_path=... """
import runpy, sys
from serial.tools import list_ports, list_ports_common

pty, args = sys.argv[1], sys.argv[sys.argv.index("--") + 1:]
def comports(include_links=False):
    p = list_ports_common.ListPortInfo(pty)
    p.vid, p.pid, p.description = {vid}, {pid}, "tinylm QEMU pty"
    return [p]
list_ports.comports = comports
try:
    import usb.core
    _find = usb.core.find
    def find(*a, **k):
        try:
            return _find(*a, **k)
        except usb.core.NoBackendError:
            return []
    usb.core.find = find
except ImportError:
    pass
sys.argv = ["main.py", *args]
sys.path.insert(0, ".")
runpy.run_path("main.py", run_name="__main__")
'''


def _q(s: str) -> str:
    return json.dumps(s)   # a JSON string is a YAML double-quoted scalar


def _usb_yaml(ids: dict) -> str:
    return "".join(f"    0x{vid:04X}:\n" + "".join(f"      - 0x{pid:04X}\n" for pid in pids) for vid, pids in ids.items())


def _measure_us(engine: DeviceEngine, ids_list) -> list[int]:
    """m-lap-us of one inference per input (the device clock), on QEMU or the device at --port."""
    engine.start()
    try:
        return [engine.predict(ids)["device_us"] for ids in ids_list]
    finally:
        engine.stop()


def export(build_dir, task: str, out, *, data=None, data_dir=None, limit=None, sample=None, seed=0,
           port=None, iterations=None, force=False) -> dict:
    engine = open_engine(build_dir, port)
    if not isinstance(engine, DeviceEngine):
        raise EvalError(f"{build_dir} is not a build directory (build.json): `tinylm build` first")
    from tinynlp_data import get_task
    t = get_task(task)
    if t.problem != "classification":
        raise EvalError(f"task {t.name} is {t.problem}: the runner scores classification (Top-1, AUC) only")
    if not force:
        check_labels(engine, t, build_dir)
    examples = select_examples(t, data, data_dir, sample, seed, limit)
    if not examples:
        raise EvalError("no examples to export")
    name = engine.graph.name
    folder = re.sub(r"[^A-Za-z0-9._-]", "_", name)
    out = Path(out)
    ds = out / folder
    ds.mkdir(parents=True, exist_ok=True)
    rows, inputs = [], []
    for k, ex in enumerate(examples):
        ids = encode(engine.tokenizer, ex.text, ex.text_b, engine.max_len)
        fname = f"{k:05d}_{re.sub(r'[^A-Za-z0-9._-]', '_', str(ex.id))}.bin"
        (ds / fname).write_bytes(b"".join(int(i).to_bytes(2, "little") for i in ids))
        rows.append(f"{fname},{len(t.label_names)},{int(ex.label)}\n")
        inputs.append(ids)
    (ds / "y_labels.csv").write_text("".join(rows))

    perf = inputs[:5]
    if iterations is None:
        if port is None and engine.board.get("runs_on") != "qemu":
            raise EvalError(f"board {engine.board['name']} is hardware: give --port to time the performance "
                            "windows on it, or --iterations N")
        shortest = min(_measure_us(engine, perf))
        iterations = max(1, math.ceil(WINDOW_S * 1e6 / max(shortest, 1)))
    warmups = 1
    loop = "loop 5" if len(inputs) >= 5 else f"loop {len(inputs)}"
    head = f"{_q(name)}:\n  name: {_q('tinylm ' + t.name)}\n  model: {_q(folder)}\n  truth_file: y_labels.csv\n  script:\n"
    (out / "tests_accuracy.yaml").write_text(head + "    - loop:\n      - download\n      - infer 1 0\n")
    (out / "tests_performance.yaml").write_text(
        head + f"    - {loop}:\n      - download\n      - infer {iterations} {warmups}\n")
    board = engine.board["name"]
    qemu = engine.board.get("runs_on") == "qemu"
    usb = QEMU_USB if qemu else USB_IDS.get(board)
    dut = (f"- name: {_q(board)}\n  type: dut\n  baud:\n    performance: 115200\n    accuracy: 115200\n"
           f"    energy: 115200\n  check_name: {_q('tinylm-' + name)}\n")
    dut += "  usb:\n" + _usb_yaml(usb) if usb else "  # usb: {VID: PID} of this board's serial port (lsusb)\n"
    (out / "devices.yaml").write_text(dut)
    if qemu:
        vid, pids = next(iter(QEMU_USB.items()))
        (out / "qemu_port.py").write_text(SHIM.format(out=out.resolve(), vid=hex(vid), pid=hex(pids[0])))
    return {"dataset": str(ds), "files": len(inputs), "model": name, "folder": folder, "iterations": iterations,
            "warmups": warmups, "board": board, "qemu": qemu, "out": str(out)}


class QemuPty:
    """A qemu-* build with its serial port on a pseudo-terminal (-serial pty), the boot banner
    already read (else the runner would take it for the reply to its first command)."""

    def __init__(self, build_dir, boot_timeout: float = 20.0):
        import shutil
        from codegen import toolchain
        from tinylm.harness.qemu import APT_HINT, QemuError
        meta = json.loads((Path(build_dir) / "build.json").read_text())
        board = toolchain.load_board(meta["board"])
        elf = Path(build_dir) / (meta.get("elf") or "firmware.elf")
        exe = shutil.which("qemu-system-arm")
        if exe is None:
            raise QemuError(f"qemu-system-arm not found on PATH; install it with: {APT_HINT}")
        if board.get("runs_on") != "qemu":
            raise QemuError(f"board {board['name']} does not run in QEMU: the runner talks to its serial port directly")
        self.proc = subprocess.Popen([exe, "-M", board["qemu_machine"], "-nographic", "-monitor", "none",
                                      "-kernel", str(elf), "-serial", "pty", "-icount", "shift=0,sleep=off"],
                                     stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        deadline, said = time.monotonic() + boot_timeout, b""
        while b"\n" not in said.split(b"redirected to ", 1)[-1] or b"redirected to " not in said:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise QemuError(f"QEMU did not open a pty: {said.decode(errors='replace').strip()}")
            if select.select([self.proc.stdout], [], [], 0.2)[0]:
                said += self.proc.stdout.read1(4096)
        self.path = said.split(b"redirected to ", 1)[1].split()[0].decode()
        self._drain_banner(deadline)

    def _drain_banner(self, deadline: float) -> None:
        """Drops what the firmware printed (the banner, if the pty kept it), then sends '%' and
        reads through its echo, so the link is idle and empty when the runner opens it."""
        import serial
        from tinylm.harness.qemu import QemuError
        with serial.Serial(self.path, 115200, timeout=0.5) as port:
            port.read(4096)
            port.write(b"%")
            buf = b""
            while b"e-[unknown command: ]\r\nm-ready\r\n" not in buf:
                if time.monotonic() > deadline:
                    raise QemuError(f"the firmware on {self.path} did not answer: got {buf!r}")
                buf += port.read(256)

    def stop(self) -> None:
        from tinylm.harness.qemu import stop_process
        stop_process(self.proc)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()
