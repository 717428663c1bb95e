"""The serial client against a scripted device: late replies, garbled lines and stale bytes
never pass for the answer to the next command."""
from __future__ import annotations

import time

import pytest
import serial

from tinylm.harness import device as D


class ScriptedPort:
    """A pyserial-like port in front of a tiny model of the firmware's framing. Replies become
    readable at a set time, so a slow command can be made to answer after the client gave up."""

    def __init__(self, delays=None, garble=None):
        self.timeout, self.pending, self.inbox = 1.0, [], b""
        self.delays, self.garble, self.aborted = dict(delays or {}), dict(garble or {}), 0

    def reply(self, cmd: str) -> list[str]:
        if cmd == "name":
            return ["m-name-[tinylm-fake]"]
        if cmd.startswith("infer"):
            return ["m-warmup-start-0", "m-warmup-done", "m-infer-start-1", "m-lap-us-1", "m-lap-us-2",
                    "m-infer-done", "m-results-[1,2,3]"]
        return [f"e-[unknown command: {cmd.split(' ')[0]}]"]

    def write(self, data: bytes):
        now = time.monotonic()
        self.inbox += data
        while b"%" in self.inbox:
            cmd, self.inbox = self.inbox.split(b"%", 1)
            cmd = cmd.decode()
            if any(t > now for t, _ in self.pending) and not cmd:   # '%' aborts a slow command
                self.pending = [(now, b"e-[infer: aborted]\r\nm-ready\r\n")]
                self.aborted += 1
                continue
            lines = self.garble.pop(cmd, None) or self.reply(cmd)
            at = now + self.delays.pop(cmd, 0.0)
            self.pending.append((at, "".join(line + "\r\n" for line in lines + ["m-ready"]).encode("latin-1")))

    def _ready(self) -> bytes:
        now = time.monotonic()
        out = b"".join(d for t, d in self.pending if t <= now)
        self.pending = [(t, d) for t, d in self.pending if t > now]
        return out

    @property
    def in_waiting(self) -> int:
        self.stash = getattr(self, "stash", b"") + self._ready()
        return len(self.stash)

    def read_until(self, end: bytes) -> bytes:
        deadline = time.monotonic() + (self.timeout or 0)
        while True:
            self.stash = getattr(self, "stash", b"") + self._ready()
            if end in self.stash:
                line, self.stash = self.stash.split(end, 1)
                return line + end
            if time.monotonic() >= deadline:
                out, self.stash = self.stash, b""
                return out
            time.sleep(0.005)

    def close(self):
        pass


@pytest.fixture
def fake(monkeypatch):
    ports = []

    def open_(url, **kw):
        ports.append(ScriptedPort(**getattr(open_, "script", {})))
        return ports[-1]
    monkeypatch.setattr(serial, "serial_for_url", open_)
    return open_, ports


def test_late_reply_is_not_taken_for_the_next_one(fake):
    open_, ports = fake
    open_.script = {"delays": {"infer 1 0": 0.6}}
    dev = D.Device("fake://", timeout=0.2)
    with pytest.raises(D.DeviceTimeout, match="resynchronised after a timeout on 'infer 1 0%'"):
        dev.infer_loaded()
    assert dev.command("name") == ["m-name-[tinylm-fake]"] and dev.resyncs == 1


def test_garbled_line_is_refused_and_the_link_resynchronised(fake):
    open_, ports = fake
    open_.script = {"garble": {"name": ["m-name-[tinylm-fa\x00ke]"]}}
    dev = D.Device("fake://", timeout=1)
    with pytest.raises(D.GarbledReply, match="garbled reply line"):
        dev.command("name")
    assert dev.command("name") == ["m-name-[tinylm-fake]"] and dev.resyncs == 1
    open_.script = {"garble": {"name": ["hello from a bootloader", "m-name-[tinylm-fake]"]}}
    with pytest.raises(D.GarbledReply):
        D.Device("fake://", timeout=1).command("name")


def test_stale_bytes_before_a_command_are_dropped(fake):
    open_, ports = fake
    open_.script = {}
    dev = D.Device("fake://", timeout=1)
    ports[-1].pending.append((0.0, b"m-results-[9,9,9]\r\nm-ready\r\n"))      # a reply nobody asked for
    assert dev.command("name") == ["m-name-[tinylm-fake]"] and dev.resyncs == 1


@pytest.mark.parametrize("text", ["na%me", "infer 1 0%name", "caf\u00e9"])
def test_client_refuses_to_send_what_would_split_a_command(fake, text):
    open_, ports = fake
    open_.script = {}
    with pytest.raises(ValueError):
        D.Device("fake://", timeout=1).send(text)
