"""The DSP path of the kernels, which the host cannot execute, checked bit for bit in QEMU.

firmware/bench/kernel_server.c runs in QEMU (one server per board for the module) and answers
kernel cases over the serial socket; every output is compared with the numpy twin. Skipped
with a reason when arm-none-eabi-gcc or qemu-system-arm is missing.
"""
from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

pytestmark = pytest.mark.skipif(shutil.which("arm-none-eabi-gcc") is None or shutil.which("qemu-system-arm") is None,
                                reason="needs arm-none-eabi-gcc and qemu-system-arm")

from codegen.fuse import pack_fc_weights  # noqa: E402
from tinylm.graph import ops  # noqa: E402
from tinylm.harness import kernels as K  # noqa: E402

S8 = st.one_of(st.sampled_from([-128, 127, -1, 0, 1]), st.integers(-128, 127))


@pytest.fixture(scope="module")
def m4_server(tmp_path_factory):
    elf = K.build_server("qemu-m4", tmp_path_factory.mktemp("ks"))
    with K.KernelServer("qemu-m4", elf) as srv:
        yield srv


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                  HealthCheck.too_slow])
@given(st.data(), st.integers(1, 5), st.integers(1, 70), st.integers(1, 13), st.booleans(), st.booleans(),
       st.booleans())
def test_fully_connected_dsp(m4_server, data, m, k, n, per_channel, has_bias, has_lut):
    """Random shapes (k % 4 and n % 4 tails, unaligned x rows), extreme and ordinary values."""
    arr = lambda shape: np.array(data.draw(st.lists(S8, min_size=int(np.prod(shape)), max_size=int(np.prod(shape)))),  # noqa: E731
                                 np.int8).reshape(shape)
    x, w = arr((m, k)), arr((k, n))
    ch = n if per_channel else 1
    bias = np.array(data.draw(st.lists(st.integers(-2**20, 2**20), min_size=n, max_size=n)), np.int32)
    mult = np.array(data.draw(st.lists(st.one_of(st.integers(0, 2**31 - 1), st.integers(0, 9)), min_size=ch,
                                       max_size=ch)), np.int32)
    shift = np.array(data.draw(st.lists(st.one_of(st.integers(1, 62), st.integers(30, 46)), min_size=ch,
                                        max_size=ch)), np.int32)
    lut = arr((256,))
    want = ops.requantize(ops.add_int32(ops.matmul_integer(x, w), bias if has_bias else 0), mult, shift)
    want = ops.lut(want, lut) if has_lut else want
    _, raw = m4_server.run("fully_connected", [m, k, n, ch, has_bias, has_lut],
                           [x, pack_fc_weights(w), bias, mult, shift, lut])
    got = np.frombuffer(raw, np.int8).reshape(m, n)
    assert np.array_equal(got, want), np.argwhere(got != want)[:5]


def test_fully_connected_dsp_extremes(m4_server):
    m, k, n = 2, 1000, 8
    x = np.full((m, k), -128, np.int8)
    w = np.full((k, n), -128, np.int8)
    w[:, 1] = 127
    bias = np.array([2**31 - 1 - k * 2**14, -2**31 + k * 2**14, 0, 1, -1, 5, 7, 9], np.int32)
    for mult, shift in [(2**31 - 1, 62), (2**31 - 1, 33), (2**30, 32), (12345, 31)]:
        mm, ss = np.array([mult], np.int32), np.array([shift], np.int32)
        _, raw = m4_server.run("fully_connected", [m, k, n, 1, 1, 0], [x, pack_fc_weights(w), bias, mm, ss,
                                                                      np.zeros(256, np.int8)])
        want = ops.requantize(ops.add_int32(ops.matmul_integer(x, w), bias), mm, ss)
        assert np.array_equal(np.frombuffer(raw, np.int8).reshape(m, n), want)


