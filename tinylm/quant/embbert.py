"""Post-training quantization of EmbBERT (tinylm/models/embbert.py) to the integer ONNX graph: EmbBERT-Q.

Weights int8, symmetric: per output channel for every projection (Requantize per channel), per
tensor for the embedding tables and the classifier (the logits share one scale). Activations
int8 with scales from the largest magnitude seen on calibration inputs (real tokens only: the
device never sees padding, so only real tokens are computed). The graph, per docs/embbert.md:

  embedder  Gather(E_tok) -> MatMulInteger W_te -> Requantize            (token term)
            PositionIds -> Gather(E_pos) -> MatMulInteger W_pe -> Requantize  (position term;
            kept factorised: 4 KB + 2 KB of flash instead of a 32 KB L x d table)
            SegmentIds -> Gather(E_seg); two AddInt8 sum the three terms
  layer     h = RMSNormInt(x)
            O1: q = dense(h, Wq); AttentionInt(q, h) (keys = values = h, row by row); dense(Wo)
            O2: CausalDepthwiseConvInt(h) -> Requantize -> Lut(SiLU) -> dense(Wc)
            x' = AddInt8(O1, O2) with ma = lambda1 * s_O1 / s_x', mb = -lambda2 * s_O2 / s_x'
  last layer: only position 0 feeds the classifier, so its query, attention row, convolution
            (causal: row 0 sees h[0] only) and projections run on row 0 alone.
  head      MatMulInteger (per tensor) + Add bias on position 0 -> int32 logits.
  binary    (--bits 1) the binary ops of docs/binary.md, then quant/repack.repack_binary: the
            token sign table as uint16 when r <= 16, Requantize shifts as int8.

The float forward used for calibration (`forward`) is our own numpy implementation of the
model on one unpadded sequence; tests/test_embbert_q.py checks it against the Flax model.
"""
from __future__ import annotations

import math

import numpy as np

from tinylm import graph as G
from tinylm.quant import qmath
from tinylm.quant.lowering import Lowering, pack_sign_table, pack_signs
from tinylm.quant.repack import repack_binary
from tinylm.tokenizer import SEP


def _np(tree):
    if isinstance(tree, dict):
        return {k: _np(v) for k, v in tree.items()}
    return np.asarray(tree, np.float64)


def _silu(x):
    return x / (1.0 + np.exp(-x))


def _segments(ids):
    is_sep = (ids == SEP).astype(np.int64)
    return np.where(np.cumsum(is_sep) - is_sep > 0, 2, 1)


def lambdas(lp) -> tuple[float, float]:
    return (math.exp(float(np.dot(lp["lambda_q1"], lp["lambda_k1"]))),
            math.exp(float(np.dot(lp["lambda_q2"], lp["lambda_k2"]))))


def binary_parts(layer, xp=np) -> dict:
    """A BinaryDense layer (tinylm/models/binary.py) in float64: the sign bits of W - mean(W)
    (bool [k, n], True = +1), a_w [n], alpha, beta [k], bias [n]. xp = jax.numpy inside QAT."""
    w = xp.asarray(layer["kernel"]).astype(xp.float64)
    mu = w.mean(axis=0, keepdims=True)
    return dict(bits=(w - mu) >= 0, a_w=xp.abs(w - mu).mean(axis=0),
                alpha=xp.abs(xp.asarray(layer["alpha"]).astype(xp.float64)) + 1e-6,
                beta=xp.asarray(layer["beta"]).astype(xp.float64), bias=layer["bias"])


def dense_f(x, layer, binary: bool):
    """Float Dense, or the BinaryDense forward: alpha sign(x + beta) @ a_w sign(W - mean W) + b."""
    if not binary:
        return x @ layer["kernel"] + layer["bias"]
    b = binary_parts(layer)
    sx = np.where(x + b["beta"] >= 0, 1.0, -1.0)
    return b["alpha"] * (sx @ np.where(b["bits"], 1.0, -1.0)) * b["a_w"] + b["bias"]


