"""The binary bert config (BiPFT's own backbone, tinylm/models/bert.py): elastic binary attention
probabilities, binary Q/K/V, BiPFT-B's rank-1 residual estimators, distilled finetuning of a
binary bert from its float run; and EmbBERT's binary attention ablation."""
from __future__ import annotations

import json

import numpy as np
import pytest

jax = pytest.importorskip("jax")
import jax.numpy as jnp  # noqa: E402

from conftest import toy_examples  # noqa: E402
from tinylm.models import binary as B  # noqa: E402
from tinylm.models import embbert as E  # noqa: E402

BERT = dict(type="bert", vocab_size=8192, max_len=16, d=16, layers=1, heads=2, ffn=2, dropout=0.0)
TRAIN, VAL = toy_examples(96, 0), toy_examples(32, 1)


def test_elastic_binary_prob_values_and_gradients():
    p = jnp.asarray([0.05, 0.2, 0.3, 0.9])
    alpha = 0.5
    np.testing.assert_allclose(B.elastic_binary_prob(p, alpha), [0.0, 0.0, 0.5, 0.5])
    gp = jax.grad(lambda p: (B.elastic_binary_prob(p, alpha) * jnp.arange(1.0, 5.0)).sum())(p)
    np.testing.assert_allclose(gp, [1.0, 2.0, 3.0, 0.0])      # passes where 0 <= p / alpha <= 1
    ga = jax.grad(lambda a: B.elastic_binary_prob(p, a).sum())(alpha)
    c = np.asarray(p) / alpha                                  # LSQ: round(c) - c inside, 1 above
    assert np.isclose(ga, sum(np.round(x) - x if x <= 1 else 1.0 for x in c))


@pytest.mark.parametrize("extra", [dict(binary=True), dict(binary=True, low_rank=True)])
def test_binary_bert_is_binary_and_ignores_padding(extra):
    cfg = dict(BERT, **extra)
    m = E.classifier_from_config(cfg, 3)
    ids = np.array([[2, 7, 8, 4, 9, 4, 11, 12], [2, 11, 4, 0, 0, 0, 0, 0]], np.int32)
    p = m.init(jax.random.PRNGKey(0), ids)["params"]
    p = B.init_alphas(lambda p, x: m.apply({"params": p}, x, mutable=["intermediates"]), p, ids)
    layer = p["backbone"]["layer_0"]
    assert {"query_sign", "key_sign", "value_sign", "prob_sign"} <= set(layer)
    assert ("q_m" in layer) == bool(extra.get("low_rank"))
    assert float(layer["prob_sign"]["alpha"]) != 0.25          # set from data: 4 mean(P)
    out = m.apply({"params": p}, ids)
    padded = np.concatenate([ids, np.zeros((2, 8), np.int32)], 1)
    np.testing.assert_allclose(m.apply({"params": p}, padded), out, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(m.apply({"params": p}, ids[1:, :3]), out[1:], rtol=1e-5, atol=1e-5)
    # the probabilities the layer uses are in {0, alpha_p}
    _, st = m.apply({"params": p}, ids, capture_intermediates=lambda mdl, n: isinstance(mdl, B.BinaryProb),
                    mutable=["intermediates"])
    probs = np.asarray(st["intermediates"]["backbone"]["layer_0"]["prob_sign"]["__call__"][0])
    a = abs(float(layer["prob_sign"]["alpha"])) + 1e-6
    assert set(np.unique(np.round(probs / a, 5))) <= {0.0, 1.0}


def test_binary_bert_distilled_from_its_float_run(tmp_path):
    from tinylm.train.finetune import FinetuneConfig, finetune
    cfg = dict(epochs=2, lr=5e-3, warmup=1, max_len=16, batch_size=16, patience=None)
    teacher = tmp_path / "float"
    finetune(None, "limit", teacher, FinetuneConfig(**cfg), model=BERT, train_examples=TRAIN, val_examples=VAL)
    out = tmp_path / "bin"
    r = finetune(None, "limit", out, FinetuneConfig(**cfg, kd_weight=1.0, hidden_weight=1.0),
                 train_examples=TRAIN, val_examples=VAL, init_from=teacher,
                 overrides={"binary": True, "low_rank": True}, teacher=teacher)
    meta = json.loads((out / "run.json").read_text())
    assert meta["config"]["type"] == "bert" and meta["config"]["low_rank"] is True
    assert r["epochs_run"] == 2 and 0.0 <= r["score"] <= 1.0


def test_low_rank_is_refused_for_embbert(tmp_path):
    from typer.testing import CliRunner
    from tinylm.cli import app
    r = CliRunner().invoke(app, ["finetune", "--from-scratch", "--binary", "--low-rank", "--task", "limit",
                                 "--out", str(tmp_path / "x"), "--epochs", "1"])
    assert r.exit_code != 0 and "low_rank" in r.output and "Traceback" not in r.output
    assert len(r.output.strip().splitlines()) == 1, r.output


def test_embbert_binary_attention_ignores_padding_and_is_not_lowered():
    from tinylm.quant import embbert as QE
    cfg = dict(type="embbert", vocab_size=8192, max_len=16, d=16, r=4, layers=1, kernel=4, dropout=0.0,
               init="delta", binary=True, binary_attention=True)
    m = E.classifier_from_config(cfg, 2)
    ids = np.array([[2, 7, 8, 4, 9, 4, 11, 12], [2, 11, 4, 0, 0, 0, 0, 0]], np.int32)
    p = m.init(jax.random.PRNGKey(0), ids)["params"]
    p = B.init_alphas(lambda p, x: m.apply({"params": p}, x, mutable=["intermediates"]), p, ids)
    assert "prob_sign" in p["backbone"]["layer_0"]
    out = m.apply({"params": p}, ids)
    np.testing.assert_allclose(m.apply({"params": p}, ids[1:, :3]), out[1:], rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="binary attention probabilities"):
        QE.quantize_params(p, cfg, ["a", "b"], [[2, 7, 4]], name="x", task=None, tokenizer_json="{}")
