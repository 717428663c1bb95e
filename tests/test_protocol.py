"""The firmware runtime + qemu-mps2 port + stub model, over a real serial socket in QEMU."""
from __future__ import annotations

import shutil
import time
from pathlib import Path

import pytest

from codegen import toolchain
from codegen.scores import format_scores, logit_scale_q, parse_scores, scores
from tinylm.harness.device import Device, DeviceError

STUB = Path(__file__).parent / "fixtures" / "stub_model.c"
VOCAB, MAXLEN, LABELS = 1000, 64, 3
SCALE_Q = logit_scale_q(1e-4)          # the stub's logit scale

pytestmark = [
    pytest.mark.skipif(shutil.which("arm-none-eabi-gcc") is None,
                       reason="arm-none-eabi-gcc not installed (" + toolchain.APT_HINT + ")"),
    pytest.mark.skipif(shutil.which("qemu-system-arm") is None,
                       reason="qemu-system-arm not installed (" + toolchain.APT_HINT + ")"),
]


def stub_scores(ids) -> str:
    """What m-results-[...] carries: the fixed-point softmax of the stub's logits."""
    return format_scores(scores(stub_logits(ids), *SCALE_Q))


def stub_logits(ids):
    """tests/fixtures/stub_model.c in Python (C's % on a non-negative sum)."""
    return [sum(t * (i + 1) * (j + 1) for i, t in enumerate(ids)) % 100003 - 50000
            for j in range(LABELS)]


@pytest.fixture(scope="session")
def board():
    return toolchain.load_board("qemu-m4")


@pytest.fixture(scope="session")
def elf(board, tmp_path_factory):
    out = tmp_path_factory.mktemp("fw")
    return toolchain.compile_firmware(toolchain.firmware_sources(board, [STUB]),
                                      toolchain.firmware_include_dirs(board), board, out)


@pytest.fixture(scope="session")
def qemu(board, elf):
    from tinylm.harness.qemu import QemuBoard
    with QemuBoard(board, elf) as q:
        yield q


@pytest.fixture(scope="session")
def dev(qemu):
    with Device(qemu.url, timeout=10) as d:
        yield d


def test_boot_banner(qemu):
    assert qemu.boot_banner.replace("\r\n", "\n").split("\n")[:2] == ["m-boot-[tinylm]", "m-ready"]


def test_name_profile_info(dev):
    assert dev.command("name") == ["m-name-dut-[tinylm-stub]"]
    assert dev.command("profile") == ["m-profile-[tinylm]", "m-model-[stub]", "m-board-[qemu-m4]"]
    assert dev.info() == {"model": "stub", "hash": "0123456789abcdef", "vocab": VOCAB,
                          "maxlen": MAXLEN, "labels": LABELS, "arena": 4096, "board": "qemu-m4",
                          "scale": "%d,%d" % SCALE_Q}


def test_framing_ignores_cr_lf(dev):
    dev.port.write(b"\r\n\r\n")
    assert dev.command("name%") == ["m-name-dut-[tinylm-stub]"]
    dev.port.write(b"\r\n")
    assert dev.command("na\r\nme") == ["m-name-dut-[tinylm-stub]"]


@pytest.mark.parametrize("ids", [[1], [1, 2, 3], [101, 999, 0, 7, 500] * 5, list(range(936, 1000)), [999] * 64])
def test_infer_logits(dev, ids):
    assert dev.infer(ids) == stub_logits(ids)
    assert dev.logits() == stub_logits(ids)
    assert dev.command("results") == [f"m-results-[{stub_scores(ids)}]"]


def test_infer_reply_shape_and_db_print(dev):
    dev.load([0x0123, 7])                            # little-endian uint16 each
    assert dev.command("db print") == ["m-buffer-[23010700]"]
    lines = dev.command("infer 3 2")
    assert lines[:3] == ["m-warmup-start-2", "m-warmup-done", "m-infer-start-3"]
    assert lines[3].startswith("m-lap-us-") and lines[4].startswith("m-lap-us-")
    t0, t1 = (int(line[len("m-lap-us-"):]) for line in lines[3:5])
    assert t1 >= t0
    expected = ",".join(map(str, stub_logits([0x0123, 7])))
    assert lines[5:] == ["m-infer-done", f"m-results-[{stub_scores([0x0123, 7])}]", f"m-tinylm-logits-[{expected}]"]


