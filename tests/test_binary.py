"""Binary ops (BiPFT-style, issue 11): the spec (tinylm.graph.ops binarize_int, binary_matmul_int),
its C kernels bit for bit under ASan+UBSan (the session driver of tests/test_kernels.py) and on
qemu-m4 (the kernel server), jax.numpy == numpy, the load-time checks, and a synthetic binary
graph lowered by codegen: host C (sanitizers) and QEMU firmware give the reference's logits."""
from __future__ import annotations

import re
import shutil
import subprocess

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from test_kernels import CASES, S8, check, driver  # noqa: F401 -- the session driver fixture
from conftest import ROOT, host_logits

from codegen import emit
from tinylm import graph as G
from tinylm.graph import ops, reference

U32 = st.one_of(st.sampled_from([0, 0xFFFFFFFF, 0x55555555, 0x80000000, 1]), st.integers(0, 2**32 - 1))
K = st.one_of(st.sampled_from([1, 31, 32, 33, 63, 64, 65, 960, 991, 992, 993, 1023]), st.integers(1, 200))


def words(k):
    return ops.packed_words(k)


def u32_array(shape):
    return hnp.arrays(np.uint32, shape, elements=U32)


def signs(x, beta):
    return np.where(x.astype(np.int64) + np.asarray(beta, np.int64) >= 0, 1, -1)


# ----------------------------------------------------------------------------- the spec

@settings(max_examples=100, deadline=None)
@given(st.data(), st.integers(1, 4), st.integers(1, 5), st.integers(1, 100))
def test_binary_matmul_is_the_sign_dot_product(data, m, n, k):
    x = data.draw(hnp.arrays(np.int8, (m, k), elements=S8))
    w = data.draw(hnp.arrays(np.int8, (n, k), elements=S8))
    beta = data.draw(hnp.arrays(np.int32, (k,), elements=st.integers(-2**31, 2**31 - 1) | st.integers(-3, 3)))
    pa, pw = ops.binarize_int(x, beta), ops.binarize_int(w, np.zeros(1, np.int32))
    assert pa.shape == (m, words(k)) and pa.dtype == np.uint32
    # LSB first, padding 0
    bits = ((pa[:, :, None] >> np.arange(32, dtype=np.uint32)) & 1).reshape(m, -1)
    assert (bits[:, k:] == 0).all() and (bits[:, :k] == (signs(x, beta) > 0)).all()
    assert (ops.binary_matmul_int(pa, pw, k) == signs(x, beta) @ signs(w, 0).T).all()


def test_padding_bits_do_not_count_and_popcount_is_exact():
    a = np.array([[0xFFFFFFFF, 0xFFFFFFFF]], np.uint32)         # garbage in the 31 padding bits
    w = np.array([[0xFFFFFFFF, 0x00000001]], np.uint32)
    assert ops.binary_matmul_int(a, w, 33).tolist() == [[33]]
    v = np.random.default_rng(0).integers(0, 2**32, 4000, dtype=np.uint64).astype(np.uint32)
    v[:4] = [0, 0xFFFFFFFF, 0x80000000, 1]
    assert ops.popcount32(v).tolist() == [bin(int(t)).count("1") for t in v]


def test_jax_numpy_matches_numpy():
    jax = pytest.importorskip("jax")
    import jax.numpy as jnp
    with jax.enable_x64(True):
        rng = np.random.default_rng(1)
        for k in (1, 31, 32, 33, 70, 128):
            x = rng.integers(-128, 128, (2, 3, k)).astype(np.int8)      # a leading batch axis
            beta = rng.integers(-9, 9, k).astype(np.int32)
            w = rng.integers(0, 2**32, (5, words(k)), dtype=np.uint64).astype(np.uint32)
            pa = jax.jit(lambda x, b: ops.binarize_int(x, b, jnp))(x, beta)
            assert pa.dtype == jnp.uint32 and np.array_equal(np.asarray(pa), ops.binarize_int(x, beta))
            dot = jax.jit(lambda a, w, k=k: ops.binary_matmul_int(a, w, k, jnp))(pa, w)
            assert np.array_equal(np.asarray(dot), ops.binary_matmul_int(ops.binarize_int(x, beta), w, k))
            mk = jax.jit(lambda x, b, k=k: ops.binarize_int(x, b, jnp, words=words(k) + 2))(x, beta)
            ctx = jax.jit(lambda m, v: ops.binary_mask_matmul_int(m, v, jnp))(mk, np.pad(w, [(0, 0), (0, 2)]))
            want = ops.binary_mask_matmul_int(ops.binarize_int(x, beta, words=words(k) + 2), np.pad(w, [(0, 0), (0, 2)]))
            assert np.array_equal(np.asarray(ctx), want)