@pytest.mark.parametrize("board", K.BOARDS)
def test_benchmark_cases_bit_exact(board, tmp_path):
    """Every kernel of the benchmark, on each QEMU core: run_cases raises on any difference."""
    rows = K.run_cases(board, K.cases(seed=1), build_dir=tmp_path)
    fc = [r for r in rows if r["kernel"] == "fully_connected_s8" and r["shape"].startswith("128->128")]
    assert fc and all(r["per_unit"] < 2.0 for r in fc), fc   # the DSP path is in use


def test_dsp_inner_loop_is_one_ldr_per_word(tmp_path):
    """The 32-bit load idiom stays one LDR under -ffreestanding (no memcpy call) and the block
    loop uses SXTB16 + SMLAD."""
    obj = tmp_path / "fc.o"
    subprocess.run(["arm-none-eabi-gcc", "-mcpu=cortex-m4", "-mthumb", "-mfloat-abi=hard", "-mfpu=fpv4-sp-d16",
                    "-O2", "-ffreestanding", "-std=c11", f"-I{ROOT / 'firmware' / 'kernels'}", "-c",
                    str(ROOT / "firmware" / "kernels" / "fully_connected_s8.c"), "-o", str(obj)], check=True)
    dis = subprocess.run(["arm-none-eabi-objdump", "-d", str(obj)], capture_output=True, text=True, check=True).stdout
    assert "memcpy" not in dis
    for fn, sxtb16 in (("fc_row1_dsp", 10), ("fc_rows2_dsp", 8)):   # 1x4 block; 2x2 (4 split x, 4 in the loop)
        block = dis.split(f"<{fn}>:")[1].split(">:\n")[0]
        assert not re.search(r"\bbl\b", block), block
        assert block.count("smlad") == 8 and block.count("sxtb16") == sxtb16, block


LUT = np.round(65535.0 * np.exp(-np.arange(512) / 2 ** 5)).astype(np.uint16)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                 HealthCheck.too_slow])
@given(st.data(), st.integers(1, 3), st.integers(1, 19), st.integers(1, 41), st.booleans())
def test_attention_dsp(m4_server, data, m, n, d, extreme):
    """attention_s8's DSP scores and p x kv (four value rows, four columns per step; n % 4 and
    d % 4 tails) against ops.attention_int."""
    if extreme:
        q = np.full((m, d), -128, np.int8)
        kv = np.full((n, d), data.draw(st.sampled_from([-128, 127])), np.int8)
    else:
        arr = lambda shape: np.array(data.draw(st.lists(S8, min_size=int(np.prod(shape)), max_size=int(np.prod(shape)))),  # noqa: E731
                                     np.int8).reshape(shape)
        q, kv = arr((m, d)), arr((n, d))
    mult = data.draw(st.integers(2**20, 2**31 - 1))
    shift = data.draw(st.integers(30, 46))
    om, os_ = data.draw(st.integers(2**29, 2**31 - 1)), data.draw(st.integers(33, 44))
    want = ops.attention_int(q, kv, mult, shift, LUT, om, os_)
    _, raw = m4_server.run("attention", [m, n, d, mult, shift, len(LUT), om, os_], [q, kv, LUT])
    got = np.frombuffer(raw, np.int8).reshape(m, d)
    assert np.array_equal(got, want), np.argwhere(got != want)[:5]


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                 HealthCheck.too_slow])
@given(st.data(), st.integers(1, 40), st.integers(-2**31 + 1, 2**31 - 1), st.integers(-2**31 + 1, 2**31 - 1),
       st.one_of(st.integers(1, 62), st.integers(8, 10), st.integers(29, 33)))
