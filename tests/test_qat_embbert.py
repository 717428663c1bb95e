"""QAT of EmbBERT (tinylm/quant/qat.py): the JAX integer forward equals the integer reference
exactly on padded batches of many lengths; the integer params derived inside jit equal the
lowering's; a QAT step lowers the loss; after training, the lowered graph's reference logits equal
the QAT forward's. Small random EmbBERT (d 32, L 48, k 8) like tests/test_embbert_q.py."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

jax = pytest.importorskip("jax")

from conftest import embbert_seqs as _seqs
from tinylm.models import embbert
from tinylm import graph as G
from tinylm.quant import embbert as QE
from tinylm.graph import reference
from tinylm.quant import qat as Q
from tinylm.quant import qat_forward as QF

ROOT = Path(__file__).resolve().parents[1]
CFG = dict(type="embbert", vocab_size=8192, max_len=48, d=32, r=8, layers=2, kernel=8,
           dropout=0.0, residual=False)
LABELS = ["a", "b", "c"]
TOK = (ROOT / "models" / "tokenizer-8192.json").read_text()


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    m = embbert.classifier_from_config(CFG, len(LABELS))
    params = m.init(jax.random.PRNGKey(3), np.zeros((1, 8), np.int32))["params"]
    rng = np.random.default_rng(0)
    calib = _seqs(rng, (3, 10, 46, 20, 48))
    S = QF.scales_from_calibration(params, CFG, calib)
    model = QE.quantize_params(params, CFG, LABELS, calib, name="t", task="emotion", tokenizer_json=TOK)
    path = tmp_path_factory.mktemp("qat") / "ptq.onnx"
    G.save(model, path)
    return params, S, G.load(path)


def test_int_forward_equals_reference(setup):
    _, _, g = setup
    rng = np.random.default_rng(1)
    seqs = _seqs(rng, [1, 2, 3, 5, 8, 13, 16, 17, 21, 30, 31, 32, 33, 40, 47, 48] + list(rng.integers(1, 49, 24)))
    seqs.append([2, 4])
    got = QF.IntModel(g, CFG["layers"]).logits(seqs, batch_size=8)   # mixed lengths share batches
    for s, row in zip(seqs, got):
        assert row.tolist() == reference.run(g, s).tolist(), len(s)


def test_params_from_float_equal_the_lowering(setup):
    params, S, g = setup
    qat = Q.QAT(CFG, S, CFG["max_len"])
    ip = qat.int_params(params)
    want = QF.ip_from_graph(g)
    assert set(ip) == set(want)
    for k in want:
        assert np.array_equal(np.asarray(ip[k]).astype(np.int64), np.asarray(want[k]).astype(np.int64)), k


def _batch(seqs, B):
    return QF._pad_batch(seqs, B)


def test_qat_step_lowers_the_loss_and_exports_what_it_trained(setup, tmp_path):
    params, S, _ = setup
    rng = np.random.default_rng(2)
    seqs = _seqs(rng, [48, 1, 2, 33] + list(rng.integers(2, 49, 8)))   # one shape: one compile
    x = _batch(seqs, len(seqs))
    y = rng.integers(0, 3, len(seqs))
    w = np.ones(len(seqs), np.float32)
    qat = Q.QAT(CFG, S, CFG["max_len"], lr=3e-3)
    p, st = qat.init(params)
    l0 = qat.loss(p, x, y, w)
    for _ in range(5):
        p, st, _ = qat.step(p, st, x, y, w)
    l1 = qat.loss(p, x, y, w)
    assert l1 < l0 - 1e-3, (l0, l1)
    # the trained float weights, lowered with the same scales, give the QAT forward's logits
    model = qat.lower(p, LABELS, name="t", task="emotion", tokenizer_json=TOK)
    path = tmp_path / "qat.onnx"
    G.save(model, path)
    g = G.load(path)
    assert g.meta["quantization"] == "qat"
    probe = seqs
    q_logits, f_logits = qat.eval_logits(p, x)
    ip = qat.int_params(p)
    for k, v in QF.ip_from_graph(g).items():
        assert np.array_equal(np.asarray(ip[k]).astype(np.int64), np.asarray(v).astype(np.int64)), k
    s_logit = g.meta["logit_scale"]
    for i, s in enumerate(probe):
        want = reference.run(g, s)
        assert q_logits[i].tolist() == want.tolist()
        # the training forward's float value is those integer logits times their scale
        np.testing.assert_allclose(f_logits[i], want * s_logit, rtol=1e-6, atol=1e-6 * abs(s_logit))


def test_quantize_cli_qat(setup, tmp_path):
    """`tinylm quantize RUN --qat --epochs 1` writes a QAT graph that runs in the reference."""
    import json
    import shutil
    from flax import serialization
    from typer.testing import CliRunner
    from tinylm.cli import app
    try:
        from tinynlp_data import load_split
        load_split("emotion", "train")
    except Exception as e:  # noqa: BLE001 -- the data bundle is optional for this test
        pytest.skip(f"emotion data not available: {e}")
    params, _, _ = setup
    labels = ["sadness", "joy", "love", "anger", "fear", "surprise"]
    m = embbert.classifier_from_config(CFG, len(labels))
    params = dict(m.init(jax.random.PRNGKey(4), np.zeros((1, 8), np.int32))["params"])
    run = tmp_path / "run"
    run.mkdir()
    (run / "params.msgpack").write_bytes(serialization.to_bytes(params))
    shutil.copy(ROOT / "models" / "tokenizer-8192.json", run / "tokenizer.json")
    (run / "run.json").write_text(json.dumps({"arch": "embbert", "config": CFG, "task": "emotion",
                                              "label_names": labels, "max_len": 16}))
    out = tmp_path / "q.onnx"
    r = CliRunner().invoke(app, ["quantize", str(run), "--qat", "--epochs", "1", "--limit", "64",
                                 "--calib", "16", "--out", str(out)])
    assert r.exit_code == 0, r.output
    assert "best epoch" in r.output
    g = G.load(out)
    assert g.meta["quantization"] == "qat" and g.max_len == 16
    assert reference.run(g, [2, 7, 4]).shape == (len(labels),)