@pytest.mark.parametrize("ids", [[1], [2, 3], [999] * 64, [5, 17, 999, 3, 250, 42], list(range(64))])
def test_results_are_scores_with_the_logits_argmax(dev, ids):
    """m-results (EEMBC) is the fixed-point softmax, equal to its Python twin, non-negative, with
    the argmax of the int32 logits (which m-tinylm-logits and tinylm-logits% carry)."""
    logits = dev.infer(ids)
    assert logits == stub_logits(ids) and dev.last_scores == scores(logits, *SCALE_Q)
    assert min(dev.last_scores) >= 0 and abs(sum(dev.last_scores) - 10 ** 9) <= LABELS
    assert dev.last_scores.index(max(dev.last_scores)) == logits.index(max(logits))


def test_lap_us_runs_on_the_nominal_clock(dev, board):
    """m-lap-us is instructions / MHz of the board's clock (25 MHz on qemu-m4): one instruction
    per cycle, not QEMU's one per ns."""
    ids = list(range(1, 65))
    dev.infer(ids)
    per_inference = dev.cost()["instructions"]
    n = 200
    dev.infer_loaded(runs=n)
    t0, t1 = dev.last_lap_us
    expected_us = n * per_inference / (board["clock_hz"] / 1e6)
    # the loop's own instructions (abort check, clock read) come on top of the measured cost
    assert expected_us <= (t1 - t0) <= 1.15 * expected_us + 2


def test_cost_positive_and_repeatable(dev):
    ids = [5, 17, 999, 3, 250, 42]
    costs = []
    for _ in range(3):
        dev.infer(ids)
        costs.append(dev.cost())
        time.sleep(0.01)   # vary host timing; the count must not change
    assert costs[0]["instructions"] > 0 and costs == [costs[0]] * 3
    dev.infer(ids * 10)
    assert dev.cost()["instructions"] > costs[0]["instructions"]


def test_elf_within_budget(board, elf):
    mem = toolchain.elf_memory(elf)
    assert mem["text"] > 0 and mem["stack"] == board["stack_bytes"]
    assert mem["bss"] >= 4096                       # the stub's arena
    assert mem["flash_bytes"] == mem["text"] + mem["data"]
    assert mem["ram_bytes"] == mem["data"] + mem["bss"] + mem["stack"]
    assert toolchain.check_budget(mem, board) == []


# ---- every row of the error table in docs/protocol.md, each followed by a working command ----

def expect_error(dev, command, reason):
    with pytest.raises(DeviceError) as e:
        dev.command(command)
    assert e.value.reason == reason
    assert dev.command("name") == ["m-name-dut-[tinylm-stub]"]   # still serving


def test_error_unknown_command(dev):
    expect_error(dev, "bogus arg", "unknown command: bogus")
    expect_error(dev, "name extra", "unknown command: name")


def test_error_command_too_long(dev):
    expect_error(dev, "x" * 257, "command too long: max 256 chars")
    expect_error(dev, "db " + "0" * 1000, "command too long: max 256 chars")
    expect_error(dev, "y" * 256, "unknown command: " + "y" * 256)   # exactly 256 fits


@pytest.mark.parametrize("n", ["0", "3", str(2 * MAXLEN + 2), "", "x", "-2", "1" * 12])
def test_error_db_load_range(dev, n):
    expect_error(dev, f"db load {n}".rstrip(), f"db load: N must be even and in 2..{2 * MAXLEN}")
    assert dev.command(f"db load {2 * MAXLEN}") == [f"m-[Expecting {2 * MAXLEN} bytes]"]