def test_add_s8_dsp(m4_server, data, count, ma, mb, shift):
    """add_s8's SMLAL low-word form (9 <= shift <= 31) and the int64 form elsewhere, on the spec."""
    arr = lambda: np.array(data.draw(st.lists(S8, min_size=count, max_size=count)), np.int8)  # noqa: E731
    a, b = arr(), arr()
    # scales of about 2**(shift - k), so that the result often lies inside [-128, 127]
    if data.draw(st.booleans()):
        k = data.draw(st.integers(0, 6))
        ma, mb = (int(v) >> max(0, 31 - shift + k) for v in (ma, mb))
    _, raw = m4_server.run("add_s8", [count, ma, mb, shift], [a, b])
    assert np.array_equal(np.frombuffer(raw, np.int8), ops.add_int8(a, b, ma, mb, shift))


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                 HealthCheck.too_slow])
@given(st.data(), st.integers(1, 4), st.integers(1, 9), st.booleans())
def test_requantize_dsp(m4_server, data, rows, cols, per_channel):
    """requantize_s32_s8's (and requantize_s32_s8_sh8's) SMMLA form (shift >= 33) and the int64 form,
    over the spec's domain."""
    ch = cols if per_channel else 1
    x = np.array(data.draw(st.lists(st.one_of(st.integers(-2**31, 2**31 - 1), st.sampled_from([-2**31, 2**31 - 1, -1, 0, 1])),
                                    min_size=rows * cols, max_size=rows * cols)), np.int32).reshape(rows, cols)
    mult = np.array(data.draw(st.lists(st.integers(0, 2**31 - 1), min_size=ch, max_size=ch)), np.int32)
    shift = np.array(data.draw(st.lists(st.one_of(st.integers(1, 62), st.integers(31, 34)), min_size=ch, max_size=ch)),
                     np.int32)
    _, raw = m4_server.run("requantize", [ch, rows, cols], [x, mult, shift])
    assert np.array_equal(np.frombuffer(raw, np.int8).reshape(rows, cols), ops.requantize(x, mult, shift))
    # requantize_s32_s8_sh8: the same shifts stored as int8 (binary graphs), the same result
    _, raw = m4_server.run("requantize_sh8", [ch, rows, cols], [x, mult, shift.astype(np.int8)])
    assert np.array_equal(np.frombuffer(raw, np.int8).reshape(rows, cols), ops.requantize(x, mult, shift))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                 HealthCheck.too_slow])
@given(st.data(), st.integers(1, 3), st.integers(1, 70), st.integers(0, 2**31 - 1),
       st.one_of(st.integers(1, 62), st.integers(33, 46)))
def test_rmsnorm_dsp(m4_server, data, rows, cols, mult, shift):
    """rmsnorm_s8's SMLAD sum of squares (cols % 4 tails) and SMMLA outputs against ops.rmsnorm_int."""
    arr = lambda shape: np.array(data.draw(st.lists(S8, min_size=int(np.prod(shape)), max_size=int(np.prod(shape)))),  # noqa: E731
                                 np.int8).reshape(shape)
    x, g = arr((rows, cols)), arr((cols,))
    _, raw = m4_server.run("rmsnorm", [rows, cols, mult, shift], [x, g])
    assert np.array_equal(np.frombuffer(raw, np.int8).reshape(rows, cols), ops.rmsnorm_int(x, g, mult, shift))


@pytest.mark.parametrize("k", [252, 255, 256, 257, 260])
def test_fully_connected_dsp_split_limit(m4_server, k):
    """Rows go in pairs through the split-x path up to k = FC_SPLIT_K (256), one at a time above."""
    rng = np.random.default_rng(k)
    m, n = 3, 10
    x = rng.integers(-128, 128, (m, k), dtype=np.int8)
    w = rng.integers(-128, 128, (k, n), dtype=np.int8)
    bias = rng.integers(-2**20, 2**20, n).astype(np.int32)
    mult = rng.integers(2**30, 2**31 - 1, n).astype(np.int32)
    shift = rng.integers(36, 46, n).astype(np.int32)
    _, raw = m4_server.run("fully_connected", [m, k, n, n, 1, 0], [x, pack_fc_weights(w), bias, mult, shift,
                                                                   np.zeros(256, np.int8)])
    want = ops.requantize(ops.add_int32(ops.matmul_integer(x, w), bias), mult, shift)
    assert np.array_equal(np.frombuffer(raw, np.int8).reshape(m, n), want)