def binary_embedding_parts(em, xp=np) -> dict:
    """The binary token embedding (models/embbert.NanoEmbedder binary): sign bits of the table
    (bool [V, r], True = +1, about the table's mean) and of W_te (bool [r, d]), a_w [d]."""
    tab = xp.asarray(em["tok"]["embedding"]).astype(xp.float64)
    w = xp.asarray(em["w_te"]["kernel"]).astype(xp.float64)
    mu = w.mean(axis=0, keepdims=True)
    return dict(tok=(tab - tab.mean()) >= 0, bits=(w - mu) >= 0, a_w=xp.abs(w - mu).mean(axis=0))


def binary_embedding_f(em, ids):
    b = binary_embedding_parts(em)
    return np.where(b["tok"][ids], 1.0, -1.0) @ np.where(b["bits"], 1.0, -1.0) * b["a_w"]


def forward(p, config, ids) -> tuple[np.ndarray, dict]:
    """Float EmbBERT classifier on one unpadded sequence: (logits [C], taps {name: array}).
    Taps are the tensors whose int8 scales the quantizer needs."""
    ids = np.asarray(ids, np.int64)
    T, d = len(ids), config["d"]
    binary = bool(config.get("binary", False))
    bb, em = p["backbone"], p["backbone"]["embedder"]
    taps = {}
    if config.get("binary_embedding", False):
        te = binary_embedding_f(em, ids)
    else:
        te = em["tok"]["embedding"][ids] @ em["w_te"]["kernel"]
    pe = em["pos"][:T] @ em["w_pe"]["kernel"]
    taps["embed.tok"], taps["embed.pos"] = te, pe
    taps["embed.tokpos"] = te + pe
    x = te + pe + em["seg"]["embedding"][_segments(ids)]
    taps["embed"] = x
    for i in range(config["layers"]):
        lp, pre = bb[f"layer_{i}"], f"layer{i}"
        h = x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + 1e-6) * lp["norm"]["scale"]
        q = dense_f(h, lp["wq"], binary)
        s = q @ h.T / math.sqrt(d)
        a = np.exp(s - s.max(-1, keepdims=True))
        a /= a.sum(-1, keepdims=True)
        av = a @ h
        o1 = dense_f(av, lp["wo"], binary)
        w = lp["conv"]["kernel"][:, 0, :]
        k = w.shape[0]
        hp = np.concatenate([np.zeros((k - 1, d)), h])
        c = np.stack([(hp[t:t + k] * w).sum(0) for t in range(T)]) + lp["conv"]["bias"]
        sc = _silu(c)
        o2 = dense_f(sc, lp["wc"], binary)
        l1, l2 = lambdas(lp)
        x = l1 * o1 - l2 * o2
        if config.get("residual", False):
            raise ValueError("EmbBERT-Q: the residual variant has no quantizer yet")
        taps.update({pre + ".norm": h, pre + ".q": q, pre + ".att": av, pre + ".o1": o1,
                     pre + ".conv": c, pre + ".silu": sc, pre + ".o2": o2, pre + ".out": x})
    logits = x[0] @ p["head"]["kernel"] + p["head"]["bias"]
    return logits, taps


def calibrate(p, config, seqs, last_row_only=True) -> dict[str, float]:
    """Max |tap| over the calibration sequences. Taps of the last layer that the graph only
    computes on row 0 are calibrated on row 0 only."""
    maxes: dict[str, float] = {}
    last = f"layer{config['layers'] - 1}."
    for ids in seqs:
        _, taps = forward(p, config, ids)
        for k, v in taps.items():
            if last_row_only and k.startswith(last) and k != last + "norm":
                v = v[:1]
            maxes[k] = max(maxes.get(k, 0.0), float(np.abs(v).max()))
    return maxes


