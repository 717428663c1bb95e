"""Host side of the serial protocol (docs/protocol.md) over pyserial: a USB CDC port
(/dev/ttyACM0), socket://host:port (QEMU), or rfc2217://.

The protocol is strictly request/response, so a reply read late belongs to an earlier command.
After a timeout (or a garbled line, or bytes waiting before a command) the client therefore
resynchronises before anything else is sent: one `%` (which aborts an infer loop, or ends a
command cut short), then `tinylm-sync-<k>%`, an unknown command the device echoes back; every line
up to that echo and its m-ready is stale and dropped. If that fails the port is reopened and it is
tried once more. Either way the exception says what happened, and so does the log."""
from __future__ import annotations

import itertools
import logging
import re
import time

import serial

CMD_MAX = 256            # TINYLM_CMD_MAX in firmware/runtime/protocol.h
HEX_CHUNK = 100          # hex digits per "db HEX%" command
SYNC_TIMEOUT = 5.0       # seconds for one resynchronisation attempt

_INFO = re.compile(r"^m-tinylm-(\w+)-\[(.*)\]$")
_INT_INFO = {"vocab", "maxlen", "labels", "arena", "window"}
_PRINTABLE = re.compile(r"^[\x20-\x7e]*$")
log = logging.getLogger("tinylm.device")


class DeviceError(RuntimeError):
    """The device answered e-[reason]; .reason is the text inside the brackets."""

    def __init__(self, reason: str, command: str = ""):
        super().__init__(f"{command!r}: {reason}" if command else reason)
        self.reason = reason


class DeviceTimeout(TimeoutError):
    """No m-ready within the timeout (the message says whether the link was resynchronised)."""


class GarbledReply(DeviceError):
    """A reply line that no firmware following docs/protocol.md prints."""


class DeviceUnreachable(RuntimeError):
    """The port cannot be opened, or the device on it never answers: one line saying what to check."""


def _open_hint(url: str, e: Exception) -> str:
    """What to check when `url` cannot be opened, from pyserial's message."""
    text = str(e)
    if url.startswith(("socket://", "rfc2217://")):
        if "refused" in text.lower():
            return (f"nothing listens at {url} (connection refused): is QEMU or the serial bridge "
                    "running, and is the host:port right?")
        return f"cannot connect to {url} ({text.split(': ', 1)[-1]}): check the host and port"
    if "No such file" in text or "Errno 2" in text:
        return (f"no device at {url}: is the board plugged in and powered? (ls /dev/ttyACM* /dev/ttyUSB* "
                "lists serial ports; tinylm flash BUILD puts the firmware on it)")
    if "Permission denied" in text or "Errno 13" in text:
        return f"no permission to open {url}: add your user to the dialout group (then log in again)"
    if "busy" in text.lower() or "Errno 16" in text:
        return f"{url} is busy: another program (a serial monitor, a runner) holds it; close it"
    return f"cannot open {url}: {text}"


def _bracket(line: str, prefix: str) -> str:
    if not (line.startswith(prefix + "[") and line.endswith("]")):
        raise ValueError(f"expected {prefix}[...], got {line!r}")
    return line[len(prefix) + 1:-1]


def _ints(text: str) -> list[int]:
    return [int(v) for v in text.split(",")] if text else []


