"""Run firmware in QEMU with its serial port on a local TCP socket.

    with QemuBoard(board, elf) as q:
        dev = Device(q.url)

QEMU runs with -icount shift=0,sleep=off (one instruction = 1 ns of virtual time, so counters
are exactly repeatable) and nodelay on the socket (without it each reply costs ~40 ms)."""
from __future__ import annotations

import shutil
import socket
import subprocess
import time
from pathlib import Path

APT_HINT = "apt-get install -y --no-install-recommends qemu-system-arm"


def stop_process(proc: subprocess.Popen) -> None:
    """Terminate a QEMU process, and kill it if it has not gone in 5 s."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


class QemuError(RuntimeError):
    """QEMU is missing, exited, or the firmware never became ready."""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class QemuBoard:
    def __init__(self, board: dict, elf, *, boot_timeout: float = 20.0):
        exe = shutil.which("qemu-system-arm")
        if exe is None:
            raise QemuError(f"qemu-system-arm not found on PATH; install it with: {APT_HINT}")
        if board.get("runs_on") != "qemu" or "qemu_machine" not in board:
            raise QemuError(f"board {board.get('name')!r} does not run in QEMU (no qemu_machine)")
        self.port = _free_port()
        self.url = f"socket://127.0.0.1:{self.port}"
        # wait=on: the machine starts only when we connect, so the boot banner is not lost.
        self.cmd = [exe, "-M", board["qemu_machine"], "-nographic", "-monitor", "none",
                    "-kernel", str(Path(elf)),
                    "-serial", f"tcp:127.0.0.1:{self.port},server=on,wait=on,nodelay=on",
                    "-icount", "shift=0,sleep=off"]
        t0 = time.monotonic()
        self.proc = subprocess.Popen(self.cmd, stdin=subprocess.DEVNULL,
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        try:
            self.boot_banner = self._wait_ready(boot_timeout)
        except BaseException:
            self.stop()
            raise
        self.boot_seconds = time.monotonic() - t0

    def _wait_ready(self, timeout: float) -> str:
        """Connects once, reads up to m-ready, and disconnects (QEMU accepts the next client)."""
        deadline = time.monotonic() + timeout
        sock = None
        while sock is None:
            if self.proc.poll() is not None:
                raise QemuError(f"QEMU exited ({self.proc.returncode}): {self._output()}")
            try:
                sock = socket.create_connection(("127.0.0.1", self.port), timeout=0.5)
            except OSError:
                if time.monotonic() > deadline:
                    raise QemuError(f"QEMU never listened on port {self.port}")
                time.sleep(0.02)
        buf = b""
        with sock:
            while b"m-ready\r\n" not in buf:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise QemuError(f"firmware did not print m-ready; got {buf!r}")
                sock.settimeout(remaining)
                try:
                    chunk = sock.recv(4096)
                except socket.timeout:
                    continue
                if not chunk:
                    raise QemuError(f"QEMU closed the serial socket; got {buf!r}: {self._output()}")
                buf += chunk
        return buf.decode(errors="replace")

    def _output(self) -> str:
        if self.proc.poll() is None or self.proc.stdout is None:
            return ""
        return self.proc.stdout.read().decode(errors="replace").strip()

    def stop(self) -> None:
        stop_process(self.proc)
        if self.proc.stdout is not None:
            self.proc.stdout.close()

    def __enter__(self) -> "QemuBoard":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def __del__(self):
        proc = getattr(self, "proc", None)
        if proc is not None and proc.poll() is None:
            proc.kill()
