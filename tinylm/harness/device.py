"""Host side of the serial protocol (docs/protocol.md) over pyserial: a USB CDC port
(/dev/ttyACM0), socket://host:port (QEMU), or rfc2217://."""
from __future__ import annotations

import re
import time

import serial

CMD_MAX = 256            # TINYLM_CMD_MAX in firmware/runtime/protocol.h
HEX_CHUNK = 100          # hex digits per "db HEX%" command

_INFO = re.compile(r"^m-tinylm-(\w+)-\[(.*)\]$")
_INT_INFO = {"vocab", "maxlen", "labels", "arena"}


class DeviceError(RuntimeError):
    """The device answered e-[reason]; .reason is the text inside the brackets."""

    def __init__(self, reason: str, command: str = ""):
        super().__init__(f"{command!r}: {reason}" if command else reason)
        self.reason = reason


class DeviceTimeout(TimeoutError):
    """No m-ready within the timeout."""


def _bracket(line: str, prefix: str) -> str:
    if not (line.startswith(prefix + "[") and line.endswith("]")):
        raise ValueError(f"expected {prefix}[...], got {line!r}")
    return line[len(prefix) + 1:-1]


def _ints(text: str) -> list[int]:
    return [int(v) for v in text.split(",")] if text else []


class Device:
    def __init__(self, url: str, *, timeout: float = 10.0, baudrate: int = 115200):
        self.timeout = timeout
        self.port = serial.serial_for_url(url, baudrate=baudrate, timeout=timeout)
        self.last_lap_us: tuple[int, int] | None = None

    def command(self, text: str, timeout: float | None = None) -> list[str]:
        """Sends one command ('%' appended if missing); returns the reply lines before m-ready.
        Raises DeviceError on an e-[...] line (after reading through its m-ready)."""
        if not text.endswith("%"):
            text += "%"
        self.port.write(text.encode("ascii"))
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        lines, error = [], None
        buf = b""
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise DeviceTimeout(f"no m-ready after {text!r}; got {lines + [buf.decode(errors='replace')]}")
            self.port.timeout = remaining
            buf += self.port.read_until(b"\n")
            if not buf.endswith(b"\n"):
                continue
            line = buf.decode("ascii", errors="replace").strip()
            buf = b""
            if not line:
                continue
            if line == "m-ready":
                break
            if line.startswith("e-[") and line.endswith("]"):
                error = line[3:-1]
            lines.append(line)
        if error is not None:
            raise DeviceError(error, text)
        return lines

    def name(self) -> str:
        return _bracket(self.command("name")[0], "m-name-")

    def info(self) -> dict:
        out = {}
        for line in self.command("tinylm-info"):
            m = _INFO.match(line)
            if m:
                key, value = m.groups()
                out[key] = int(value) if key in _INT_INFO else value
        return out

    def load(self, ids) -> None:
        ids = [int(i) for i in ids]
        if not ids or any(not 0 <= i < 65536 for i in ids):
            raise ValueError("ids must be a non-empty list of uint16 token ids")
        data = b"".join(i.to_bytes(2, "little") for i in ids).hex()
        self.command(f"db load {len(data) // 2}")
        for k in range(0, len(data), HEX_CHUNK):
            self.command(f"db {data[k:k + HEX_CHUNK]}")

    def infer(self, ids, runs: int = 1, warmup: int = 0) -> list[int]:
        """Loads ids, runs `infer runs warmup`, returns the int32 logits."""
        self.load(ids)
        return self.infer_loaded(runs, warmup)

    def infer_loaded(self, runs: int = 1, warmup: int = 0) -> list[int]:
        """Runs `infer runs warmup` on the input already loaded; returns the int32 logits."""
        lines = self.command(f"infer {runs} {warmup}")
        laps = [int(line[len("m-lap-us-"):]) for line in lines if line.startswith("m-lap-us-")]
        self.last_lap_us = tuple(laps) if len(laps) == 2 else None
        results = [line for line in lines if line.startswith("m-results-")]
        if not results:
            raise DeviceError(f"no m-results in reply {lines}")
        return _ints(_bracket(results[-1], "m-results-"))

    def logits(self) -> list[int]:
        return _ints(_bracket(self.command("tinylm-logits")[0], "m-tinylm-logits-"))

    def cost(self) -> dict:
        """{"instructions": N} (QEMU) or {"cycles": N} (hardware) of the last inference."""
        line = self.command("tinylm-cost")[0]
        m = re.match(r"^m-tinylm-(instr|cycles)-\[(\d+)\]$", line)
        if not m:
            raise DeviceError(f"bad tinylm-cost reply {line!r}")
        key = "instructions" if m.group(1) == "instr" else "cycles"
        return {key: int(m.group(2))}

    def close(self) -> None:
        self.port.close()

    def __enter__(self) -> "Device":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