def quantize_params(params, config: dict, label_names: list[str], calib_seqs, *, name: str,
                    task: str | None, tokenizer_json: str, max_len: int | None = None,
                    scales: dict[str, float] | None = None, quantization: str = "ptq-absmax"):
    """EmbBERT float params (the Classifier pytree) -> onnx.ModelProto of EmbBERT-Q.

    `scales` ({tap: activation scale}) replaces calibration (QAT lowers with its fixed scales)."""
    if config.get("type", "embbert") != "embbert":
        raise ValueError(f"EmbBERT-Q quantizes type 'embbert' models, not {config.get('type')!r}")
    if config.get("binary_attention"):
        raise ValueError("binary attention probabilities are a training ablation: the integer graph "
                         "does not lower them (docs/binary.md)")
    p = _np(params)
    L = int(max_len or config["max_len"])
    d, layers = config["d"], config["layers"]
    if scales is None:
        S = {k: qmath.scale_of(v) for k, v in calibrate(p, config, calib_seqs).items()}
    else:
        S = dict(scales)
    b = Lowering()
    requant = b.requantize
    if config.get("binary", False):
        def dense(x, s_x, layer, s_out, name):
            return b.binary_dense(x, s_x, binary_parts(layer), s_out, name)
    else:
        dense = b.dense

    em = p["backbone"]["embedder"]
    # --- embedder
    tok = em["tok"]["embedding"].copy()
    tok[0] = 0.0                                           # [PAD] row: the float model zeroes it
    tok_q, s_tok = qmath.quantize_weight(tok, per_channel=False)
    pos_q, s_pos = qmath.quantize_weight(em["pos"][:L], per_channel=False)
    wte_q, s_wte = qmath.quantize_weight(em["w_te"]["kernel"])
    wpe_q, s_wpe = qmath.quantize_weight(em["w_pe"]["kernel"])
    seg_q, s_seg = qmath.quantize_weight(em["seg"]["embedding"], per_channel=False)
    # the two [n] index tensors first: they are not row-local, and the rows of the embedder
    # (and of layer 0's norm) then run as one row-tiled loop in the generated C
    pid = b.op("PositionIds", [G.INPUT], "embed.positions")
    sid = b.op("SegmentIds", [G.INPUT], "embed.segments")
    if config.get("binary_embedding", False):     # r bits a token: Gather packed rows, popcount dot
        be = binary_embedding_parts(em)
        t = b.op("Gather", [b.const("embed.tok_bits", pack_sign_table(be["tok"])), G.INPUT], "embed.tok.gather")
        t = b.op("BinaryMatMulInt", [t, b.const("embed.w_te_bits", pack_signs(be["bits"].T))], "embed.tok.mm",
                 k=int(be["bits"].shape[0]))
        t = requant(t, be["a_w"] / S["embed.tok"], "embed.tok")
    else:
        t = b.op("Gather", [b.const("embed.tok_table", tok_q), G.INPUT], "embed.tok.gather")
        t = b.op("MatMulInteger", [t, b.const("embed.w_te", wte_q)], "embed.tok.mm")
        t = requant(t, s_tok[0] * s_wte / S["embed.tok"], "embed.tok")
    e = b.op("Gather", [b.const("embed.pos_table", pos_q), pid], "embed.pos.gather")
    e = b.op("MatMulInteger", [e, b.const("embed.w_pe", wpe_q)], "embed.pos.mm")
    e = requant(e, s_pos[0] * s_wpe / S["embed.pos"], "embed.pos")
    tp = b.add(t, S["embed.tok"], e, S["embed.pos"], S["embed.tokpos"], "embed.tokpos")
    sg = b.op("Gather", [b.const("embed.seg_table", seg_q), sid], "embed.seg")
    x, s_x = b.add(tp, S["embed.tokpos"], sg, float(s_seg[0]), S["embed"], "embed"), S["embed"]
    exp_table = b.const("exp_lut", qmath.exp_lut())

    for i in range(layers):
        lp, pre = p["backbone"][f"layer_{i}"], f"layer{i}"
        s_h = S[pre + ".norm"]
        h = b.rmsnorm(x, lp["norm"]["scale"], s_h, pre + ".norm")
        rows = h
        if i == layers - 1:   # only position 0 reaches the classifier
            rows = b.op("Gather", [h, b.const(pre + ".row0.idx", np.array([0], np.int32))], pre + ".row0")
        q = dense(rows, s_h, lp["wq"], S[pre + ".q"], pre + ".q")
        m, s = qmath.quantize_multiplier(S[pre + ".q"] * s_h / math.sqrt(d) * 2 ** qmath.EXP_FRAC_BITS)
        om, osh = qmath.quantize_multiplier(s_h / 127.0 / S[pre + ".att"])
        att = b.op("AttentionInt", [q, h, exp_table], pre + ".att", multiplier=m, shift=s,
                   out_multiplier=om, out_shift=osh)
        o1 = dense(att, S[pre + ".att"], lp["wo"], S[pre + ".o1"], pre + ".o1")
        w, sw = qmath.quantize_weight(lp["conv"]["kernel"][:, 0, :])
        c = b.op("CausalDepthwiseConvInt", [rows, b.const(pre + ".conv.w", w),
                                            b.const(pre + ".conv.b", qmath.quantize_bias(lp["conv"]["bias"], s_h * sw))],
                 pre + ".conv.acc")
        c = requant(c, s_h * sw / S[pre + ".conv"], pre + ".conv")
        sc = b.op("Lut", [c, b.const(pre + ".silu.t", qmath.activation_lut(_silu, S[pre + ".conv"], S[pre + ".silu"]))],
                  pre + ".silu")
        o2 = dense(sc, S[pre + ".silu"], lp["wc"], S[pre + ".o2"], pre + ".o2")
        l1, l2 = lambdas(lp)
        s_out = S[pre + ".out"]
        x, s_x = b.add(o1, l1 * S[pre + ".o1"], o2, -l2 * S[pre + ".o2"], s_out, pre + ".out"), s_out

    w, sw = qmath.quantize_weight(p["head"]["kernel"], per_channel=False)
    acc = b.op("MatMulInteger", [x, b.const("head.w", w)], "head.mm")
    b.op("Add", [acc, b.const("head.b", qmath.quantize_bias(p["head"]["bias"], s_x * sw))], G.OUTPUT)
    meta = {"name": name, "arch": "embbert", "task": task or "", "label_names": list(label_names),
            "max_len": L, "vocab": config["vocab_size"], "logit_scale": float(s_x * sw[0]),
            "tokenizer": tokenizer_json, "quantization": quantization,
            "calibration_examples": int(len(calib_seqs)), "config": config}
    if config.get("binary", False) or config.get("binary_embedding", False):   # int8 graphs keep their bytes
        meta.update(weight_bits=1, binary_embedding=bool(config.get("binary_embedding", False)))
        # the token table at its real width (uint16 when r <= 16) and int8 shifts (quant/repack.py)
        return repack_binary(b.to_model(len(label_names), meta))[0]
    return b.to_model(len(label_names), meta)