# ----------------------------------------------------------------------------- C kernels, host

@CASES
@given(st.data(), st.integers(1, 6), K, st.booleans(), st.sampled_from([0, 0, 1, 3]))
def test_binarize_kernel(driver, data, rows, k, per_channel, extra):  # noqa: F811
    x = data.draw(hnp.arrays(np.int8, (rows, k), elements=S8))
    ch = k if per_channel else 1
    beta = data.draw(hnp.arrays(np.int32, (ch,), elements=st.one_of(
        st.integers(-2**31, 2**31 - 1), st.integers(-130, 130), st.sampled_from([-2**31, 2**31 - 1, 0]))))
    got = np.frombuffer(driver.run("binarize", [rows, k, ch, words(k) + extra], [x, beta]), np.uint32)
    check(got.reshape(rows, words(k) + extra), ops.binarize_int(x, beta, words=words(k) + extra))


@settings(max_examples=100, deadline=None)
@given(st.data(), st.integers(1, 4), st.integers(1, 5), st.integers(1, 80))
def test_binary_mask_matmul_is_the_masked_sum(data, m, d, n):
    p = data.draw(hnp.arrays(np.int8, (m, n), elements=S8))
    v = data.draw(hnp.arrays(np.int8, (n, d), elements=S8))
    mask = ops.binarize_int(p, np.array([-3], np.int32), words=words(n) + 1)
    vt = ops.binarize_int(np.ascontiguousarray(v.T), np.zeros(1, np.int32), words=words(n) + 1)
    assert (ops.binary_mask_matmul_int(mask, vt) == (p.astype(int) >= 3) @ signs(v, 0)).all()


@CASES
@given(st.data(), st.integers(1, 5), st.integers(1, 9), st.one_of(st.integers(1, 8), st.sampled_from([31, 32, 62, 70])))
def test_binary_mask_matmul_kernel(driver, data, m, d, w):  # noqa: F811
    mask, v = data.draw(u32_array((m, w))), data.draw(u32_array((d, w)))
    got = np.frombuffer(driver.run("binary_mask_matmul", [m, d, w], [mask, v]), np.int32).reshape(m, d)
    check(got, ops.binary_mask_matmul_int(mask, v))


@CASES
@given(st.data(), st.integers(1, 5), st.integers(1, 9), K)
def test_binary_matmul_kernel(driver, data, m, n, k):  # noqa: F811
    a = data.draw(u32_array((m, words(k))))
    w = data.draw(u32_array((n, words(k))))
    got = np.frombuffer(driver.run("binary_matmul", [m, n, k], [a, w]), np.int32).reshape(m, n)
    check(got, ops.binary_matmul_int(a, w, k))


def dense_case(data, m, n, k):
    """Packed a, w and per-channel bias/requantize/beta, the twins' composition, and the folded thresholds."""
    from codegen.binary import thresholds
    a, w = data.draw(u32_array((m, words(k)))), data.draw(u32_array((n, words(k))))
    ch = data.draw(st.sampled_from([1, n]))
    bias = data.draw(hnp.arrays(np.int32, (n,), elements=st.integers(-2 * k, 2 * k)))
    mult = data.draw(hnp.arrays(np.int32, (ch,), elements=st.integers(0, 2**31 - 1) | st.integers(0, 4)))
    shift = data.draw(hnp.arrays(np.int32, (ch,), elements=st.integers(1, 62) | st.integers(28, 36)))
    beta = data.draw(hnp.arrays(np.int32, (data.draw(st.sampled_from([1, n])),), elements=st.integers(-130, 130)))
    want = ops.binarize_int(ops.requantize(ops.add_int32(ops.binary_matmul_int(a, w, k), bias), mult, shift), beta)
    return a, w, thresholds(k, bias, mult, shift, beta), want


