"""The C kernels in firmware/kernels are bit-exact with their numpy twins in tinylm.graph.ops.

All kernels plus tests/kernel_driver.c are compiled ONCE per session with ASan+UBSan
into a driver process that stays alive and answers one case per request over
stdin/stdout, so hypothesis examples cost no fork. Inputs and outputs are malloc'ed at
exact size in the driver, so an out-of-bounds access fails the example too.
"""
from __future__ import annotations

import os
import re
import shutil
import struct
import subprocess
import tempfile
from pathlib import Path

import sys

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run from a checkout without `pip install -e .`
    sys.path.insert(0, str(ROOT))

from tinylm.graph import ops
# TINYLM_KERNELS_DIR points the tests at another copy of the kernels (mutation checks)
KDIR = Path(os.environ.get("TINYLM_KERNELS_DIR", ROOT / "firmware" / "kernels"))
DRIVER_SRC = ROOT / "tests" / "kernel_driver.c"

# kernel -> numpy twin in tinylm.graph.ops (docs/kernels.md has the same table)
KERNELS = {
    "gather_s8": "gather",
    "gather_b32": "gather",                   # bit-packed uint32 rows
    "gather_b16": "gather",                   # bit-packed rows stored as uint16, zero-extended to uint32
    "position_ids_s32": "position_ids",
    "matmul_s8_s32": "matmul_integer",
    "add_s32": "add_int32",
    "requantize_s32_s8": "requantize",
    "requantize_s32_s8_sh8": "requantize",    # int8 shift tensor
    "add_s8": "add_int8",
    "lut_s8": "lut",
    "transpose_s8": "transpose",
    "softmax_s32_s8": "softmax_int",
    "rmsnorm_s8": "rmsnorm_int",
    "segment_ids_s32": "segment_ids",
    "attention_s8": "attention_int",
    "causal_dwconv_s8_s32": "causal_dwconv_int",
    "fully_connected_s8": "matmul_integer",    # + add_int32 + requantize (+ lut), fused
    "binarize_s8_b32": "binarize_int",         # binary ops: tests/test_binary.py
    "binary_matmul_b32_s32": "binary_matmul_int",
    "binary_mask_matmul_b32_s32": "binary_mask_matmul_int",
    "binary_dense_b32_b32": "binary_matmul_int",   # + add_int32 + requantize + binarize_int, thresholds
}
OP = {name: i for i, name in enumerate(
    ["gather", "position_ids", "matmul", "add_s32", "requantize", "add_s8",
     "lut", "transpose", "softmax", "rmsnorm", "isqrt",
     "segment_ids", "attention", "causal_dwconv", "fully_connected", "binarize", "binary_matmul",
     "binary_mask_matmul", "binary_dense", "gather_b32", "gather_b16", "requantize_sh8"])}

SAN_FLAGS = ["-std=c99", "-O1", "-g", "-fsanitize=address,undefined",
             "-fno-sanitize-recover=all", "-Werror", "-Wall", "-Wextra"]
# what the firmware build requires of every kernel, plus a few cheap extras
STRICT_FLAGS = ["-std=c99", "-Wall", "-Wextra", "-Werror", "-pedantic", "-Wvla",
                "-Wconversion", "-Wsign-conversion"]
M4_FLAGS = ["-mcpu=cortex-m4", "-mthumb", "-mfpu=fpv4-sp-d16", "-mfloat-abi=hard", "-O2"]

