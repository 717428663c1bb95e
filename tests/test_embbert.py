"""EmbBERT model: parameter count, shapes, masking, and a numpy reference of one layer."""
import numpy as np
import jax
import pytest

from tinylm.models import embbert as E
from tinylm.train.floatrun import FloatRun, RunError


def test_default_backbone_has_357248_params():
    p = E.backbone_param_shapes(E.CONFIGS["embbert"])
    assert E.count_params(p) == 357_248
    assert E.count_params(p["embedder"]) == 139_648
    assert E.count_params(p["layer_0"]) == 54_400


def test_other_configs_build():
    for name in ("embbert-nano", "embbert-tiny", "bert"):
        assert E.count_params(E.backbone_param_shapes(E.CONFIGS[name])) > 0
    with pytest.raises(KeyError, match="embbert-nano"):
        E.get_config("nope")


def test_segments_from_ids():
    ids = np.array([[2, 9, 4, 9, 9, 4, 0, 0], [2, 9, 9, 4, 0, 0, 0, 0]], np.int32)
    np.testing.assert_array_equal(E.segments_from_ids(ids),
                                  [[1, 1, 1, 2, 2, 2, 0, 0], [1, 1, 1, 1, 0, 0, 0, 0]])


def _tiny():
    return dict(type="embbert", vocab_size=50, max_len=16, d=8, r=4, layers=2, kernel=4, dropout=0.0)


@pytest.mark.parametrize("cfg", [_tiny(), dict(type="bert", vocab_size=50, max_len=16, d=8,
                                                 layers=1, heads=2, ffn=2, dropout=0.0)])
def test_shapes_and_padding_does_not_change_logits(cfg):
    m = E.classifier_from_config(cfg, 3)
    ids = np.array([[2, 7, 8, 4, 9, 4], [2, 11, 4, 0, 0, 0]], np.int32)
    params = m.init(jax.random.PRNGKey(0), ids)
    out = m.apply(params, ids)
    assert out.shape == (2, 3)
    padded = np.concatenate([ids, np.zeros((2, 10), np.int32)], 1)
    np.testing.assert_allclose(m.apply(params, padded), out, rtol=1e-5, atol=1e-5)
    # the second row alone, without its padding, gives the same logits
    np.testing.assert_allclose(m.apply(params, ids[1:, :3]), out[1:], rtol=1e-5, atol=1e-5)


def test_too_long_input_is_an_error():
    m = E.classifier_from_config(_tiny(), 2)
    with pytest.raises(ValueError, match="max_len"):
        m.init(jax.random.PRNGKey(0), np.ones((1, 17), np.int32))


def _ref_forward(p, ids, cfg):
    """numpy transcription of docs/embbert.md for one sequence without padding."""
    T = len(ids)
    seg = np.array(E.segments_from_ids(ids[None]))[0]
    e = p["embedder"]
    x = e["tok"]["embedding"][ids] @ e["w_te"]["kernel"] + e["pos"][:T] @ e["w_pe"]["kernel"] \
        + e["seg"]["embedding"][seg]
    for i in range(cfg["layers"]):
        L = p[f"layer_{i}"]
        h = x / np.sqrt((x * x).mean(-1, keepdims=True) + 1e-6) * L["norm"]["scale"]
        l1 = np.exp(L["lambda_q1"] @ L["lambda_k1"])
        l2 = np.exp(L["lambda_q2"] @ L["lambda_k2"])
        q = h @ L["wq"]["kernel"] + L["wq"]["bias"]
        s = q @ h.T / np.sqrt(cfg["d"])
        a = np.exp(s - s.max(-1, keepdims=True))
        a /= a.sum(-1, keepdims=True)
        o1 = (a @ h) @ L["wo"]["kernel"] + L["wo"]["bias"]
        k = cfg["kernel"]
        w = L["conv"]["kernel"][:, 0, :]               # [k, d]
        c = np.zeros_like(h)
        for t in range(T):
            for j in range(k):                          # C[t] uses h[t-k+1 .. t]
                if t - (k - 1) + j >= 0:
                    c[t] += w[j] * h[t - (k - 1) + j]
        c += L["conv"]["bias"]
        o2 = (c / (1 + np.exp(-c))) @ L["wc"]["kernel"] + L["wc"]["bias"]
        x = l1 * o1 - l2 * o2                           # no residual
    return x