@CASES
@given(st.data(), st.integers(1, 3), st.integers(1, 70), K)
def test_binary_dense_kernel_with_folded_thresholds(driver, data, m, n, k):  # noqa: F811
    a, w, thr, want = dense_case(data, m, n, k)
    check(np.frombuffer(driver.run("binary_dense", [m, n, k], [a, w, thr]), np.uint32).reshape(want.shape), want)


def _extremes():
    for k in (1, 32, 33, 960, 961, 991, 992, 993, 1023, 2 * 992 + 5, 4096):   # batches of 30 words (+ the partial)
        ones = np.full((3, words(k)), 0xFFFFFFFF, np.uint32)
        zeros = np.zeros((3, words(k)), np.uint32)
        yield k, ones, ones          # dot = +k everywhere (padding bits set: must not count)
        yield k, ones, zeros         # dot = -k
        yield k, zeros, zeros


def test_binary_kernels_extremes(driver):  # noqa: F811
    for w in (1, 31, 32, 62, 63, 128):     # all ones: +32 w; against zeros: -32 w
        ones, zeros = np.full((2, w), 0xFFFFFFFF, np.uint32), np.zeros((3, w), np.uint32)
        for mask, v in ((ones, ones[:1]), (ones, zeros), (zeros, ones)):
            got = np.frombuffer(driver.run("binary_mask_matmul", [len(mask), len(v), w], [mask, v]), np.int32)
            check(got.reshape(len(mask), len(v)), ops.binary_mask_matmul_int(mask, v))
    for k, a, w in _extremes():
        got = np.frombuffer(driver.run("binary_matmul", [3, 3, k], [a, w]), np.int32).reshape(3, 3)
        check(got, ops.binary_matmul_int(a, w, k))
        assert abs(int(got[0, 0])) == k or k == 0
    for x in (np.full((2, 33), -128, np.int8), np.full((2, 33), 127, np.int8), np.zeros((1, 1), np.int8)):
        for beta in (np.array([128], np.int32), np.array([-128], np.int32), np.array([127], np.int32),
                     np.array([-2**31], np.int32), np.array([2**31 - 1], np.int32)):
            got = np.frombuffer(driver.run("binarize", [x.shape[0], x.shape[1], 1, words(x.shape[1])], [x, beta]), np.uint32)
            check(got.reshape(x.shape[0], -1), ops.binarize_int(x, beta))


# ----------------------------------------------------------------------------- C kernels, qemu-m4

def _need_arm():
    from conftest import need_arm_tools
    need_arm_tools()


@pytest.fixture(scope="module")
def m4_server(tmp_path_factory):
    _need_arm()
    from tinylm.harness import kernels as Kh
    elf = Kh.build_server("qemu-m4", tmp_path_factory.mktemp("ks"))
    with Kh.KernelServer("qemu-m4", elf) as srv:
        yield srv


@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.data(), st.integers(1, 3), st.integers(1, 70), K)
def test_binary_dense_on_qemu_m4(m4_server, data, m, n, k):
    a, w, thr, want = dense_case(data, m, n, k)
    _, raw = m4_server.run("binary_dense", [m, n, k], [a, w, thr])
    check(np.frombuffer(raw, np.uint32).reshape(want.shape), want)