CASES = settings(max_examples=200, deadline=None,
                 suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def kernel_sources() -> list[Path]:
    return [KDIR / f"{k}.c" for k in KERNELS]


# ----------------------------------------------------------------------------- driver

class KernelDriver:
    """A long-lived sanitized driver process; restarted after a crash."""

    def __init__(self, exe: Path, workdir: Path):
        self.exe, self.workdir, self.proc, self.errfile = exe, workdir, None, None
        self.env = dict(os.environ, ASAN_OPTIONS="detect_leaks=0:abort_on_error=0",
                        UBSAN_OPTIONS="print_stacktrace=1")

    def _start(self):
        self.errfile = tempfile.TemporaryFile(dir=self.workdir)
        self.proc = subprocess.Popen([str(self.exe)], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=self.errfile, env=self.env)

    def close(self):
        if self.proc is not None:
            self.proc.stdin.close()
            self.proc.wait(timeout=10)
            self.proc = None

    def _died(self, what: str):
        proc, self.proc = self.proc, None
        try:
            proc.kill()
        except OSError:
            pass
        proc.wait()
        self.errfile.seek(0)
        err = self.errfile.read().decode(errors="replace")
        raise AssertionError(f"kernel driver {what} (exit {proc.returncode}):\n{err[-6000:]}")

    def _read(self, n: int) -> bytes:
        data = self.proc.stdout.read(n)
        if data is None or len(data) != n:
            self._died("died (sanitizer report or crash)")
        return data

    def run(self, op: str, params, arrays) -> bytes:
        if self.proc is None:
            self._start()
        parts = [struct.pack("<ii", OP[op], len(params)),
                 struct.pack(f"<{len(params)}i", *[int(p) for p in params]),
                 struct.pack("<i", len(arrays))]
        for arr in arrays:
            arr = np.ascontiguousarray(arr)
            parts.append(struct.pack("<ii", arr.dtype.itemsize, arr.size))
            parts.append(arr.astype(arr.dtype.newbyteorder("<"), copy=False).tobytes())
        try:
            self.proc.stdin.write(b"".join(parts))
            self.proc.stdin.flush()
        except BrokenPipeError:
            self._died("died before reading the case")
        status, nbytes = struct.unpack("<ii", self._read(8))
        assert status == 0
        return self._read(nbytes)


@pytest.fixture(scope="session")
def driver(tmp_path_factory):
    gcc = shutil.which("gcc")
    if gcc is None:
        pytest.skip("host gcc not found")
    out = tmp_path_factory.mktemp("kernels")
    exe = out / "kernel_driver"
    subprocess.run([gcc, *SAN_FLAGS, f"-I{KDIR}", *map(str, kernel_sources()), str(DRIVER_SRC),
                    "-o", str(exe)], check=True, capture_output=True, text=True)
    d = KernelDriver(exe, out)
    yield d
    d.close()


def check(got: np.ndarray, want: np.ndarray):
    want = np.asarray(want)
    assert got.dtype == want.dtype and got.shape == want.shape
    if not np.array_equal(got, want):
        bad = np.argwhere(got != want)[:8]
        detail = ", ".join(f"{tuple(i)}: C {got[tuple(i)]} != numpy {want[tuple(i)]}" for i in bad)
        raise AssertionError(f"{len(np.argwhere(got != want))} mismatches: {detail}")


# ----------------------------------------------------------------------------- strategies

S8 = st.one_of(st.sampled_from([-128, 127, -1, 0, 1]), st.integers(-128, 127))
S32_FULL = st.integers(-2**31, 2**31 - 1)
MULT = st.one_of(st.integers(0, 2**31 - 1), st.integers(0, 16), st.integers(2**30, 2**31 - 1),
                 st.sampled_from([0, 1, 2**31 - 1]))
SHIFT = st.one_of(st.integers(1, 62), st.integers(1, 6), st.integers(24, 44),
                  st.sampled_from([1, 31, 32, 62]))
DIM = st.integers(1, 12)


def s8_array(shape):
    return hnp.arrays(np.int8, shape, elements=S8)


def s32_array(shape, elements=S32_FULL):
    return hnp.arrays(np.int32, shape, elements=elements)


# ----------------------------------------------------------------------------- kernels

@CASES
@given(st.data(), DIM, DIM, st.integers(0, 12))
def test_gather(driver, data, rows, cols, n):
    table = data.draw(s8_array((rows, cols)))
    ids = data.draw(s32_array((n,), st.integers(0, rows - 1)))
    got = np.frombuffer(driver.run("gather", [rows, cols, n], [table, ids]), np.int8).reshape(n, cols)
    check(got, ops.gather(table, ids))


U16 = st.one_of(st.sampled_from([0, 1, 0x8000, 0xFFFF]), st.integers(0, 0xFFFF))


@CASES
@given(st.data(), DIM, st.integers(1, 4), st.integers(0, 12))
def test_gather_b32_and_b16(driver, data, rows, cols, n):
    """Bit-packed tables: uint32 rows as they are; uint16 rows zero-extended to uint32 words,
    i.e. the rows of the same table stored as uint32."""
    t16 = data.draw(hnp.arrays(np.uint16, (rows, cols), elements=U16))
    t32 = data.draw(hnp.arrays(np.uint32, (rows, cols), elements=st.integers(0, 2**32 - 1)))
    ids = data.draw(s32_array((n,), st.integers(0, rows - 1)))
    got = np.frombuffer(driver.run("gather_b16", [rows, cols, n], [t16, ids]), np.uint32).reshape(n, cols)
    check(got, ops.gather(t16, ids))
    check(got, ops.gather(t16.astype(np.uint32), ids))
    got = np.frombuffer(driver.run("gather_b32", [rows, cols, n], [t32, ids]), np.uint32).reshape(n, cols)
    check(got, ops.gather(t32, ids))


@settings(max_examples=10, deadline=None)
@given(st.integers(0, 300))
def test_position_ids(driver, n):
    got = np.frombuffer(driver.run("position_ids", [n], []), np.int32)
    check(got, ops.position_ids(np.zeros(n, np.int32)))


@CASES
@given(st.data(), st.integers(1, 9), st.integers(1, 40), st.integers(1, 9))
def test_matmul(driver, data, m, k, n):
    a = data.draw(s8_array((m, k)))
    b = data.draw(s8_array((k, n)))
    got = np.frombuffer(driver.run("matmul", [m, k, n], [a, b]), np.int32).reshape(m, n)
    check(got, ops.matmul_integer(a, b))


def test_matmul_extremes(driver):
    # the largest |sum| for this k: every product is (-128)*(-128) = 2**14
    m, k, n = 3, 1000, 5
    a = np.full((m, k), -128, np.int8)
    b = np.full((k, n), -128, np.int8)
    b[:, 1] = 127
    got = np.frombuffer(driver.run("matmul", [m, k, n], [a, b]), np.int32).reshape(m, n)
    check(got, ops.matmul_integer(a, b))


def fc_twin(x, w, bias, mult, shift, lut):
    """fully_connected_s8 is the composition of its ops' twins, nothing more."""
    acc = ops.matmul_integer(x, w)
    if bias is not None:
        acc = ops.add_int32(acc, bias)
    y = ops.requantize(acc, mult, shift)
    return ops.lut(y, lut) if lut is not None else y


def run_fc(driver, x, w, bias, mult, shift, lut):
    from codegen.fuse import pack_fc_weights
    (m, k), n = x.shape, w.shape[1]
    arrays = [x, pack_fc_weights(w), bias if bias is not None else np.zeros(n, np.int32), mult, shift,
              lut if lut is not None else np.zeros(256, np.int8)]
    out = driver.run("fully_connected", [m, k, n, len(mult), bias is not None, lut is not None], arrays)
    return np.frombuffer(out, np.int8).reshape(m, n)


@CASES
@given(st.data(), st.integers(1, 5), st.integers(1, 40), st.integers(1, 13), st.booleans(),
       st.booleans(), st.booleans())
def test_fully_connected(driver, data, m, k, n, per_channel, has_bias, has_lut):
    x = data.draw(s8_array((m, k)))
    w = data.draw(s8_array((k, n)))
    bias = data.draw(s32_array((n,), st.integers(-2**20, 2**20))) if has_bias else None
    ch = n if per_channel else 1
    mult = data.draw(s32_array((ch,), MULT))
    shift = data.draw(s32_array((ch,), SHIFT))
    lut = data.draw(s8_array((256,))) if has_lut else None
    check(run_fc(driver, x, w, bias, mult, shift, lut), fc_twin(x, w, bias, mult, shift, lut))


def test_fully_connected_extremes(driver):
    """The largest sums (all -128, k = 1000 near the int32 proof's edge with a bias), a k % 4
    tail and n % 4 columns, shifts on both sides of the fast form's 33."""
    m, k, n = 2, 1000, 7
    x = np.full((m, k), -128, np.int8)
    w = np.full((k, n), -128, np.int8)
    w[:, 1] = 127
    w[3::7, 5] = 0
    bias = np.array([2**31 - 1 - k * 2**14, -2**31 + k * 2**14, 0, 1, -1, 5, 7], np.int32)
    for mult, shift in [(2**31 - 1, 62), (2**31 - 1, 33), (2**30, 32), (12345, 31), (1, 1), (0, 40)]:
        args = (x, w, bias, np.array([mult], np.int32), np.array([shift], np.int32), None)
        check(run_fc(driver, *args), fc_twin(*args))


def test_pack_fc_weights_is_a_permutation():
    from codegen.fuse import pack_fc_weights
    for k, n in [(1, 1), (4, 4), (7, 9), (16, 128), (128, 6)]:
        w = np.arange(k * n, dtype=np.int64).reshape(k, n)
        p = pack_fc_weights(w).reshape(-1)
        assert sorted(p.tolist()) == list(range(k * n))
        assert p[:4].tolist() == w[:4, 0].tolist()[:min(4, k)] or k < 4


@settings(max_examples=300, deadline=None)
@given(S32_FULL, MULT, SHIFT)
def test_requantize_fast_form_on_the_spec(driver, x, mult, shift):
    """tinylm_requantize_s32's high-word form equals the int64 spec (every x, m, s)."""
    got = np.frombuffer(driver.run("requantize", [1, 1, 1], [np.array([x], np.int32),
                                                             np.array([mult], np.int32),
                                                             np.array([shift], np.int32)]), np.int8)
    check(got, ops.requantize(np.array([x], np.int32), np.array([mult]), np.array([shift])))


@CASES
@given(st.data(), DIM, DIM, st.booleans())
def test_add_s32(driver, data, rows, cols, broadcast):
    half = st.integers(-2**30, 2**30 - 1)  # codegen proves sums fit int32; so do we
    a = data.draw(s32_array((rows, cols), half))
    b_rows = 1 if broadcast else rows
    b = data.draw(s32_array((b_rows, cols), half))
    got = np.frombuffer(driver.run("add_s32", [rows, cols, b_rows], [a, b]), np.int32)
    want = ops.add_int32(a, b[0] if broadcast else b)
    check(got.reshape(rows, cols), want)


@CASES
@given(st.data(), DIM, DIM, st.booleans())
def test_requantize(driver, data, rows, cols, per_channel):
    x = data.draw(s32_array((rows, cols), st.one_of(S32_FULL, st.integers(-1000, 1000))))
    ch = cols if per_channel else 1
    mult = data.draw(s32_array((ch,), MULT))
    shift = data.draw(s32_array((ch,), SHIFT))
    got = np.frombuffer(driver.run("requantize", [ch, rows, cols], [x, mult, shift]), np.int8)
    check(got.reshape(rows, cols), ops.requantize(x, mult, shift))
    # the same shifts stored as int8 (binary graphs): requantize_s32_s8_sh8, the same result
    got = np.frombuffer(driver.run("requantize_sh8", [ch, rows, cols], [x, mult, shift.astype(np.int8)]), np.int8)
    check(got.reshape(rows, cols), ops.requantize(x, mult, shift.astype(np.int8)))
    check(got.reshape(rows, cols), ops.requantize(x, mult, shift))


SIGNED_MULT = st.one_of(MULT, MULT.map(lambda v: -v))


@CASES
@given(st.data(), st.integers(1, 64), SIGNED_MULT, SIGNED_MULT, SHIFT)
def test_add_s8(driver, data, count, ma, mb, shift):
    a = data.draw(s8_array((count,)))
    b = data.draw(s8_array((count,)))
    got = np.frombuffer(driver.run("add_s8", [count, ma, mb, shift], [a, b]), np.int8)
    check(got, ops.add_int8(a, b, ma, mb, shift))


@CASES
@given(st.data(), st.integers(0, 300))
def test_lut(driver, data, count):
    x = data.draw(s8_array((count,)))
    table = data.draw(s8_array((256,)))
    got = np.frombuffer(driver.run("lut", [count], [x, table]), np.int8)
    check(got, ops.lut(x, table))


def test_lut_every_input(driver):
    x = np.arange(-128, 128, dtype=np.int8)
    table = np.random.default_rng(0).integers(-128, 128, 256).astype(np.int8)
    check(np.frombuffer(driver.run("lut", [256], [x, table]), np.int8), ops.lut(x, table))


@CASES
@given(st.data(), st.integers(1, 17), st.integers(1, 17))
def test_transpose(driver, data, rows, cols):
    x = data.draw(s8_array((rows, cols)))
    got = np.frombuffer(driver.run("transpose", [rows, cols], [x]), np.int8).reshape(cols, rows)
    check(got, ops.transpose(x))


@st.composite
def exp_luts(draw):
    """uint16 exp tables with lut[0] > 0: realistic (65535 * exp(-i / 2**f)) or arbitrary."""
    k = draw(st.integers(1, 64))
    if draw(st.booleans()):
        f = draw(st.integers(0, 4))
        return np.round(65535 * np.exp(-np.arange(k) / 2.0**f)).astype(np.uint16)
    lut = draw(hnp.arrays(np.uint16, (k,), elements=st.integers(0, 65535)))
    lut[0] = draw(st.integers(1, 65535))
    return lut


@CASES
@given(st.data(), st.integers(1, 6), st.integers(1, 40), MULT, SHIFT, exp_luts())
def test_softmax(driver, data, rows, cols, mult, shift, lut):
    elems = st.one_of(S32_FULL, st.integers(-2000, 2000))
    x = data.draw(s32_array((rows, cols), elems))
    got = np.frombuffer(driver.run("softmax", [rows, cols, mult, shift, len(lut)], [x, lut]), np.int8)
    check(got.reshape(rows, cols), ops.softmax_int(x, mult, shift, lut))


def test_softmax_edges(driver):
    lut = np.array([65535, 30000, 5000, 1, 1, 1, 1, 60000], np.uint16)
    # widest score gap with the largest multiplier and shift: z needs all 64 unsigned bits
    x = np.array([[2**31 - 1, -2**31, 0, 2**31 - 1]], np.int32)
    for mult, shift in [(2**31 - 1, 62), (2**31 - 1, 33), (1, 1), (0, 5)]:
        got = np.frombuffer(driver.run("softmax", [1, 4, mult, shift, 8], [x, lut]), np.int8)
        check(got.reshape(1, 4), ops.softmax_int(x, mult, shift, lut))
    # largest sum the uint32 spec allows: 65536 equal scores, lut[0] = 65535
    cols = 65536
    x = np.full((1, cols), 7, np.int32)
    lut = np.array([65535], np.uint16)
    got = np.frombuffer(driver.run("softmax", [1, cols, 1, 1, 1], [x, lut]), np.int8)
    check(got.reshape(1, cols), ops.softmax_int(x, 1, 1, lut))


# rmsnorm products are < 2**27: these land outputs mid-range instead of saturated or 0
RMS_MULT_SHIFT = st.tuples(st.integers(2**30, 2**31 - 1), st.integers(38, 52))


@CASES
@given(st.data(), st.integers(1, 4), st.one_of(st.integers(1, 64), st.integers(1, 4096)),
       st.one_of(st.tuples(MULT, SHIFT), RMS_MULT_SHIFT))
def test_rmsnorm(driver, data, rows, cols, mult_shift):
    mult, shift = mult_shift
    x = data.draw(s8_array((rows, cols)))
    gain = data.draw(s8_array((cols,)))
    got = np.frombuffer(driver.run("rmsnorm", [rows, cols, mult, shift], [x, gain]), np.int8)
    check(got.reshape(rows, cols), ops.rmsnorm_int(x, gain, mult, shift))


@pytest.mark.parametrize("cols", [1, 2, 2622, 4095, 4096])
def test_rmsnorm_edges(driver, cols):
    rng = np.random.default_rng(cols)
    x = np.zeros((5, cols), np.int8)
    x[0, 0] = 1          # one +-1 in a long row: the largest x * gain * inv (2**27 at cols 2622)
    x[1, -1] = -1
    x[2, :] = -128       # the largest sum of squares
    x[4, :] = rng.integers(-128, 128, cols)   # x[3] stays zeros
    gain = np.full(cols, -128, np.int8)
    gain[::3] = 127
    for mult, shift in [(2**31 - 1, 62), (2**30, 40), (1, 1), (12345, 20)]:
        got = np.frombuffer(driver.run("rmsnorm", [5, cols, mult, shift], [x, gain]), np.int8)
        check(got.reshape(5, cols), ops.rmsnorm_int(x, gain, mult, shift))


@pytest.mark.parametrize("cols", [9, 1000, 4095])
def test_rmsnorm_isqrt_boundaries(driver, cols):
    """Rows whose Q16 mean square is a perfect square or one below: isqrt's edges."""
    a, b = (v.ravel() for v in np.meshgrid(*[np.arange(128, dtype=np.int64)] * 2, indexing="ij"))
    ms = ((a * a + b * b) << 16) // cols
    r = np.floor(np.sqrt(ms.astype(np.float64))).astype(np.int64)  # exact enough: ms < 2**31
    below = np.flatnonzero((r + 1) ** 2 == ms + 1)
    square = np.flatnonzero((r * r == ms) & (ms > 0))[:20]
    assert len(below) >= 5
    picks = np.concatenate([below, square])
    x = np.zeros((len(picks), cols), np.int8)
    x[:, 0], x[:, -1] = a[picks], -b[picks]
    gain = np.full(cols, 77, np.int8)
    gain[0], gain[-1] = 127, -128
    for mult, shift in [(2**30, 44), (1518500250, 47), (2**31 - 1, 62)]:
        got = np.frombuffer(driver.run("rmsnorm", [len(x), cols, mult, shift], [x, gain]), np.int8)
        check(got.reshape(x.shape), ops.rmsnorm_int(x, gain, mult, shift))


@settings(max_examples=30, deadline=None)
@given(st.lists(st.one_of(st.integers(0, 2**64 - 1), st.integers(0, 2**62 - 1),
                          st.integers(0, 2**32 - 1).map(lambda r: r * r),
                          st.integers(1, 2**32 - 1).map(lambda r: r * r - 1)),
                min_size=1, max_size=50))
def test_isqrt_helper(driver, values):
    """tinylm_isqrt_u64 (tinylm_fixedpoint.h) is the exact floor sqrt on all of uint64."""
    from math import isqrt
    values += [0, 1, 2, 3, 4, 2**64 - 1, (2**32 - 1) ** 2, 2**62, 2**62 - 1]
    v = np.array(values, np.uint64)
    got = np.frombuffer(driver.run("isqrt", [], [v]), np.uint64)
    assert [int(g) for g in got] == [isqrt(x) for x in values]
    small = [x for x in values if x < 2**62]  # ops.isqrt's domain
    assert [int(r) for r in ops.isqrt(np.array(small, np.int64))] == [isqrt(x) for x in small]


# ----------------------------------------------------------------------------- EmbBERT-Q

@CASES
@given(st.lists(st.one_of(st.sampled_from([4, 4, 0, 2]), st.integers(0, 8191)), max_size=40))
def test_segment_ids(driver, ids):
    ids = np.array(ids, np.int32)
    got = np.frombuffer(driver.run("segment_ids", [len(ids)], [ids]), np.int32)
    check(got, ops.segment_ids(ids))


def test_segment_ids_examples():
    assert ops.segment_ids(np.array([2, 7, 4, 9, 4, 5])).tolist() == [1, 1, 1, 2, 2, 2]
    assert ops.segment_ids(np.array([4])).tolist() == [1]
    assert ops.segment_ids(np.array([2, 9])).tolist() == [1, 1]


ATT_MULT = st.one_of(MULT, st.integers(2**30, 2**31 - 1).map(lambda v: v), st.integers(1, 4096))


@CASES
@given(st.data(), st.integers(1, 5), st.integers(1, 40), st.integers(1, 24), ATT_MULT, SHIFT,
       exp_luts(), RMS_MULT_SHIFT)
def test_attention(driver, data, m, n, d, mult, shift, lut, out_ms):
    q = data.draw(s8_array((m, d)))
    kv = data.draw(s8_array((n, d)))
    om, osh = out_ms if data.draw(st.booleans()) else (data.draw(MULT), data.draw(SHIFT))
    got = np.frombuffer(driver.run("attention", [m, n, d, mult, shift, len(lut), om, osh],
                                   [q, kv, lut]), np.int8)
    check(got.reshape(m, d), ops.attention_int(q, kv, mult, shift, lut, om, osh))


def test_attention_edges(driver):
    """Largest scores (all -128: d * 2**14) and the largest sums p * kv at n = 256."""
    from tinylm.quant import qmath
    lut = qmath.exp_lut()
    for n, d in [(256, 128), (1, 1), (3, 128)]:
        q = np.full((2, d), -128, np.int8)
        kv = np.full((n, d), -128, np.int8)
        kv[::2] = 127
        for mult, shift, om, osh in [(2**31 - 1, 62, 2**31 - 1, 62), (1 << 20, 30, 1 << 30, 40),
                                     (0, 1, 1, 1)]:
            got = np.frombuffer(driver.run("attention", [2, n, d, mult, shift, len(lut), om, osh],
                                           [q, kv, lut]), np.int8)
            check(got.reshape(2, d), ops.attention_int(q, kv, mult, shift, lut, om, osh))


def test_attention_is_softmax_then_matmul():
    rng = np.random.default_rng(1)
    q = rng.integers(-128, 128, (4, 16)).astype(np.int8)
    kv = rng.integers(-128, 128, (9, 16)).astype(np.int8)
    from tinylm.quant import qmath
    lut = qmath.exp_lut()
    p = ops.softmax_int(ops.matmul_integer(q, kv.T), 12345, 20, lut)
    want = ops.requantize(ops.matmul_integer(p, kv), np.array([1 << 29]), np.array([36]))
    check(ops.attention_int(q, kv, 12345, 20, lut, 1 << 29, 36), want)


@CASES
@given(st.data(), st.integers(1, 40), st.integers(1, 12), st.integers(1, 34))
def test_causal_dwconv(driver, data, n, d, k):
    x = data.draw(s8_array((n, d)))
    w = data.draw(s8_array((k, d)))
    bias = data.draw(s32_array((d,), st.integers(-2**30, 2**30)))
    t0 = data.draw(st.integers(0, n - 1))
    rows = data.draw(st.integers(0, n - t0))
    got = np.frombuffer(driver.run("causal_dwconv", [n, d, k, t0, rows], [x, w, bias]), np.int32)
    check(got.reshape(rows, d), ops.causal_dwconv_int(x, w, bias)[t0:t0 + rows])


def test_causal_dwconv_matches_direct_sum():
    rng = np.random.default_rng(2)
    x = rng.integers(-128, 128, (7, 3)).astype(np.int8)
    w = rng.integers(-128, 128, (4, 3)).astype(np.int8)
    b = rng.integers(-99, 99, 3).astype(np.int32)
    y = ops.causal_dwconv_int(x, w, b)
    for t in range(7):
        for c in range(3):
            want = b[c] + sum(int(w[j, c]) * int(x[t - 3 + j, c]) for j in range(4) if t - 3 + j >= 0)
            assert y[t, c] == want


def test_causal_dwconv_extremes(driver):
    n, d, k = 64, 128, 32
    x = np.full((n, d), -128, np.int8)
    w = np.full((k, d), -128, np.int8)
    bias = np.full(d, 2**31 - 1 - k * 2**14, np.int32)
    got = np.frombuffer(driver.run("causal_dwconv", [n, d, k, 0, n], [x, w, bias]), np.int32)
    check(got.reshape(n, d), ops.causal_dwconv_int(x, w, bias))


# ----------------------------------------------------------------------------- builds

def _strip_comments(src: str) -> str:
    return re.sub(r"/\*.*?\*/|//[^\n]*", " ", src, flags=re.S)


def test_kernel_files_and_header_agree():
    header = (KDIR / "tinylm_kernels.h").read_text()
    for kernel, twin in KERNELS.items():
        assert (KDIR / f"{kernel}.c").is_file(), kernel
        assert re.search(rf"\bvoid {kernel}\(", header), kernel
        assert f"tinylm.graph.ops.{twin}" in header, f"{kernel} must name its twin tinylm.graph.ops.{twin}"
        assert callable(getattr(ops, twin))


@pytest.mark.parametrize("kernel", list(KERNELS))
def test_kernel_is_freestanding_integer_c(kernel):
    """No floats, no heap, no libm: checked on the source with comments removed."""
    code = _strip_comments((KDIR / f"{kernel}.c").read_text())
    for header in ("tinylm_fixedpoint.h", "tinylm_popcount.h"):
        code += _strip_comments((KDIR / header).read_text())
    for word in ["float", "double", "malloc", "calloc", "realloc", "free", "sqrt", "math.h",
                 "stdlib.h"]:
        assert not re.search(rf"\b{re.escape(word)}\b", code), f"{kernel}: uses {word}"


@pytest.mark.parametrize("cc,flags", [
    ("gcc", ["-O2"]),
    ("arm-none-eabi-gcc", M4_FLAGS),
], ids=["host", "cortex-m4"])
def test_kernels_compile_warning_free(tmp_path, cc, flags):
    exe = shutil.which(cc)
    if exe is None:
        pytest.skip(f"{cc} not found on PATH: cannot check the Cortex-M4 build")
    srcs = [str(p) for p in kernel_sources()]
    r = subprocess.run([exe, *STRICT_FLAGS, *flags, f"-I{KDIR}", "-c", *srcs],
                       cwd=tmp_path, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    if cc.startswith("arm"):
        nm = shutil.which("arm-none-eabi-nm")
        if nm is None:
            return
        objs = [str(tmp_path / f"{k}.o") for k in KERNELS]
        undef = set(subprocess.run([nm, "-u", *objs], capture_output=True, text=True,
                                   check=True).stdout.split()) - {"U"}
        undef = {u for u in undef if not u.endswith(".o:") and u}
        # only memcpy/memset and libgcc's 64-bit integer helpers may be pulled in
        allowed = re.compile(r"^(memcpy|memset|memmove|__aeabi_(u?ldivmod|uidivmod?|idivmod?|"
                             r"llsl|llsr|lasr|lmul|lcmp|ulcmp|mem(cpy|set|move|clr)[48]?))$")
        assert all(allowed.match(u) for u in undef), sorted(undef)