def test_matches_numpy_reference_of_the_model_doc():
    cfg = _tiny()
    m = E.classifier_from_config(cfg, 3)
    ids = np.array([[2, 7, 8, 4, 9, 10, 4]], np.int32)
    v = m.init(jax.random.PRNGKey(1), ids)
    p = jax.tree_util.tree_map(np.asarray, v["params"])
    h = _ref_forward(p["backbone"], ids[0], cfg)
    want = h[0] @ p["head"]["kernel"] + p["head"]["bias"]
    np.testing.assert_allclose(np.asarray(m.apply(v, ids))[0], want, rtol=2e-4, atol=2e-4)


def test_floatrun_predicts_and_rejects_other_config(tmp_path):
    import json, shutil
    from flax import serialization
    cfg = _tiny()
    m = E.classifier_from_config(cfg, 2)
    params = m.init(jax.random.PRNGKey(0), np.zeros((1, 16), np.int32))["params"]
    run = tmp_path / "run"
    run.mkdir()
    shutil.copy("models/tokenizer-8192.json", run / "tokenizer.json")
    (run / "run.json").write_text(json.dumps(dict(arch="embbert", config=cfg, task="limit",
                                                  label_names=["no", "yes"], max_len=16)))
    (run / "params.msgpack").write_bytes(serialization.to_bytes(params))
    out = FloatRun(run).predict([[2, 5, 4], [2, 6, 7, 4]])
    assert out.shape == (2, 2)
    ref = m.apply({"params": params}, np.array([[2, 5, 4]], np.int32))
    np.testing.assert_allclose(out[0], ref[0], rtol=1e-5, atol=1e-5)
    cfg2 = dict(cfg, d=16)
    (run / "run.json").write_text(json.dumps(dict(arch="embbert", config=cfg2, task="limit",
                                                  label_names=["no", "yes"], max_len=16)))
    with pytest.raises(RunError, match="another config"):
        FloatRun(run).predict([[2, 5, 4]])


def test_checkpoint_of_another_config_is_a_clear_error():
    from flax import serialization
    p = E.init_backbone_params(_tiny())
    other = E.backbone_param_shapes(dict(_tiny(), d=16))
    with pytest.raises(E.CheckpointMismatch, match="another config"):
        E.load_params(other, serialization.to_bytes(p), "ckpt.msgpack")
    same = E.load_params(p, serialization.to_bytes(p), "ckpt.msgpack")
    assert E.count_params(same) == E.count_params(p)


# ---------------------------------------------------------------- conv as a banded einsum, init

def test_toeplitz_conv_equals_flax_grouped_conv():
    import flax.linen as nn
    k, d = 6, 8
    h = np.random.default_rng(0).normal(size=(2, 11, d)).astype(np.float32)
    ref = nn.Conv(d, (k,), padding=[(k - 1, 0)], feature_group_count=d)
    v = ref.init(jax.random.PRNGKey(0), h)
    for impl in ("toeplitz", "grouped"):
        m = E.CausalDepthwiseConv(d, k, impl)
        mine = m.init(jax.random.PRNGKey(0), h)            # same tree and same initial values
        assert jax.tree_util.tree_structure(mine) == jax.tree_util.tree_structure(v)
        for a, b in zip(jax.tree_util.tree_leaves(mine), jax.tree_util.tree_leaves(v)):
            np.testing.assert_array_equal(a, b)
        np.testing.assert_allclose(m.apply(v, h), ref.apply(v, h), rtol=1e-5, atol=1e-5)


def _committed(run):
    import json
    from pathlib import Path
    return json.loads((Path("models") / run / "run.json").read_text())["config"]