def test_binary_kernels_on_qemu_m4(m4_server):
    rng = np.random.default_rng(7)
    cases = list(_extremes())[:12]
    for k in (1, 5, 31, 32, 33, 64, 100, 128, 993, 1000):
        for m, n in ((1, 1), (2, 3), (3, 8)):
            cases.append((k, rng.integers(0, 2**32, (m, words(k)), dtype=np.uint64).astype(np.uint32),
                          rng.integers(0, 2**32, (n, words(k)), dtype=np.uint64).astype(np.uint32)))
    for k, a, w in cases:
        _, raw = m4_server.run("binary_mask_matmul", [a.shape[0], w.shape[0], a.shape[1]], [a, w])
        check(np.frombuffer(raw, np.int32).reshape(a.shape[0], w.shape[0]), ops.binary_mask_matmul_int(a, w))
        _, raw = m4_server.run("binary_matmul", [a.shape[0], w.shape[0], k], [a, w])
        check(np.frombuffer(raw, np.int32).reshape(a.shape[0], w.shape[0]), ops.binary_matmul_int(a, w, k))
    edges = np.array([2**31 - 1, -2**31, 128, 127, -128, -129, 255, 256, -256, -257, 0], np.int32)
    for rows, k, ch in ((1, 1, 1), (3, 33, 33), (2, 128, 1), (4, 70, 70), (2, 40, 1), (2, 300, 300)):
        x = rng.integers(-128, 128, (rows, k)).astype(np.int8)
        x[0, :3] = [-128, 127, 0][:k]
        beta = rng.integers(-300, 300, ch).astype(np.int32)
        beta[: min(ch, 11)] = edges[: min(ch, 11)] if ch > 1 else rng.choice(edges)
        _, raw = m4_server.run("binarize", [rows, k, ch, words(k) + 1], [x, beta])
        check(np.frombuffer(raw, np.uint32).reshape(rows, words(k) + 1), ops.binarize_int(x, beta, words=words(k) + 1))


@pytest.mark.parametrize("kernel", ["binary_matmul_b32_s32", "binarize_s8_b32", "binary_mask_matmul_b32_s32",
                                    "binary_dense_b32_b32"])
def test_m4_build_calls_no_libgcc_popcount(tmp_path, kernel):
    """No __popcountsi2 (nor any other call) in the Cortex-M4 object: the SWAR stays inline."""
    _need_arm()
    obj = tmp_path / "k.o"
    kdir = ROOT / "firmware" / "kernels"
    subprocess.run(["arm-none-eabi-gcc", "-mcpu=cortex-m4", "-mthumb", "-mfloat-abi=hard", "-mfpu=fpv4-sp-d16",
                    "-O2", "-ffreestanding", "-std=c99", f"-I{kdir}", "-c", str(kdir / f"{kernel}.c"), "-o", str(obj)],
                   check=True)
    dis = subprocess.run(["arm-none-eabi-objdump", "-d", "-r", str(obj)], capture_output=True, text=True,
                         check=True).stdout
    assert "popcount" not in dis and not re.search(r"\bbl\b", dis), dis[:2000]
    undef = subprocess.run(["arm-none-eabi-nm", "-u", str(obj)], capture_output=True, text=True, check=True).stdout
    assert undef.strip() == "", undef


# ----------------------------------------------------------------------------- graph + codegen

EXP = np.round(65535.0 * np.exp(-np.arange(512) / 32.0)).astype(np.uint16)
V, L, LABELS = 300, 40, ["a", "b", "c"]


