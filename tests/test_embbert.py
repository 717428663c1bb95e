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
