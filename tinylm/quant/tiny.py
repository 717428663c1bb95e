"""Post-training quantization of the spine's small classifier to the integer ONNX graph.

Weights: int8, symmetric, per output channel (the classifier per tensor, so the int32 logits
of all classes share one scale and argmax is meaningful). Activations: int8 with scales from
the largest magnitude seen on calibration examples (real tokens only). Every scale ends up in
a fixed-point multiplier of the op that consumes it (tinylm/quant/qmath.py).
"""
from __future__ import annotations

import math

import numpy as np

from tinynlp_data import load_split

from tinylm import graph as G
from tinylm.quant import qmath
from tinylm.quant.lowering import Lowering
from tinylm.train.floatrun import FloatRun
from tinylm.train.tiny import padded_ids


def calibrate(run: FloatRun, x: np.ndarray) -> list[float]:
    """Max |activation| of every tap over real tokens of the calibration inputs."""
    import jax
    run.params
    fn = jax.jit(lambda p, ids: run.module.apply({"params": p}, ids, return_taps=True)[1])
    maxes = None
    for i in range(0, len(x), 128):
        ids = x[i:i + 128]
        taps = fn(run.params, ids)
        mask = ids != 0
        cur = []
        for t in taps:
            t = np.abs(np.asarray(t))
            cur.append(float(t[mask].max() if t.ndim == 3 else t.max()))
        maxes = cur if maxes is None else [max(a, b) for a, b in zip(maxes, cur)]
    return maxes


def quantize_tiny(run: FloatRun, calib_ids: np.ndarray, name: str):
    p = _to_numpy(dict(run.params))
    cfg = run.config
    d = cfg["d"]
    scales = iter([qmath.scale_of(m) for m in calibrate(run, calib_ids)])
    b = Lowering()
    dense, norm, add = b.dense, b.rmsnorm, b.add

    # embedding: token and position rows, each table with its own scale, summed by AddInt8
    tok_q, s_tok = qmath.quantize_weight(p["tok_emb"], per_channel=False)
    pos_q, s_pos = qmath.quantize_weight(p["pos_emb"], per_channel=False)
    s_x = next(scales)
    e_tok = b.op("Gather", [b.const("tok_emb", tok_q), G.INPUT], "embed.tok")
    pid = b.op("PositionIds", [G.INPUT], "embed.positions")
    e_pos = b.op("Gather", [b.const("pos_emb", pos_q), pid], "embed.pos")
    x = add(e_tok, float(s_tok[0]), e_pos, float(s_pos[0]), s_x, "embed")
    exp_table = b.const("exp_lut", qmath.exp_lut())

    for i in range(cfg["layers"]):
        blk, pre = p[f"block{i}"], f"block{i}"
        s_h, s_q, s_k, s_v, s_av, s_o, s_x1, s_h2, s_f1, s_g, s_f2, s_x2 = [next(scales) for _ in range(12)]
        h = norm(x, blk["norm1"], s_h, pre + ".norm1")
        q = dense(h, s_h, blk["q"], s_q, pre + ".q")
        k = dense(h, s_h, blk["k"], s_k, pre + ".k")
        v = dense(h, s_h, blk["v"], s_v, pre + ".v")
        kt = b.op("Transpose", [k], pre + ".kT", perm=[1, 0])
        scores = b.op("MatMulInteger", [q, kt], pre + ".scores")
        m, s = qmath.quantize_multiplier(s_q * s_k / math.sqrt(d) * 2 ** qmath.EXP_FRAC_BITS)
        probs = b.op("SoftmaxInt", [scores, exp_table], pre + ".softmax", multiplier=m, shift=s)
        av = b.op("MatMulInteger", [probs, v], pre + ".av.mm")
        av = b.requantize(av, np.array([s_v / 127.0 / s_av]), pre + ".av")   # probabilities: scale 1/127
        o = dense(av, s_av, blk["o"], s_o, pre + ".o")
        x = add(x, s_x, o, s_o, s_x1, pre + ".res1")
        h2 = norm(x, blk["norm2"], s_h2, pre + ".norm2")
        f = dense(h2, s_h2, blk["ff1"], s_f1, pre + ".ff1")
        f = b.op("Lut", [f, b.const(pre + ".gelu.t", qmath.activation_lut(_gelu, s_f1, s_g))], pre + ".gelu")
        f = dense(f, s_g, blk["ff2"], s_f2, pre + ".ff2")
        x = add(x, s_x1, f, s_f2, s_x2, pre + ".res2")
        s_x = s_x2

    cls = b.op("Gather", [x, b.const("cls_index", np.array([0], np.int32))], "cls")
    s_hf = next(scales)
    h = norm(cls, p["norm_f"], s_hf, "norm_f")
    w, sw = qmath.quantize_weight(p["head"]["kernel"], per_channel=False)
    acc = b.op("MatMulInteger", [h, b.const("head.w", w)], "head.mm")
    b.op("Add", [acc, b.const("head.b", qmath.quantize_bias(p["head"]["bias"], s_hf * sw))], G.OUTPUT)
    meta = {"name": name, "arch": "tiny", "task": run.task, "label_names": run.label_names,
            "max_len": run.max_len, "vocab": cfg["vocab"], "logit_scale": float(s_hf * sw[0]),
            "tokenizer": run.tokenizer.to_str(), "quantization": "ptq-absmax",
            "calibration_examples": int(len(calib_ids))}
    return b.to_model(len(run.label_names), meta)


def _gelu(x):
    from math import erf
    return 0.5 * x * (1 + np.vectorize(erf)(x / math.sqrt(2)))


def _to_numpy(tree):
    if isinstance(tree, dict):
        return {k: _to_numpy(v) for k, v in tree.items()}
    return np.asarray(tree, np.float64)


def quantize_run(run_dir, out, calib: int = 1024, name: str | None = None, data_dir=None) -> str:
    run = FloatRun(run_dir)
    if run.arch != "tiny":
        raise ValueError(f"{run_dir}: arch {run.arch!r} has no quantizer yet (only 'tiny')")
    train = load_split(run.task, "train", data_dir)
    rng = np.random.default_rng(0)
    pick = rng.choice(len(train), size=min(calib, len(train)), replace=False)
    ids = padded_ids(run.tokenizer, [train[i] for i in pick], run.max_len)
    model = quantize_tiny(run, ids, name or f"{run.task}-{run.meta.get('config_name', run.arch)}")
    G.save(model, out)
    return str(out)
