"""Kernel benchmark and on-target kernel check: firmware/bench/kernel_server.c in QEMU.

`tinylm kernels` builds the kernel server for each QEMU board, sends every case (a kernel on
one shape, seeded random int8/int32 data) over the serial socket, checks the output bit for bit
against the kernel's numpy twin (a mismatch raises: it is a bug, never a tolerance) and
reports exact instructions per MAC (per element for softmax, rmsnorm, requantize and lut).
tests/test_kernels_qemu.py drives the same server with hypothesis cases.
"""
from __future__ import annotations

import socket
import struct
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from codegen import toolchain
from codegen.fuse import pack_fc_weights
from tinylm.graph import ops
from tinylm.harness.qemu import QemuBoard

REPO = Path(__file__).resolve().parents[2]
SERVER_SRC = REPO / "firmware" / "bench" / "kernel_server.c"
BOARDS = ["qemu-m4", "qemu-m7", "qemu-m33", "qemu-m55"]
# op numbers of tests/kernel_driver.c, which the server shares
OPS = {"matmul": 2, "add_s32": 3, "requantize": 4, "add_s8": 5, "lut": 6, "softmax": 8,
       "rmsnorm": 9, "attention": 12, "causal_dwconv": 13, "fully_connected": 14, "binarize": 15,
       "binary_matmul": 16, "binary_mask_matmul": 17,
       "binary_dense": 18, "requantize_sh8": 21}


class KernelMismatch(AssertionError):
    """A kernel's output on the device differs from its numpy twin."""


def build_server(board_name: str, out_dir, kernels_dir=None, unfused: bool = False) -> Path:
    """Links the kernel server for a board (kernels from kernels_dir, default firmware/kernels)."""
    board = toolchain.load_board(board_name)
    kdir = Path(kernels_dir) if kernels_dir else REPO / "firmware" / "kernels"
    port = REPO / "firmware" / "ports" / board["port"]
    common = [REPO / "firmware" / "ports" / d for d in ["common", *board.get("shared_ports", [])]]
    srcs = [SERVER_SRC, *sorted(port.glob("*.c")), *[f for d in common for f in sorted(d.glob("*.c"))],
            *sorted(kdir.glob("*.c"))]
    incs = [kdir, REPO / "firmware" / "runtime", port, *common]
    defines = {"TINYLM_BENCH_UNFUSED": 1} if unfused else {}
    return toolchain.compile_firmware(srcs, incs, board, out_dir, defines=defines, name="kernel_server")


class KernelServer:
    """The kernel server running in QEMU; run() sends one case and returns (cost, bytes)."""

    def __init__(self, board_name: str, elf):
        self.qemu = QemuBoard(toolchain.load_board(board_name), elf)
        self.sock = socket.create_connection(("127.0.0.1", self.qemu.port), timeout=60)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def _recv(self, n: int) -> bytes:
        buf = b""
        while len(buf) < n:
            chunk = self.sock.recv(n - len(buf))
            if not chunk:
                raise RuntimeError("kernel server closed the connection")
            buf += chunk
        return buf

    def run(self, op: str, params, arrays) -> tuple[int, bytes]:
        parts = [struct.pack("<ii", OPS[op], len(params)), struct.pack(f"<{len(params)}i", *map(int, params)),
                 struct.pack("<i", len(arrays))]
        for arr in arrays:
            arr = np.ascontiguousarray(arr)
            parts += [struct.pack("<ii", arr.dtype.itemsize, arr.size), arr.astype(arr.dtype.newbyteorder("<")).tobytes()]
        self.sock.sendall(b"".join(parts))
        while self._recv(1) != b"K":     # skip anything printed before the reply
            pass
        status, lo, hi, nbytes = struct.unpack("<iIIi", self._recv(16))
        if status:
            raise RuntimeError(f"kernel server refused {op} {list(params)} (status {status})")
        return lo | hi << 32, self._recv(nbytes)

    def close(self):
        self.sock.close()
        self.qemu.stop()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


@dataclass
class Case:
    kernel: str
    shape: str
    op: str
    params: list
    arrays: list
    want: np.ndarray
    work: int                 # MACs, or elements for per-element kernels
    unit: str = "MAC"
    packed: dict = field(default_factory=dict)   # array index -> array to send to a fused build


def _fc_case(rng, m, k, n, lut=False) -> Case:
    x = rng.integers(-128, 128, (m, k), dtype=np.int8)
    w = rng.integers(-128, 128, (k, n), dtype=np.int8)
    bias = rng.integers(-2**16, 2**16, n).astype(np.int32)
    mult = rng.integers(2**30, 2**31 - 1, n).astype(np.int32)
    shift = rng.integers(36, 44, n).astype(np.int32)
    table = rng.integers(-128, 128, 256, dtype=np.int8)
    y = ops.requantize(ops.add_int32(ops.matmul_integer(x, w), bias), mult, shift)
    want = ops.lut(y, table) if lut else y
    return Case("fully_connected_s8" + (" +lut" if lut else ""), f"{k}->{n}, {m} rows", "fully_connected",
                [m, k, n, n, 1, int(lut)], [x, w, bias, mult, shift, table], want, m * k * n,
                packed={1: pack_fc_weights(w)})