@pytest.mark.parametrize("chunk", ["123", "zz", "0g", "01 02", "0x01", ""])
def test_error_db_bad_hex_discards_input(dev, chunk):
    assert dev.command("db load 4") == ["m-[Expecting 4 bytes]"]
    assert dev.command("db 0100") == []
    expect_error(dev, f"db {chunk}", "db: bad hex")
    expect_error(dev, "db 0200", "db: no load in progress")        # input was discarded
    expect_error(dev, "infer 1 0", "infer: no input loaded")
    assert dev.infer([1, 2]) == stub_logits([1, 2])


def test_error_db_more_bytes_than_announced(dev):
    assert dev.command("db load 4") == ["m-[Expecting 4 bytes]"]
    assert dev.command("db 01") == []
    expect_error(dev, "db 02030405", "db: more bytes than announced")
    expect_error(dev, "infer 1 0", "infer: no input loaded")
    assert dev.infer([3]) == stub_logits([3])


def test_error_db_hex_before_load(dev):
    dev.infer([4])                     # a complete input: further hex is still "no load"
    expect_error(dev, "db 0100", "db: no load in progress")
    assert dev.command("db print") == ["m-buffer-[0400]"]


def test_error_infer_without_input(dev):
    assert dev.command("db load 4") == ["m-[Expecting 4 bytes]"]
    assert dev.command("db 0100") == []          # incomplete
    expect_error(dev, "infer 1 0", "infer: no input loaded")
    assert dev.command("db 0200") == ["m-load-done"]
    assert dev.command("infer 1 0")[-2] == f"m-results-[{stub_scores([1, 2])}]"


def test_error_token_id_out_of_vocab(dev):
    dev.infer([7, 8])
    before = dev.logits()
    dev.load([5, 999, VOCAB, 65535])
    expect_error(dev, "infer 1 0", f"infer: token id {VOCAB} at 2 >= vocab {VOCAB}")
    assert dev.logits() == before                 # no inference ran
    dev.load([65535])
    expect_error(dev, "infer 1 0", f"infer: token id 65535 at 0 >= vocab {VOCAB}")
    assert dev.infer([VOCAB - 1]) == stub_logits([VOCAB - 1])


@pytest.mark.parametrize("args", ["", "1", "x 0", "1 y", "0 0", "1 0 1", "-1 0"])
def test_error_infer_usage(dev, args):
    dev.load([9])
    expect_error(dev, f"infer {args}".rstrip(), "infer: usage infer N W")
    assert dev.command("infer 1 0")[-2] == f"m-results-[{stub_scores([9])}]"


def test_fresh_device_and_labels_limit(board, tmp_path):
    """A build whose runtime holds fewer logits than the model has refuses to infer; a fresh
    device has empty results and zero cost."""
    from tinylm.harness.qemu import QemuBoard
    elf = toolchain.compile_firmware(toolchain.firmware_sources(board, [STUB]),
                                     toolchain.firmware_include_dirs(board), board, tmp_path,
                                     defines={"TINYLM_LABELS_MAX": 2})
    with QemuBoard(board, elf) as q, Device(q.url) as d:
        assert d.command("results") == ["m-results-[]"]
        assert d.command("tinylm-logits") == ["m-tinylm-logits-[]"]
        assert d.cost() == {"instructions": 0}
        d.load([1])
        expect_error(d, "infer 1 0", "infer: model has more labels than TINYLM_LABELS_MAX")


# ---- hardening: bytes the parser must refuse, numbers it must not take, inputs it must drop ----

def _raw(dev, data: bytes, timeout=10) -> list[str]:
    """Writes raw bytes and returns the reply lines through m-ready (the client's checks bypassed)."""
    dev.port.write(data)
    deadline, lines, buf = time.monotonic() + timeout, [], b""
    while time.monotonic() < deadline:
        buf += dev.port.read_until(b"\n")
        if buf.endswith(b"\n"):
            lines.append(buf.decode("latin-1").strip("\r\n"))
            buf = b""
            if lines[-1] == "m-ready":
                return lines
    raise AssertionError(f"no m-ready; got {lines} {buf!r}")