class Device:
    def __init__(self, url: str, *, timeout: float = 10.0, baudrate: int = 115200, sync: bool = True):
        self.url, self.baudrate = url, baudrate
        self.timeout = timeout
        try:
            self.port = serial.serial_for_url(url, baudrate=baudrate, timeout=timeout)
        except (serial.SerialException, OSError, ValueError) as e:
            raise DeviceUnreachable(_open_hint(url, e)) from None
        self.last_lap_us: tuple[int, int] | None = None
        self.last_scores: list[int] | None = None   # m-results of the last infer, parts per billion
        self.resyncs = 0                 # how many times the link had to be resynchronised
        self._nonce = itertools.count(1)
        if sync:   # a banner or a reply of an earlier session may still sit in the port
            what = self._sync_or_reopen("on open")
            if what.startswith("could not"):
                self.port.close()
                raise DeviceUnreachable(
                    f"{url} opened but nothing answered a tinylm command within {SYNC_TIMEOUT:g} s: is tinylm "
                    f"firmware running on it (tinylm flash BUILD; reset the board), at {baudrate} baud, "
                    "and no other program reading the port?")

    # ---- framing ----
    def _read_line(self, deadline: float, buf: bytearray) -> str | None:
        """One line (without CR/LF) before the deadline, or None."""
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            self.port.timeout = remaining
            buf += self.port.read_until(b"\n")
            if buf.endswith(b"\n"):
                line = bytes(buf).decode("ascii", errors="replace").strip("\r\n")
                buf.clear()
                if line:
                    return line

    def send(self, text: str) -> str:
        """Writes one command ('%' appended if missing) and returns it. A '%' inside would make it
        two commands with two replies, desynchronising the link, so that is refused (as is
        non-ASCII); anything else the device refuses itself, with an e-[...] reply."""
        body = text[:-1] if text.endswith("%") else text
        if "%" in body or not body.isascii():
            raise ValueError(f"command {body!r} must be ASCII without '%' inside")
        self.port.write((body + "%").encode("ascii"))
        return body + "%"

    def read_reply(self, text: str = "", timeout: float | None = None) -> list[str]:
        """The reply lines up to m-ready (not included). Raises DeviceError on an e-[...] line,
        GarbledReply on a line that is neither m- nor e-[...], DeviceTimeout without m-ready;
        the last two resynchronise the link first."""
        limit = self.timeout if timeout is None else timeout
        deadline = time.monotonic() + limit
        lines, error, buf = [], None, bytearray()
        while True:
            line = self._read_line(deadline, buf)
            if line is None:
                got = lines + ([bytes(buf).decode(errors="replace")] if buf else [])
                raise DeviceTimeout(f"no m-ready after {text!r} within {limit:g} s; got {got}; "
                                    + self._sync_or_reopen(f"after a timeout on {text!r}"))
            if line == "m-ready":
                break
            if not _PRINTABLE.match(line) or not (line.startswith("m-") or line.startswith("e-[")):
                raise GarbledReply(f"garbled reply line {line!r}; " + self._sync_or_reopen("after a garbled line"), text)
            if line.startswith("e-[") and line.endswith("]"):
                error = line[3:-1]
            lines.append(line)
        if error is not None:
            raise DeviceError(error, text)
        return lines

    def command(self, text: str, timeout: float | None = None) -> list[str]:
        """Sends one command ('%' appended if missing); returns the reply lines before m-ready.
        Raises DeviceError on an e-[...] line (after reading through its m-ready)."""
        if self.port.in_waiting:   # nothing may arrive unasked: it is stale, or noise
            self._sync_or_reopen(f"before {text!r}: {self.port.in_waiting} unexpected bytes waiting")
        return self.read_reply(self.send(text), timeout)

    # ---- resynchronisation ----
    def sync(self, timeout: float = SYNC_TIMEOUT) -> int:
        """Brings the link back to a known state; returns the number of stale lines dropped.
        Raises DeviceTimeout if the device does not echo the sync command in time."""
        token = f"tinylm-sync-{next(self._nonce)}"
        self.port.write(b"%")                      # aborts an infer loop / ends a cut command
        self.port.write(f"{token}%".encode("ascii"))
        echo = f"e-[unknown command: {token}]"
        deadline = time.monotonic() + timeout
        stale, buf, seen = 0, bytearray(), False
        while True:
            line = self._read_line(deadline, buf)
            if line is None:
                raise DeviceTimeout(f"device did not answer the resynchronisation ({stale} lines read)")
            if seen and line == "m-ready":
                return stale
            seen = line == echo
            stale += 0 if seen else 1

    def _sync_or_reopen(self, why: str) -> str:
        """Resynchronises (reopening the port if need be); returns what happened, in words."""
        try:
            stale = self.sync()
            what = f"resynchronised {why} ({stale} stale lines dropped)"
        except (DeviceTimeout, serial.SerialException, OSError):
            try:
                self.port.close()
                self.port = serial.serial_for_url(self.url, baudrate=self.baudrate, timeout=self.timeout)
                stale = self.sync()
                what = f"reopened the port and resynchronised {why} ({stale} stale lines dropped)"
            except (DeviceTimeout, serial.SerialException, OSError) as e:
                what = f"could not resynchronise {why}: {e}"
                if why != "on open":   # on open the caller raises DeviceUnreachable, one line
                    log.warning(what)
                return what
        if why == "on open":   # the '%' itself is answered by an error: stale lines are expected
            log.debug(what)
        else:
            self.resyncs += 1
            log.warning(what)
        return what

    def name(self) -> str:
        line = self.command("name")[0]   # EEMBC's m-name-dut-[...]; firmware before it said m-name-[...]
        return _bracket(line, "m-name-dut-" if line.startswith("m-name-dut-") else "m-name-")

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
        """Runs `infer runs warmup` on the input already loaded; returns the int32 logits (its
        m-tinylm-logits line) and keeps the m-results scores in .last_scores (parts per billion)."""
        lines = self.command(f"infer {runs} {warmup}")
        laps = [int(line[len("m-lap-us-"):]) for line in lines if line.startswith("m-lap-us-")]
        self.last_lap_us = tuple(laps) if len(laps) == 2 else None
        results = [line for line in lines if line.startswith("m-results-")]
        if not results:
            raise DeviceError(f"no m-results in reply {lines}")
        logits = [line for line in lines if line.startswith("m-tinylm-logits-")]
        if not logits:   # firmware before the EEMBC scores: m-results held the int32 logits
            self.last_scores = None
            return _ints(_bracket(results[-1], "m-results-"))
        from codegen.scores import parse_scores
        self.last_scores = parse_scores(_bracket(results[-1], "m-results-"))
        return _ints(_bracket(logits[-1], "m-tinylm-logits-"))

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
