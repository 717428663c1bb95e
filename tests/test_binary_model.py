"""Binary EmbBERT (issue 11): the Flax layers (tinylm/models/binary.py), their lowering to the binary
ops (quant/lowering.binary_dense, the packed token table), the QAT integer forward on binary graphs,
distillation in finetune, `quantize --bits 1`, and the generated C bit-exact on the host. A small
random EmbBERT (d 40: a partial last word; r 8) with every binary option on."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

jax = pytest.importorskip("jax")
import jax.numpy as jnp  # noqa: E402

from conftest import embbert_seqs as _seqs, host_logits, toy_bundle, toy_examples  # noqa: E402
from tinylm import graph as G  # noqa: E402
from tinylm.graph import reference  # noqa: E402
from tinylm.models import binary as B  # noqa: E402
from tinylm.models import embbert  # noqa: E402
from tinylm.quant import embbert as QE  # noqa: E402
from tinylm.quant import qat as Q  # noqa: E402
from tinylm.quant import qat_forward as QF  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
CFG = dict(type="embbert", vocab_size=8192, max_len=48, d=40, r=8, layers=2, kernel=8, dropout=0.0,
           residual=False, init="delta", binary=True, binary_embedding=True)
LABELS = ["a", "b", "c"]
TOK = (ROOT / "models" / "tokenizer-8192.json").read_text()


def _random_binary_params(cfg, seed):
    """Classifier params with alphas and betas away from their init (so both matter)."""
    m = embbert.classifier_from_config(cfg, len(LABELS))
    p = m.init(jax.random.PRNGKey(seed), np.zeros((1, 8), np.int32))["params"]
    rng = np.random.default_rng(seed)

    def visit(t):
        if isinstance(t, dict):
            out = {k: visit(v) for k, v in t.items()}
            if "alpha" in out:
                out["alpha"] = jnp.asarray(rng.uniform(0.3, 2.0), jnp.float32)
                out["beta"] = jnp.asarray(rng.normal(0, 0.3, out["beta"].shape), jnp.float32)
            return out
        return t
    return m, visit(jax.device_get(p))


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    m, params = _random_binary_params(CFG, 3)
    calib = _seqs(np.random.default_rng(0), (3, 10, 46, 20, 48))
    S = QF.scales_from_calibration(params, CFG, calib)
    path = tmp_path_factory.mktemp("bin") / "bin.onnx"
    G.save(QE.quantize_params(params, CFG, LABELS, calib, name="b", task="emotion", tokenizer_json=TOK), path)
    return m, params, S, G.load(path)


@pytest.fixture(scope="module")
def graph_path(setup, tmp_path_factory):
    path = tmp_path_factory.mktemp("binq") / "bin.onnx"
    G.save(QE.quantize_params(setup[1], CFG, LABELS, [], name="b", task="emotion", tokenizer_json=TOK,
                              scales=setup[2]), path)
    return path


def test_binary_weight_and_activation_values_and_gradients():
    w = jnp.asarray([[0.5, -1.0], [0.1, 3.0], [-0.9, 1.0]])
    wb, a_w = B.binary_weight(w)
    mu = w.mean(0)
    assert np.allclose(a_w, np.abs(w - mu).mean(0))
    assert np.allclose(wb, a_w * np.where(w - mu >= 0, 1.0, -1.0))
    assert np.allclose(jax.grad(lambda w: (B.binary_weight(w)[0] * 2.0).sum())(w), 2.0)   # identity STE
    x = jnp.asarray([-3.0, -0.5, 0.0, 0.2, 2.5])
    y = B.binary_activation(x, 1.0, 0.0)
    assert y.tolist() == [-1.0, -1.0, 1.0, 1.0, 1.0]              # sign(0) = +1, as BinarizeInt
    g = jax.grad(lambda x: B.binary_activation(x, 1.0, 0.0).sum())(x)
    assert g.tolist() == [0.0, 1.0, 1.0, 1.0, 0.0]                # passes only where |x + beta| <= alpha
    ga = jax.grad(lambda a: B.binary_activation(x, a, 0.0).sum())(1.0)
    assert np.isclose(ga, np.sum(np.where(np.abs(x) <= 1, np.sign(x + 1e-9) - x, np.sign(x))))


def test_flax_forward_equals_the_numpy_forward_the_quantizer_calibrates_with(setup):
    m, params, _, _ = setup
    for s in _seqs(np.random.default_rng(5), (7, 48)):
        want, _ = QE.forward(QE._np(params), CFG, s)
        got = m.apply({"params": params}, np.asarray([s], np.int32))[0]
        np.testing.assert_allclose(np.asarray(got), want, rtol=1e-4, atol=1e-4)


def test_binary_graph_ops_and_sizes(setup):
    _, _, _, g = setup
    ops_ = [n.op for n in g.nodes]
    assert ops_.count("BinaryMatMulInt") == 3 * CFG["layers"] + 1      # Wq, Wo, Wc per layer + W_te
    assert "MatMulInteger" in ops_                                       # W_pe and the head stay int8
    # r = 8 sign bits a token: the table at its real width, one uint16 a token (quant/repack.py)
    assert g.weights["embed.tok_bits"].dtype == np.uint16 and g.weights["embed.tok_bits"].shape == (8192, 1)
    assert g.weights["layer0.q.wb"].shape == (40, 2)                    # 40 channels x ceil(40/32) words
    shifts = [n.inputs[2] for n in g.nodes if n.op == "Requantize"]
    assert shifts and all(g.weights[s].dtype == np.int8 for s in shifts)   # shifts 1..62 in one byte
    assert g.meta["weight_bits"] == 1 and g.meta["binary_embedding"] is True


def _widened(model):
    """The model as binary graphs were written before the repack: uint32 token table, int32 shifts."""
    import onnx
    from onnx import numpy_helper
    old = onnx.ModelProto()
    old.CopyFrom(model)
    for t in old.graph.initializer:
        a = numpy_helper.to_array(t)
        if a.dtype in (np.uint16, np.int8) and (t.name == "embed.tok_bits" or t.name.endswith(".s")):
            t.CopyFrom(numpy_helper.from_array(a.astype(np.uint32 if a.dtype == np.uint16 else np.int32), t.name))
    return old


def test_repack_is_lossless_and_is_what_the_lowering_writes(setup, graph_path, tmp_path):
    """A binary graph in the old widths, repacked: the lowering's bytes, the same weights' values,
    the same reference logits at every length, 16 KB + 3 B a channel smaller; repacking twice is
    a no-op."""
    import onnx
    from tinylm.quant.repack import repack_binary
    model = onnx.load(str(graph_path))
    old = _widened(model)
    assert old.SerializeToString() != model.SerializeToString()
    new, changed = repack_binary(old)
    assert new.SerializeToString() == model.SerializeToString()
    assert changed["embed.tok_bits"] == ("uint32", "uint16") and changed["embed.tok.s"] == ("int32", "int8")
    assert repack_binary(new)[1] == {}
    G.save(old, tmp_path / "old.onnx")
    g_old, g_new = G.load(tmp_path / "old.onnx"), G.load(graph_path)
    assert g_old.weights.keys() == g_new.weights.keys() and g_old.meta == g_new.meta
    for k, w in g_old.weights.items():
        assert np.array_equal(w.astype(np.int64), g_new.weights[k].astype(np.int64)), k
    size = lambda g: sum(w.nbytes for w in g.weights.values())  # noqa: E731
    n_shift = sum(g_new.weights[n.inputs[2]].size for n in g_new.nodes if n.op == "Requantize")
    assert size(g_old) - size(g_new) == 8192 * 2 + 3 * n_shift
    for s in _seqs(np.random.default_rng(4), (1, 2, 17, 32, 33, 48)):
        assert reference.run(g_old, s).tolist() == reference.run(g_new, s).tolist()
    # the QAT integer forward reads either form and gives the reference's logits
    seqs = _seqs(np.random.default_rng(6), (1, 9, 48))
    assert QF.IntModel(g_old, CFG["layers"]).logits(seqs, 4).tolist() == \
        QF.IntModel(g_new, CFG["layers"]).logits(seqs, 4).tolist() == [reference.run(g_new, s).tolist() for s in seqs]


def test_int8_graphs_are_not_repacked(tmp_path):
    """--bits 8 writes int32 shifts and int8 tables as before (the golden digest test holds the bytes)."""
    cfg = dict(CFG, binary=False, binary_embedding=False)
    _, params = _random_binary_params(dict(cfg), 1)
    model = QE.quantize_params(params, cfg, LABELS, _seqs(np.random.default_rng(0), (5, 9)), name="q",
                               task="emotion", tokenizer_json=TOK)
    from onnx import numpy_helper
    dt = {t.name: numpy_helper.to_array(t).dtype for t in model.graph.initializer}
    assert dt["embed.tok.s"] == np.int32 and dt["embed.tok_table"] == np.int8


def test_int_forward_equals_reference_and_params_from_float_equal_the_lowering(setup):
    _, params, S, g = setup
    rng = np.random.default_rng(1)
    seqs = _seqs(rng, [1, 2, 3, 5, 16, 17, 31, 32, 33, 47, 48] + list(rng.integers(1, 49, 9)))
    got = QF.IntModel(g, CFG["layers"]).logits(seqs, batch_size=8)
    for s, row in zip(seqs, got):
        assert row.tolist() == reference.run(g, s).tolist(), len(s)
    ip, want = Q.QAT(CFG, S, CFG["max_len"]).int_params(params), QF.ip_from_graph(g)
    assert set(ip) == set(want)
    for k in want:
        assert np.array_equal(np.asarray(ip[k]).astype(np.int64), np.asarray(want[k]).astype(np.int64)), k


def test_binary_qat_step_lowers_the_loss_and_exports_what_it_trained(setup, tmp_path):
    _, params, S, _ = setup
    rng = np.random.default_rng(2)
    seqs = _seqs(rng, [48, 1, 2, 33] + list(rng.integers(2, 49, 8)))
    x = QF._pad_batch(seqs, len(seqs))
    y, w = rng.integers(0, 3, len(seqs)), np.ones(len(seqs), np.float32)
    qat = Q.QAT(CFG, S, CFG["max_len"], lr=3e-3)
    p, st = qat.init(params)
    l0 = qat.loss(p, x, y, w)
    for _ in range(5):
        p, st, _ = qat.step(p, st, x, y, w)
    assert qat.loss(p, x, y, w) < l0 - 1e-3
    G.save(qat.lower(p, LABELS, name="b", task="emotion", tokenizer_json=TOK), tmp_path / "q.onnx")
    g = G.load(tmp_path / "q.onnx")
    q_logits, f_logits = qat.eval_logits(p, x)
    for i, s in enumerate(seqs):
        want = reference.run(g, s)
        assert q_logits[i].tolist() == want.tolist()
        np.testing.assert_allclose(f_logits[i], want * g.meta["logit_scale"], rtol=1e-6,
                                   atol=1e-6 * abs(g.meta["logit_scale"]))


def test_binary_graph_host_c_bit_exact(setup, tmp_path):
    """The generated C of the binary EmbBERT (gather_b16 of the uint16 token table, binarize,
    binary matmul, requantize with int8 shifts) under the sanitizers gives the reference's logits
    at every length."""
    from codegen import emit
    _, _, _, g = setup
    low = emit.lower(g)
    assert "gather_b16(" in low.model_c and "binary_matmul_b32_s32(" in low.model_c
    assert "requantize_s32_s8_sh8(" in low.model_c and "gather_b32(" not in low.model_c
    ins = _seqs(np.random.default_rng(7), (1, 2, 9, 31, 32, 33, 48))
    assert host_logits(low, ins, tmp_path) == [reference.run(g, s).tolist() for s in ins]


def test_binary_embbert_on_qemu_m4_is_bit_exact(graph_path, tmp_path):
    """`tinylm build` of the binary EmbBERT for qemu-m4; the firmware's logits equal the reference's."""
    from conftest import need_arm_tools
    need_arm_tools()
    from codegen.build import build
    from codegen.toolchain import load_board
    from tinylm.harness.device import Device
    from tinylm.harness.qemu import QemuBoard
    g = G.load(graph_path)
    build(graph_path, "qemu-m4", tmp_path)
    assert "gather_b16(" in (tmp_path / "src" / "model.c").read_text()
    mem = json.loads((tmp_path / "memory.json").read_text())
    # the graph's weights, but the one int8 shift fused into fully_connected_s8 (W_pe) widened to int32
    assert mem["weights_bytes"] == sum(w.nbytes for w in g.weights.values()) + 3 * g.weights["embed.pos.s"].size
    with QemuBoard(load_board("qemu-m4"), tmp_path / "firmware.elf") as q, Device(q.url) as d:
        for ids in _seqs(np.random.default_rng(9), (1, 5, 32, 33, 48)):
            assert d.infer(ids) == reference.run(g, ids).tolist(), len(ids)


def test_gather_refuses_other_table_types(setup):
    _, _, _, g = setup
    for bad in (np.int32, np.int16):
        w = dict(g.weights, **{"embed.tok_bits": g.weights["embed.tok_bits"].astype(bad)})
        with pytest.raises(G.GraphError, match="Gather\\): data must be 2-D int8, uint16 or uint32 \\(bit-packed\\), "
                                               f"not {np.dtype(bad)}") as e:
            reference.run(G.Graph(g.nodes, w, g.meta), [2, 5, 6])
        assert "\n" not in str(e.value)
    w = dict(g.weights, **{"embed.tok.s": g.weights["embed.tok.s"].astype(np.int16)})
    with pytest.raises(G.GraphError, match="Requantize\\): shift must be 1-D int32 or int8, not int16"):
        reference.run(G.Graph(g.nodes, w, g.meta), [2, 5, 6])


# ----------------------------------------------------------------------------- training and the CLI

TINY = dict(type="embbert", vocab_size=8192, max_len=16, d=16, r=4, layers=1, kernel=4, dropout=0.0, init="delta")
TRAIN, VAL = toy_examples(96, 0), toy_examples(32, 1)


@pytest.fixture(scope="module")
def float_run(tmp_path_factory):
    from tinylm.train.finetune import FinetuneConfig, finetune
    out = tmp_path_factory.mktemp("float") / "run"
    finetune(None, "limit", out, FinetuneConfig(epochs=3, lr=5e-3, warmup=1, max_len=16, batch_size=16, patience=None),
             model=TINY, train_examples=TRAIN, val_examples=VAL)
    return out


def test_distillation_from_itself_costs_nothing(float_run):
    """The distillation terms are 0 for a student equal to its teacher (and > 0 otherwise)."""
    from tinylm.train import distill as D
    from tinylm.train import finetune as F
    from tinylm.train.floatrun import FloatRun
    run = FloatRun(float_run)
    cfg = F.FinetuneConfig(kd_weight=1.0, hidden_weight=1.0, max_len=16)
    loss = D.distiller(float_run, run.config, cfg, 2)
    x = np.asarray([[2, 10, 11, 12, 0, 0], [2, 40, 0, 0, 0, 0]], np.int32)
    p = jax.tree_util.tree_map(jnp.asarray, run.params)
    logits, st = run.module.apply({"params": p}, x, capture_intermediates=D.layer_outputs, mutable=["intermediates"])
    assert np.allclose(loss(x, logits, st["intermediates"]), 0.0, atol=1e-6)
    p2 = jax.tree_util.tree_map(lambda a: a * 1.1, p)
    logits, st = run.module.apply({"params": p2}, x, capture_intermediates=D.layer_outputs, mutable=["intermediates"])
    assert (np.asarray(loss(x, logits, st["intermediates"])) > 1e-4).all()


def test_binary_finetune_from_a_float_run_then_quantize_bits_1(float_run, tmp_path):
    from tinylm.train.finetune import FinetuneConfig, finetune
    out = tmp_path / "bin"
    r = finetune(None, "limit", out, FinetuneConfig(epochs=2, lr=2e-3, warmup=1, max_len=16, batch_size=16,
                                                     kd_weight=1.0, hidden_weight=1.0, patience=None),
                 train_examples=TRAIN, val_examples=VAL, init_from=float_run,
                 overrides={"binary": True, "binary_embedding": True}, teacher=float_run)
    meta = json.loads((out / "run.json").read_text())
    assert meta["config"]["binary"] is True and meta["teacher"] == str(float_run)
    assert r["epochs_run"] == 2 and 0.0 <= r["score"] <= 1.0
    from tinylm.train.floatrun import FloatRun
    p = FloatRun(out).params["backbone"]["layer_0"]["wq"]
    assert float(p["alpha"]) != 1.0               # set from data (init_alphas), not left at 1
    g = G.load(_cli_quantize(out, tmp_path / "b.onnx", "--bits", "1", "--data-dir", str(_toy_bundle(tmp_path))))
    assert {"BinaryMatMulInt", "BinarizeInt"} <= {n.op for n in g.nodes}
    ids = [2, 30, 31, 4]
    assert reference.run(g, ids).shape == (2,)


def _toy_bundle(tmp_path) -> Path:
    return toy_bundle(tmp_path, "limit", TRAIN, VAL)


def _cli_quantize(run, out, *extra, code=0):
    from typer.testing import CliRunner
    from tinylm.cli import app
    r = CliRunner().invoke(app, ["quantize", str(run), "--out", str(out), "--calib", "8", *extra])
    assert r.exit_code == code, r.output
    return out if code == 0 else r.output


def test_quantize_bits_refuses_the_wrong_kind_of_run(float_run, tmp_path):
    msg = _cli_quantize(float_run, tmp_path / "x.onnx", "--bits", "1", code=1)
    assert "is not a binary model: train one from it first, e.g. tinylm finetune --init-from" in msg
    assert _cli_quantize(float_run, tmp_path / "x.onnx", "--bits", "4", code=1).count("\n") <= 2
    assert not (tmp_path / "x.onnx").exists()


def test_finetune_cli_refuses_init_from_with_another_start(float_run, tmp_path):
    from typer.testing import CliRunner
    from tinylm.cli import app
    r = CliRunner().invoke(app, ["finetune", "--init-from", str(float_run), "--from-scratch", "--binary",
                                 "--task", "limit", "--out", str(tmp_path / "o")])
    assert r.exit_code == 2 and "--init-from replaces the pretraining directory and --from-scratch" in r.output
    assert not (tmp_path / "o").exists()