@pytest.mark.parametrize("data,reason", [
    (b"na\x00me%", "non-printable byte 0x00 at 2"),
    (b"\x1b[2Jx%", "non-printable byte 0x1b at 0"),
    (b"db load 4\x7f%", "non-printable byte 0x7f at 9"),
    (b"name\xff%", "non-printable byte 0xff at 4"),
    (b"bogus\tword%", "non-printable byte 0x09 at 5"),
    (b"\x00" + b"x" * 300 + b"%", "non-printable byte 0x00 at 0"),   # before the length check
])
def test_non_printable_bytes_are_refused_and_never_echoed(dev, data, reason):
    lines = _raw(dev, data)
    assert lines == [f"e-[{reason}]", "m-ready"]
    assert all(0x20 <= ord(c) <= 0x7e for line in lines for c in line)
    assert dev.command("name") == ["m-name-dut-[tinylm-stub]"]


def test_unknown_command_echo_is_printable(dev):
    lines = _raw(dev, b"w\x01rd%")
    assert lines[0].startswith("e-[") and "\x01" not in lines[0]


@pytest.mark.parametrize("command", ["db load 0000000004", "db load 1000000000", "infer 0000000001 0",
                                     "infer 1 0000000000"])
def test_ten_digit_numbers_are_refused(dev, command):
    dev.load([1, 2])
    with pytest.raises(DeviceError) as e:
        dev.command(command)
    assert e.value.reason in (f"db load: N must be even and in 2..{2 * MAXLEN}", "infer: usage infer N W")
    assert dev.command("db load 000000004") == ["m-[Expecting 4 bytes]"]   # 9 digits are fine
    assert dev.command("db 01000200") == ["m-load-done"]
    assert dev.command("infer 000000001 000000000")[-2] == f"m-results-[{stub_scores([1, 2])}]"


@pytest.mark.parametrize("bad", ["3", "0", "x", str(2 * MAXLEN + 2)])
def test_rejected_db_load_drops_the_previous_input(dev, bad):
    dev.infer([5, 6])                                   # a complete input is loaded
    expect_error(dev, f"db load {bad}", f"db load: N must be even and in 2..{2 * MAXLEN}")
    assert dev.command("db print") == ["m-buffer-[]"]
    expect_error(dev, "infer 1 0", "infer: no input loaded")


@pytest.fixture
def fresh_dev(board, elf):
    """A device of its own: these tests leave it busy if the firmware misbehaves."""
    from tinylm.harness.qemu import QemuBoard
    with QemuBoard(board, elf) as q, Device(q.url, timeout=10) as d:
        yield d


def test_a_byte_during_a_long_infer_aborts_it(fresh_dev):
    fresh_dev.load([1, 2, 3])
    fresh_dev.port.write(b"infer 999999999 999999999%")
    time.sleep(0.5)
    lines = _raw(fresh_dev, b"x", timeout=5)
    assert lines == ["m-warmup-start-999999999", "e-[infer: aborted]", "m-ready"]
    assert fresh_dev.command("results") == [f"m-results-[{stub_scores([1, 2, 3])}]"]
    fresh_dev.port.write(b"infer 999999999 0%")
    time.sleep(0.5)
    lines = _raw(fresh_dev, b"%", timeout=5)
    assert lines[-2:] == ["e-[infer: aborted]", "m-ready"] and lines[:3] == [
        "m-warmup-start-0", "m-warmup-done", "m-infer-start-999999999"]
    assert fresh_dev.infer([7]) == stub_logits([7])


def test_client_resynchronises_after_a_timeout_and_says_so(fresh_dev):
    from tinylm.harness.device import DeviceTimeout
    fresh_dev.load([4, 5])
    with pytest.raises(DeviceTimeout, match="resynchronised after a timeout"):
        fresh_dev.command("infer 999999999 0", timeout=0.5)
    assert fresh_dev.resyncs == 1
    assert fresh_dev.command("name") == ["m-name-dut-[tinylm-stub]"]      # not the infer's late reply
    assert fresh_dev.infer([4, 5]) == stub_logits([4, 5])