def binary_graph_model(seed: int = 0):
    """ids -> embedding -> [BinarizeInt -> BinaryMatMulInt (-> Add) -> Requantize] x 3 (k = 70, 48, 64:
    two partial last words, one exact) -> binary attention (scores of packed rows, SoftmaxInt, mask
    = BinarizeInt(p - 3) in 2 words, values packed along tokens, BinaryMaskMatMulInt) -> the [CLS]
    row attends over all rows (AttentionInt) -> int8 head -> logits."""
    rng = np.random.default_rng(seed)
    b = G.GraphBuilder()
    h = b.op("Gather", [b.const("emb", rng.integers(-128, 128, (V, 70)).astype(np.int8)), G.INPUT], "embed")
    dims = [(70, 48, True), (48, 64, False), (64, 40, True)]
    for i, (k, n, per_channel) in enumerate(dims):
        beta = rng.integers(-20, 20, k if per_channel else 1).astype(np.int32)
        bits = b.op("BinarizeInt", [h, b.const(f"l{i}.beta", beta)], f"l{i}.sign")
        w = ops.binarize_int(rng.integers(-128, 128, (n, k)).astype(np.int8), np.zeros(1, np.int32))
        acc = b.op("BinaryMatMulInt", [bits, b.const(f"l{i}.w", w)], f"l{i}.mm", k=k)
        if i != 1:
            acc = b.op("Add", [acc, b.const(f"l{i}.b", rng.integers(-9, 9, n).astype(np.int32))], f"l{i}.add")
        ch = n if per_channel else 1
        mult = rng.integers(2**30, 2**31 - 1, ch).astype(np.int32)
        h = b.op("Requantize", [acc, b.const(f"l{i}.m", mult), b.const(f"l{i}.s", np.full(ch, 34, np.int32))],
                 f"l{i}.rq")
    W = -(-L // 32)
    q = b.op("BinarizeInt", [h, b.const("att.beta", np.array([1], np.int32))], "att.q")
    sc = b.op("BinaryMatMulInt", [q, q], "att.scores", k=40)
    p = b.op("SoftmaxInt", [sc, b.const("att.exp", EXP)], "att.p", multiplier=1 << 30, shift=30)
    vt = b.op("BinarizeInt", [b.op("Transpose", [h], "att.vt8"), b.const("att.vbeta", np.zeros(1, np.int32))],
              "att.vt", words=W)
    mask = b.op("BinarizeInt", [p, b.const("att.t", np.array([-3], np.int32))], "att.mask", words=W)
    ctx = b.op("BinaryMaskMatMulInt", [mask, vt], "att.ctx")
    h = b.op("Requantize", [ctx, b.const("att.m", np.array([1 << 30], np.int32)), b.const("att.s", np.array([31], np.int32))],
             "att.rq")
    cls = b.op("Gather", [h, b.const("cls_index", np.array([0], np.int32))], "cls")
    att = b.op("AttentionInt", [cls, h, b.const("exp", EXP)], "att", multiplier=1 << 30, shift=32,
               out_multiplier=1 << 30, out_shift=31)
    head = b.op("MatMulInteger", [att, b.const("head.w", rng.integers(-128, 128, (40, 3)).astype(np.int8))], "head")
    b.op("Add", [head, b.const("head.b", np.array([5, -5, 0], np.int32))], G.OUTPUT)
    return b.to_model(len(LABELS), {"name": "binary-test", "max_len": L, "vocab": V, "label_names": LABELS,
                                    "tokenizer": "{}"})


@pytest.fixture(scope="module")
def binary_graph(tmp_path_factory):
    p = tmp_path_factory.mktemp("bg") / "binary.onnx"
    G.save(binary_graph_model(), p)
    return p, G.load(p)


def inputs_at_lengths():
    rng = np.random.default_rng(3)
    return [list(rng.integers(0, V, n)) for n in (1, 2, 3, 7, 16, 31, 32, 33, L - 1, L)]


def test_binary_graph_loads_and_uses_uint32(binary_graph):
    _, g = binary_graph
    assert {"BinarizeInt", "BinaryMatMulInt"} <= {n.op for n in g.nodes}
    assert g.weights["l0.w"].dtype == np.uint32 and g.weights["l0.w"].shape == (48, 3)
    env = reference.trace(g, [1, 2, 3])
    assert env["l0.sign"].dtype == np.uint32 and env["l0.sign"].shape == (3, 3)
    assert np.abs(env["l0.mm"]).max() <= 70
    outs = {tuple(reference.run(g, ids)) for ids in inputs_at_lengths()}
    assert len(outs) > 1     # the logits depend on the input


@pytest.mark.parametrize("bad,msg", [
    (lambda n, w: n.attrs.update(k=97), "k = 97 needs 4 words per row"),
    (lambda n, w: n.attrs.update(k=0), "out of range"),
    (lambda n, w: w.update({"l0.w": w["l0.w"].astype(np.int32)}), "B \\(packed\\) is int32, expected uint32"),
    (lambda n, w: w.update({"l0.beta": w["l0.beta"][:5]}), "beta length 5 must be 1 or 70"),
])
def test_binary_shapes_and_attrs_are_checked(binary_graph, bad, msg):
    _, g = binary_graph
    nodes = [G.Node(n.op, list(n.inputs), list(n.outputs), n.name, dict(n.attrs)) for n in g.nodes]
    weights = dict(g.weights)
    bad(next(n for n in nodes if n.name == "l0.mm"), weights)
    with pytest.raises(G.GraphError, match=msg):
        reference.check_shapes(G.Graph(nodes, weights, g.meta))


def test_bound_of_binary_matmul_is_k(binary_graph):
    _, g = binary_graph
    w = dict(g.weights)
    w["l0.b"] = np.full_like(w["l0.b"], 2**31 - 1 - 70)
    emit.check_bounds(G.Graph(g.nodes, w, g.meta), reference.shape_templates(g))    # exactly fits
    w["l0.b"] = np.full_like(w["l0.b"], 2**31 - 70)
    with pytest.raises(emit.BoundError, match="'l0.add'"):
        emit.check_bounds(G.Graph(g.nodes, w, g.meta), reference.shape_templates(g))


def test_packing_along_the_token_axis_is_refused(binary_graph):
    """BinarizeInt of a [d, n] tensor would need ceil(n/32) words a row, which the arena planner
    cannot size (templates know only fixed dimensions and n): codegen refuses it by name."""
    _, g = binary_graph
    nodes = list(g.nodes)
    i = next(j for j, n in enumerate(nodes) if n.name == "l0.sign")
    nodes[i:i + 1] = [G.Node("Transpose", ["embed"], ["embed.t"], "embed.t"),
                      G.Node("BinarizeInt", ["embed.t", "one_beta"], ["tsign"], "tsign"), nodes[i]]
    bad = G.Graph(nodes, dict(g.weights, one_beta=np.zeros(1, np.int32)), g.meta)
    with pytest.raises(G.GraphError, match="'tsign' \\(BinarizeInt\\): packs along an axis that grows"):
        emit.lower(bad)


def test_binary_graph_host_c_bit_exact(binary_graph, tmp_path):
    if shutil.which("gcc") is None:
        pytest.skip("no host gcc")
    _, g = binary_graph
    low = emit.lower(g)
    assert "binary_matmul_b32_s32(" in low.model_c and "binarize_s8_b32(" in low.model_c
    assert low.model_c.count("binary_dense_b32_b32(") == 2      # l0 -> l1 and l1 -> l2: thresholds folded
    assert "const uint32_t w_l0_w[144]" in low.weights_c
    ins = inputs_at_lengths()
    assert host_logits(low, ins, tmp_path) == [reference.run(g, s).tolist() for s in ins]


def test_binary_graph_build_and_qemu_bit_exact(binary_graph, tmp_path):
    """`tinylm build` of a binary graph: memory.json counts the packed weights (4 n ceil(k/32) bytes),
    and the firmware in QEMU (qemu-m4) gives the reference's logits at every length."""
    _need_arm()
    import json
    from codegen.build import build
    from codegen.toolchain import load_board
    from tinylm.harness.device import Device
    from tinylm.harness.qemu import QemuBoard
    path, g = binary_graph
    build(path, "qemu-m4", tmp_path)
    mem = json.loads((tmp_path / "memory.json").read_text())
    text = json.dumps(mem)
    assert "l0.w" in text and "uint32" in text
    packed = sum(4 * g.weights[f"l{i}.w"].size for i in range(3))
    assert packed == 4 * (48 * 3 + 64 * 2 + 40 * 2)
    with QemuBoard(load_board("qemu-m4"), tmp_path / "firmware.elf") as q, Device(q.url) as d:
        for ids in inputs_at_lengths():
            assert d.infer(ids) == reference.run(g, ids).tolist(), ids