@pytest.mark.parametrize("run", ["embbert-emotion", "embbert-pre"])
def test_committed_checkpoints_give_the_same_outputs_with_either_conv(run):
    from pathlib import Path
    cfg = _committed(run)
    assert "init" not in cfg and "conv_impl" not in cfg     # old artefacts: the defaults apply
    ids = np.random.default_rng(0).integers(5, 8192, (4, 48)).astype(np.int32)
    ids[:, 0], ids[2, 30:] = 2, 0                             # [CLS], and one padded row
    if run == "embbert-emotion":
        run_params = FloatRun(Path("models") / run)
        outs = [np.asarray(E.classifier_from_config(dict(cfg, conv_impl=i), 6).apply(
            {"params": run_params.params}, ids)) for i in ("grouped", "toeplitz")]
        np.testing.assert_allclose(run_params.predict([list(r[r > 0]) for r in ids]),
                                   outs[0], rtol=1e-4, atol=1e-4)
    else:
        tmpl = E.backbone_param_shapes(cfg)
        p = E.load_params(tmpl, (Path("models") / run / "backbone.msgpack").read_bytes(), run)
        outs = [np.asarray(E.EmbBERT(dict(cfg, conv_impl=i)).apply({"params": p}, ids))
                for i in ("grouped", "toeplitz")]
    np.testing.assert_allclose(outs[1], outs[0], rtol=1e-4, atol=2e-5 * np.abs(outs[0]).max())


def _position_cosine(cfg, seed=0):
    """Mean cosine between the backbone outputs at different positions of real sentences, at init."""
    from tinylm.tokenizer import encode, load_tokenizer
    tok = load_tokenizer("models/tokenizer-8192.json")
    texts = ["i feel so happy today because my friends came over to visit me",
             "the market fell sharply on monday after the bank reported losses",
             "play some jazz music in the kitchen please"]
    enc = [encode(tok, t, None, 64) for t in texts]
    ids = np.array([e[:min(map(len, enc))] for e in enc], np.int32)
    m = E.EmbBERT(cfg)
    h = np.asarray(m.apply(m.init(jax.random.PRNGKey(seed), ids), ids))
    h = h / np.linalg.norm(h, axis=-1, keepdims=True)
    c = np.einsum("btd,bsd->bts", h, h)
    T = c.shape[1]
    return float((c.sum((1, 2)) - T).mean() / (T * (T - 1)))


def test_delta_init_keeps_positions_apart():
    # measured: flax init 0.98 (seeds 0, 1), delta 0.30-0.36; the committed pretrained backbone 0.995
    old = {k: v for k, v in E.CONFIGS["embbert"].items() if k != "init"}
    assert E.CONFIGS["embbert"]["init"] == "delta"            # the default for new runs
    assert _position_cosine(old) > 0.95                       # the plateau issue 9 describes
    assert _position_cosine(E.get_config("embbert")) < 0.6


def test_configs_without_init_build_the_old_way():
    old = _tiny()                                             # no "init" key, as committed runs
    a = E.init_backbone_params(old)
    b = E.init_backbone_params(dict(old, init="flax"))
    for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)):
        np.testing.assert_array_equal(x, y)
    d = E.init_backbone_params(dict(old, init="delta"))
    k = old["kernel"]
    tap = np.asarray(d["layer_0"]["conv"]["kernel"])[:, 0]
    assert np.abs(tap[k - 1] - 1).max() < 0.1 and np.abs(tap[:k - 1]).max() < 0.1
    np.testing.assert_allclose(d["layer_0"]["wc"]["kernel"], -np.eye(old["d"]), atol=0.1)
    assert not np.allclose(np.asarray(a["layer_0"]["conv"]["kernel"])[k - 1, 0], 1, atol=0.1)
    assert not np.allclose(a["layer_0"]["wc"]["kernel"], -np.eye(old["d"]), atol=0.3)
    with pytest.raises(ValueError, match="unknown init"):
        E.init_backbone_params(dict(old, init="nope"))