def cases(seed: int = 0) -> list[Case]:
    """The benchmark's kernels and shapes (those of the default model, and the issue's)."""
    rng = np.random.default_rng(seed)
    out = [_fc_case(rng, 1, 128, 128), _fc_case(rng, 32, 128, 128), _fc_case(rng, 1, 16, 128),
           _fc_case(rng, 1, 128, 128, lut=True)]
    # the models' exp table (tinylm.quant.qmath.exp_lut: 512 entries, 5 fraction bits); the
    # harness may not import quant, and the kernels' cost does not depend on its exact values
    lut = np.round(65535.0 * np.exp(-np.arange(512) / 2 ** 5)).astype(np.uint16)
    for L in (32, 128):
        q = rng.integers(-128, 128, (L, 128), dtype=np.int8)
        kv = rng.integers(-128, 128, (L, 128), dtype=np.int8)
        args = (711974118, 37, lut, 566983854, 36)
        out.append(Case("attention_s8", f"d=128, L={L}", "attention", [L, L, 128, 711974118, 37, len(lut), 566983854, 36],
                        [q, kv, lut], ops.attention_int(q, kv, *args), 2 * L * L * 128))
    for cols in (32, 256):
        x = rng.integers(-2**16, 2**16, (8, cols)).astype(np.int32)
        out.append(Case("softmax_s32_s8", f"8 rows of {cols}", "softmax", [8, cols, 711974118, 37, len(lut)],
                        [x, lut], ops.softmax_int(x, 711974118, 37, lut), 8 * cols, "element"))
    x = rng.integers(-128, 128, (8, 128), dtype=np.int8)
    g = rng.integers(-128, 128, 128, dtype=np.int8)
    out.append(Case("rmsnorm_s8", "8 rows of 128", "rmsnorm", [8, 128, 918729826, 46], [x, g],
                    ops.rmsnorm_int(x, g, 918729826, 46), 8 * 128, "element"))
    xi = rng.integers(-2**20, 2**20, (8, 128)).astype(np.int32)
    m_, s_ = rng.integers(2**30, 2**31 - 1, 128).astype(np.int32), rng.integers(36, 44, 128).astype(np.int32)
    out.append(Case("requantize_s32_s8", "8 x 128, per channel", "requantize", [128, 8, 128], [xi, m_, s_],
                    ops.requantize(xi, m_, s_), 8 * 128, "element"))
    xc = rng.integers(-128, 128, (32, 128), dtype=np.int8)
    wc = rng.integers(-128, 128, (32, 128), dtype=np.int8)
    bc = rng.integers(-2**16, 2**16, 128).astype(np.int32)
    conv = ops.causal_dwconv_int(xc, wc, bc)
    out.append(Case("causal_dwconv_s8_s32", "k=32, d=128, 32 rows", "causal_dwconv", [32, 128, 32, 0, 32],
                    [xc, wc, bc], conv, 128 * sum(min(t + 1, 32) for t in range(32))))
    # binary (one MAC = one +-1 product): 128 x 128 packed weights, 1 and 32 rows
    for m in (1, 32):
        pa = ops.binarize_int(rng.integers(-128, 128, (m, 128), dtype=np.int8), np.zeros(1, np.int32))
        pw = ops.binarize_int(rng.integers(-128, 128, (128, 128), dtype=np.int8), np.zeros(1, np.int32))
        out.append(Case("binary_matmul_b32_s32", f"128->128, {m} rows", "binary_matmul", [m, 128, 128],
                        [pa, pw], ops.binary_matmul_int(pa, pw, 128), m * 128 * 128))
        thr = rng.integers(-16, 16, 128).astype(np.int32)    # the fused layer: thresholds folded by codegen
        dot = ops.binary_matmul_int(pa, pw, 128)
        out.append(Case("binary_dense_b32_b32", f"128->128, {m} rows", "binary_dense", [m, 128, 128], [pa, pw, thr],
                        ops.binarize_int((dot >= thr).astype(np.int8) - 1, np.zeros(1, np.int32)), m * 128 * 128))
    # binary attention's context: 32 query rows, a {0,1} mask over 128 keys x 128 value channels
    mk = rng.integers(0, 2**32, (32, 4), dtype=np.uint64).astype(np.uint32)
    vt = rng.integers(0, 2**32, (128, 4), dtype=np.uint64).astype(np.uint32)
    out.append(Case("binary_mask_matmul_b32_s32", "L=128, d=128, 32 rows", "binary_mask_matmul", [32, 128, 4],
                    [mk, vt], ops.binary_mask_matmul_int(mk, vt), 32 * 128 * 128))
    xb = rng.integers(-128, 128, (8, 128), dtype=np.int8)
    beta = rng.integers(-8, 8, 128).astype(np.int32)
    out.append(Case("binarize_s8_b32", "8 x 128, per channel", "binarize", [8, 128, 128, 4], [xb, beta],
                    ops.binarize_int(xb, beta), 8 * 128, "element"))
    return out


def run_cases(board_name: str, case_list, build_dir=None, kernels_dir=None, unfused=False) -> list[dict]:
    """Runs every case on one board; raises KernelMismatch on any differing output byte."""
    with tempfile.TemporaryDirectory() as tmp:
        elf = build_server(board_name, build_dir or tmp, kernels_dir, unfused)
        rows = []
        with KernelServer(board_name, elf) as srv:
            for c in case_list:
                arrays = [c.packed.get(i, a) if not unfused else a for i, a in enumerate(c.arrays)]
                cost, raw = srv.run(c.op, c.params, arrays)
                got = np.frombuffer(raw, c.want.dtype).reshape(c.want.shape)
                if not np.array_equal(got, c.want):
                    bad = int(np.count_nonzero(got != c.want))
                    raise KernelMismatch(f"{board_name}: {c.kernel} [{c.shape}]: {bad} of {c.want.size} outputs "
                                         "differ from the numpy twin")
                rows.append({"board": board_name, "kernel": c.kernel, "shape": c.shape, "instructions": cost,
                             "work": c.work, "unit": c.unit, "per_unit": cost / c.work})
        return rows