def quantize_run(run_dir, out, calib: int = 256, name: str | None = None, data_dir=None,
                 max_len: int | None = None) -> str:
    """FloatRun (arch 'embbert') -> EmbBERT-Q ONNX file at `out`. max_len (default: the run's,
    at most the config's position table) is the longest input the graph accepts."""
    from tinynlp_data import load_split

    from tinylm.train.floatrun import FloatRun
    from tinylm.tokenizer import encode
    run = FloatRun(run_dir)
    if run.arch != "embbert":
        raise ValueError(f"{run_dir}: arch {run.arch!r} is not embbert")
    L = int(max_len or run.max_len)
    if L > run.config["max_len"]:
        raise ValueError(f"--max-len {L} exceeds the model's position table ({run.config['max_len']})")
    train = load_split(run.task, "train", data_dir)
    rng = np.random.default_rng(0)
    pick = rng.choice(len(train), size=min(calib, len(train)), replace=False)
    seqs = [encode(run.tokenizer, train[i].text, train[i].text_b, L) for i in pick]
    model = quantize_params(run.params, run.config, run.label_names, seqs,
                            name=name or f"{run.task}-{run.meta.get('config_name', 'embbert')}-q",
                            task=run.task, tokenizer_json=run.tokenizer.to_str(), max_len=L)
    G.save(model, out)
    return str(out)
