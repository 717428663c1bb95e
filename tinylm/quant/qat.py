"""Quantization-aware training of EmbBERT whose forward IS the integer graph (EmbBERT-Q).

Three pieces, all in JAX:

1. `int_forward(ip, ids)`: the EmbBERT-Q graph that tinylm/quant/embbert.py lowers, batched,
   on integer tensors, with the exact semantics of tinylm/graph/ops.py (round-half-up shifts,
   AddInt8, the fused AttentionInt with its exp LUT and integer division, RMSNormInt with the
   exact isqrt, the SiLU Lut, the causal depthwise conv). `ip` are the integer parameters:
   `ip_from_graph` reads them from a lowered graph, `ip_from_float` derives them from float
   weights and fixed activation scales the way the lowering does. Its int32 logits equal
   `tinylm.graph.reference.run` on every input (tests/test_qat_embbert.py).

   Exactness: everything runs under `jax.enable_x64` on int64/uint64 (the requantize product
   x * m needs 62 bits). Matrix products of int8-valued tensors run as float32 dots with
   HIGHEST precision: every product is an integer <= 2**14 and every partial sum < 2**24 when
   the inner dimension is <= 1024 (checked per call; larger ones use an int64 dot), so the
   float32 result is exact whatever order the backend sums in.
   Padding: sequences are right-padded with [PAD] = 0. The graph sees only the n real tokens;
   here padded keys are masked out of the softmax (max, exp sum and A.h), the causal
   convolution never looks ahead, and every other op is row-local, so the real rows are
   identical to the graph's.

2. `qat_forward(params, consts, ids)`: the same integer forward computed from the current float
   weights (ip_from_float, inside jit), carrying beside every integer tensor q a float
   surrogate f of the float EmbBERT on fake-quantized weights. Each activation is
       f = clip(f_raw, -128 s, 127 s) + stop_gradient(q * s - clip(...))
   so its VALUE is the integer tensor's (q * s) and its GRADIENT is the straight-through
   estimate of the float op (weights: w + stop_gradient(w_q * s_w - w); clipped activations pass
   no gradient). The loss therefore sees exactly the integer logits (times their scale) while
   gradients reach the float weights, the norm gains and the lambda vectors. Activation scales
   stay fixed at the PTQ calibration (absmax on <= 256 training examples), so the SiLU LUTs
   and the attention multipliers are constants; weight scales follow the weights.

3. `qat_run`: `tinylm quantize RUN --qat`: PTQ scales, a few epochs of QAT on the task's train
   split, the best epoch on validation measured with the integer forward of the LOWERED graph
   (epoch 0 = PTQ itself, so QAT never exports something worse on validation), and the ONNX
   written by quantize_embbert.quantize_params with the same scales.
"""
from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Callable

import numpy as np

from tinylm.quant import qmath
from tinylm.quant import embbert as QE

PAD, SEP = 0, 4


# ----------------------------------------------------------------------------- integer params

def _dense_names(pre: str) -> list[str]:
    return [pre + ".q", pre + ".o1", pre + ".o2"]


def ip_from_graph(g) -> dict:
    """Integer parameters of an EmbBERT-Q graph (tinylm.graph.Graph or onnx.ModelProto)."""
    weights, nodes = _graph_parts(g)
    W = {k: np.asarray(v) for k, v in weights.items()}
    meta_layers = sum(1 for n in nodes if n.endswith(".norm") and n.startswith("layer"))
    ip = {"tok": W["embed.tok_table"], "w_te": W["embed.w_te"], "tok.m": W["embed.tok.m"], "tok.s": W["embed.tok.s"],
          "pos": W["embed.pos_table"], "w_pe": W["embed.w_pe"], "pos.m": W["embed.pos.m"], "pos.s": W["embed.pos.s"],
          "seg": W["embed.seg_table"], "exp_lut": W["exp_lut"], "head.w": W["head.w"], "head.b": W["head.b"]}
    for key, node in (("tokpos", "embed.tokpos"), ("embed", "embed")):
        a = nodes[node]
        ip[key] = np.array([a["ma"], a["mb"], a["shift"]], np.int64)
    for i in range(meta_layers):
        pre = f"layer{i}"
        ip[pre + ".norm.g"] = W[pre + ".norm.g"]
        a = nodes[pre + ".norm"]
        ip[pre + ".norm.ms"] = np.array([a["multiplier"], a["shift"]], np.int64)
        for n in _dense_names(pre) + [pre + ".conv"]:
            for s in (".m", ".s"):
                ip[n + s] = W[n + s]
        for n in _dense_names(pre):
            ip[n + ".w"], ip[n + ".b"] = W[n + ".w"], W[n + ".b"]
        ip[pre + ".conv.w"], ip[pre + ".conv.b"] = W[pre + ".conv.w"], W[pre + ".conv.b"]
        ip[pre + ".silu.t"] = W[pre + ".silu.t"]
        a = nodes[pre + ".att"]
        ip[pre + ".att"] = np.array([a["multiplier"], a["shift"], a["out_multiplier"], a["out_shift"]], np.int64)
        a = nodes[pre + ".out"]
        ip[pre + ".out"] = np.array([a["ma"], a["mb"], a["shift"]], np.int64)
    return ip


def _graph_parts(g):
    """(weights {name: array}, {node name: attrs}) of a Graph or an onnx.ModelProto."""
    if hasattr(g, "weights"):
        return g.weights, {n.name: n.attrs for n in g.nodes}
    from onnx import helper, numpy_helper
    weights = {t.name: numpy_helper.to_array(t) for t in g.graph.initializer}
    return weights, {n.name: {a.name: helper.get_attribute_value(a) for a in n.attribute} for n in g.graph.node}


def scales_from_calibration(params, config, seqs) -> dict[str, float]:
    """The PTQ activation scales (quantize_embbert.calibrate, absmax)."""
    return {k: qmath.scale_of(v) for k, v in QE.calibrate(QE._np(params), config, seqs).items()}


def constants(S: dict, config: dict) -> dict:
    """What depends only on the activation scales (fixed during QAT): SiLU tables, attention
    multipliers, the exp LUT. Computed with qmath exactly as the lowering does."""
    d = config["d"]
    c = {"exp_lut": qmath.exp_lut()}
    for i in range(config["layers"]):
        pre = f"layer{i}"
        s_h = S[pre + ".norm"]
        m, s = qmath.quantize_multiplier(S[pre + ".q"] * s_h / math.sqrt(d) * 2 ** qmath.EXP_FRAC_BITS)
        om, osh = qmath.quantize_multiplier(s_h / 127.0 / S[pre + ".att"])
        c[pre + ".att"] = np.array([m, s, om, osh], np.int64)
        c[pre + ".silu.t"] = qmath.activation_lut(QE._silu, S[pre + ".conv"], S[pre + ".silu"])
    return c


# jnp mirrors of tinylm/quant/qmath.py (float64, under enable_x64): same IEEE operations in the same order

def _floor_log2(x):
    import jax.numpy as jnp
    _, e = jnp.frexp(x)               # x = mant * 2**e, mant in [0.5, 1): floor(log2 x) = e - 1
    return e.astype(jnp.int64) - 1


def _jq_multiplier(real):
    """qmath.quantize_multiplier, elementwise on a float64 array: (m int64, s int64)."""
    import jax.numpy as jnp
    pos = real > 0
    safe = jnp.where(pos, real, 1.0)
    s = jnp.clip(29 - _floor_log2(safe), 1, 62)
    m = jnp.round(jnp.ldexp(safe, s.astype(jnp.int32))).astype(jnp.int64)
    return jnp.where(pos, m, 0), jnp.where(pos, s, 1)


def _jadd_multipliers(sa, sb, so):
    import jax.numpy as jnp
    ra, rb = sa / so, sb / so
    big = jnp.maximum(jnp.maximum(jnp.abs(ra), jnp.abs(rb)), 1e-12)
    sh = jnp.clip(29 - _floor_log2(big), 1, 62)
    e = sh.astype(jnp.int32)
    return jnp.stack([jnp.round(jnp.ldexp(ra, e)).astype(jnp.int64),
                      jnp.round(jnp.ldexp(rb, e)).astype(jnp.int64), sh])


def _jq_weight(w, per_channel=True):
    import jax.numpy as jnp
    w = w.astype(jnp.float64)
    absmax = jnp.abs(w).max(axis=0) if per_channel else jnp.abs(w).max()[None]
    scale = jnp.maximum(absmax, 1e-8) / 127.0
    return jnp.clip(jnp.round(w / scale), -127, 127).astype(jnp.int64), scale


def _jq_bias(b, scale):
    import jax.numpy as jnp
    return jnp.round(b.astype(jnp.float64) / scale).astype(jnp.int64)


def ip_from_float(params, S: dict, consts: dict, config: dict, max_len: int):
    """(integer params, weight scales) from float params, traceable under jit + enable_x64.
    Mirrors quantize_embbert.quantize_params line by line."""
    import jax.numpy as jnp
    f64 = lambda a: jnp.asarray(a).astype(jnp.float64)  # noqa: E731
    bb, em = params["backbone"], params["backbone"]["embedder"]
    ip, ws = {}, {}
    tok = f64(em["tok"]["embedding"]).at[0].set(0.0)
    ip["tok"], ws["tok"] = _jq_weight(tok, per_channel=False)
    ip["pos"], ws["pos"] = _jq_weight(f64(em["pos"])[:max_len], per_channel=False)
    ip["w_te"], ws["w_te"] = _jq_weight(em["w_te"]["kernel"])
    ip["w_pe"], ws["w_pe"] = _jq_weight(em["w_pe"]["kernel"])
    ip["seg"], ws["seg"] = _jq_weight(em["seg"]["embedding"], per_channel=False)
    ip["tok.m"], ip["tok.s"] = _jq_multiplier(ws["tok"][0] * ws["w_te"] / S["embed.tok"])
    ip["pos.m"], ip["pos.s"] = _jq_multiplier(ws["pos"][0] * ws["w_pe"] / S["embed.pos"])
    ip["tokpos"] = _jadd_multipliers(jnp.float64(S["embed.tok"]), jnp.float64(S["embed.pos"]),
                                     jnp.float64(S["embed.tokpos"]))
    ip["embed"] = _jadd_multipliers(jnp.float64(S["embed.tokpos"]), ws["seg"][0], jnp.float64(S["embed"]))
    ip["exp_lut"] = consts["exp_lut"]
    s_x = S["embed"]

    def dense(name, layer, s_in, s_out):
        ip[name + ".w"], sw = _jq_weight(layer["kernel"])
        ws[name] = sw
        ip[name + ".b"] = _jq_bias(layer["bias"], s_in * sw)
        ip[name + ".m"], ip[name + ".s"] = _jq_multiplier(s_in * sw / s_out)

    for i in range(config["layers"]):
        lp, pre = bb[f"layer_{i}"], f"layer{i}"
        g, sg = _jq_weight(f64(lp["norm"]["scale"]).reshape(-1, 1), per_channel=False)
        ip[pre + ".norm.g"], ws[pre + ".norm"] = g.reshape(-1), sg
        s_h = S[pre + ".norm"]
        m, s = _jq_multiplier(sg[0] / 2 ** 14 / s_h)
        ip[pre + ".norm.ms"] = jnp.stack([m, s])
        dense(pre + ".q", lp["wq"], s_h, S[pre + ".q"])
        ip[pre + ".att"] = consts[pre + ".att"]
        dense(pre + ".o1", lp["wo"], S[pre + ".att"], S[pre + ".o1"])
        ip[pre + ".conv.w"], sw = _jq_weight(lp["conv"]["kernel"][:, 0, :])
        ws[pre + ".conv"] = sw
        ip[pre + ".conv.b"] = _jq_bias(lp["conv"]["bias"], s_h * sw)
        ip[pre + ".conv.m"], ip[pre + ".conv.s"] = _jq_multiplier(s_h * sw / S[pre + ".conv"])
        ip[pre + ".silu.t"] = consts[pre + ".silu.t"]
        dense(pre + ".o2", lp["wc"], S[pre + ".silu"], S[pre + ".o2"])
        l1, l2 = _jlambdas(lp)
        ip[pre + ".out"] = _jadd_multipliers(l1 * S[pre + ".o1"], -l2 * S[pre + ".o2"], jnp.float64(S[pre + ".out"]))
        s_x = S[pre + ".out"]
    ip["head.w"], sw = _jq_weight(params["head"]["kernel"], per_channel=False)
    ws["head"] = sw
    ip["head.b"] = _jq_bias(params["head"]["bias"], s_x * sw)
    ws["logit"] = s_x * sw[0]
    return ip, ws


def _jlambdas(lp):
    import jax.numpy as jnp
    f = lambda k: jnp.asarray(lp[k]).astype(jnp.float64)  # noqa: E731
    return jnp.exp(jnp.dot(f("lambda_q1"), f("lambda_k1"))), jnp.exp(jnp.dot(f("lambda_q2"), f("lambda_k2")))


# ----------------------------------------------------------------------------- integer ops (ops.py in JAX)

def _i64(x):
    import jax.numpy as jnp
    return jnp.asarray(x).astype(jnp.int64)


def _round_shift(v, s):
    return (v + (1 << (s - 1))) >> s


def _requant(acc, m, s):
    import jax.numpy as jnp
    return jnp.clip(_round_shift(_i64(acc) * _i64(m), _i64(s)), -128, 127)


def _mm(a, b, eq: str):
    """Exact integer einsum of int8-valued tensors (see the module docstring)."""
    import jax
    import jax.numpy as jnp
    k = a.shape[-1]
    if k <= 1024:
        r = jnp.einsum(eq, a.astype(jnp.float32), b.astype(jnp.float32), precision=jax.lax.Precision.HIGHEST)
        return r.astype(jnp.int64)
    return jnp.einsum(eq, _i64(a), _i64(b))


def _add_int8(a, b, mab):
    import jax.numpy as jnp
    return jnp.clip(_round_shift(_i64(a) * mab[0] + _i64(b) * mab[1], mab[2]), -128, 127)


def _isqrt(v):
    import jax.numpy as jnp
    r = jnp.floor(jnp.sqrt(v.astype(jnp.float64))).astype(jnp.int64)
    r = jnp.where(r * r > v, r - 1, r)
    return jnp.where((r + 1) * (r + 1) <= v, r + 1, r)


def _rmsnorm(x, g, ms):
    import jax.numpy as jnp
    x = _i64(x)
    d = x.shape[-1]
    ss = (x * x).sum(-1, keepdims=True)
    r = jnp.maximum(_isqrt((ss << 16) // d), 1)
    inv = (1 << 22) // r
    return _requant(x * _i64(g) * inv, ms[0], ms[1])


def _attention(q, h, kmask, a):
    """AttentionInt on a batch: q [B, m, d], h [B, n, d], kmask [B, n] (real keys)."""
    import jax.numpy as jnp
    lut = jnp.asarray(a["lut"]).astype(jnp.int64)
    mult, sh, om, osh = a["ms"][0], a["ms"][1], a["ms"][2], a["ms"][3]
    s = _mm(q, h, "bmd,bnd->bmn")
    km = kmask[:, None, :]
    mx = jnp.max(jnp.where(km, s, jnp.iinfo(jnp.int64).min), axis=-1, keepdims=True)
    diff = jnp.where(km, mx - s, 0).astype(jnp.uint64)
    shu = sh.astype(jnp.uint64)
    z = (diff * mult.astype(jnp.uint64) + (jnp.uint64(1) << (shu - jnp.uint64(1)))) >> shu
    e = lut[jnp.minimum(z, jnp.uint64(lut.shape[0] - 1)).astype(jnp.int64)]
    e = jnp.where(km, e, 0)
    total = jnp.maximum(e.sum(-1, keepdims=True), 1)     # >= 1 whenever the row has a real key
    p = (e * 127 + (total >> 1)) // total
    return _requant(_mm(p, h, "bmn,bnd->bmd"), om, osh)


def _conv(x, w, bias):
    """CausalDepthwiseConvInt: x [B, T, d], w [k, d], bias [d] -> int64 [B, T, d]."""
    import jax.numpy as jnp
    k, T = w.shape[0], x.shape[1]
    if k <= 1024:      # |sum| <= k * 128 * 127 < 2**24: a float32 convolution is exact
        return _i64(_dwconv(x.astype(jnp.float32), jnp.asarray(w).astype(jnp.float32))) + _i64(bias)
    xp = jnp.pad(_i64(x), ((0, 0), (k - 1, 0), (0, 0)))
    y = jnp.broadcast_to(_i64(bias), x.shape)
    for j in range(k):
        y = y + _i64(w[j]) * xp[:, j:j + T]
    return y


def _dwconv(x, w):
    """Causal depthwise convolution in float: x [B, T, d], w [k, d] (w[k-1] on the current row)."""
    import jax
    k, d = w.shape
    return jax.lax.conv_general_dilated(x, w[:, None, :], (1,), [(k - 1, 0)], dimension_numbers=("NWC", "WIO", "NWC"),
                                        feature_group_count=d, precision=jax.lax.Precision.HIGHEST)


def _segments(ids):
    import jax.numpy as jnp
    is_sep = (ids == SEP).astype(jnp.int32)
    return jnp.where(jnp.cumsum(is_sep, axis=-1) - is_sep > 0, 2, 1)


# ----------------------------------------------------------------------------- the forward

def _ste(f_raw, q, s):
    """Value q * s, gradient of f_raw where it is inside the int8 range."""
    import jax
    import jax.numpy as jnp
    fc = jnp.clip(f_raw, -128.0 * s, 127.0 * s)
    return fc + jax.lax.stop_gradient(q.astype(jnp.float32) * s - fc)


def _wq(w, q, s):
    """Straight-through fake-quantized weight: value q * s, gradient 1."""
    import jax
    import jax.numpy as jnp
    w = jnp.asarray(w, jnp.float32)
    return w + jax.lax.stop_gradient((q * s).astype(jnp.float32) - w)


def forward(ip, ids, layers: int, params=None, S=None, ws=None):
    """EmbBERT-Q on a batch of right-padded ids [B, T] -> (int64 logits [B, C], float logits or None).

    Integer path only when params is None; with params (float), also the straight-through
    surrogate, whose value equals the integer logits times their scale."""
    import jax
    import jax.numpy as jnp
    ids = jnp.asarray(ids).astype(jnp.int32)
    B, T = ids.shape
    kmask = ids != PAD
    sur = params is not None
    f32 = jnp.float32
    # --- embedder
    t = _requant(_mm(jnp.asarray(ip["tok"])[ids], ip["w_te"], "btr,rd->btd"), ip["tok.m"], ip["tok.s"])
    e = _requant(_mm(jnp.asarray(ip["pos"])[:T], ip["w_pe"], "tr,rd->td"), ip["pos.m"], ip["pos.s"])
    e = jnp.broadcast_to(e, t.shape)
    tp = _add_int8(t, e, ip["tokpos"])
    seg = _segments(ids)
    x = _add_int8(tp, jnp.asarray(ip["seg"])[seg], ip["embed"])
    if sur:
        em = params["backbone"]["embedder"]
        tok_f = _wq(jnp.asarray(em["tok"]["embedding"]).at[0].set(0.0), ip["tok"], ws["tok"][0])
        ft = _ste(tok_f[ids] @ _wq(em["w_te"]["kernel"], ip["w_te"], ws["w_te"]), t, S["embed.tok"])
        fe = _ste(_wq(em["pos"][:T], ip["pos"][:T], ws["pos"][0]) @ _wq(em["w_pe"]["kernel"], ip["w_pe"], ws["w_pe"]),
                  e[0], S["embed.pos"])
        ftp = _ste(ft + fe[None], tp, S["embed.tokpos"])
        fx = _ste(ftp + _wq(em["seg"]["embedding"], ip["seg"], ws["seg"][0])[seg], x, S["embed"])
    d = x.shape[-1]
    for i in range(layers):
        pre = f"layer{i}"
        h = _rmsnorm(x, ip[pre + ".norm.g"], ip[pre + ".norm.ms"])
        last = i == layers - 1
        rows = h[:, :1] if last else h          # the graph runs the last layer on row 0 only

        def dense(v, name):
            acc = _mm(v, ip[name + ".w"], "btd,de->bte") + _i64(ip[name + ".b"])
            return _requant(acc, ip[name + ".m"], ip[name + ".s"])
        q = dense(rows, pre + ".q")
        att = _attention(q, h, kmask, {"lut": ip["exp_lut"], "ms": ip[pre + ".att"]})
        o1 = dense(att, pre + ".o1")
        c = _requant(_conv(rows, ip[pre + ".conv.w"], ip[pre + ".conv.b"]), ip[pre + ".conv.m"], ip[pre + ".conv.s"])
        sc = jnp.asarray(ip[pre + ".silu.t"]).astype(jnp.int64)[c + 128]
        o2 = dense(sc, pre + ".o2")
        xo = _add_int8(o1, o2, ip[pre + ".out"])
        if sur:
            lp = params["backbone"][f"layer_{i}"]
            fh = fx * jax.lax.rsqrt(jnp.mean(fx * fx, -1, keepdims=True) + 1e-6) * \
                _wq(lp["norm"]["scale"], ip[pre + ".norm.g"], ws[pre + ".norm"][0])
            fh = _ste(fh, h, S[pre + ".norm"])
            frows = fh[:, :1] if last else fh

            def fdense(v, layer, name, s_in):
                sw = ws[name]
                b = layer["bias"] + jax.lax.stop_gradient((ip[name + ".b"] * s_in * sw).astype(f32) - layer["bias"])
                return v @ _wq(layer["kernel"], ip[name + ".w"], sw) + b
            fq = _ste(fdense(frows, lp["wq"], pre + ".q", S[pre + ".norm"]), q, S[pre + ".q"])
            sc_ = jnp.einsum("bmd,bnd->bmn", fq, fh) / math.sqrt(d)
            sc_ = jnp.where(kmask[:, None, :], sc_, -1e30)
            a = jax.nn.softmax(sc_, axis=-1)
            fatt = _ste(jnp.einsum("bmn,bnd->bmd", a, fh), att, S[pre + ".att"])
            fo1 = _ste(fdense(fatt, lp["wo"], pre + ".o1", S[pre + ".att"]), o1, S[pre + ".o1"])
            cw = _wq(lp["conv"]["kernel"][:, 0, :], ip[pre + ".conv.w"], ws[pre + ".conv"])
            fc = _dwconv(frows, cw)
            cb = lp["conv"]["bias"]
            fc = fc + cb + jax.lax.stop_gradient(
                (ip[pre + ".conv.b"] * S[pre + ".norm"] * ws[pre + ".conv"]).astype(f32) - cb)
            fc = _ste(fc, c, S[pre + ".conv"])
            fsc = _ste(jax.nn.silu(fc), sc, S[pre + ".silu"])
            fo2 = _ste(fdense(fsc, lp["wc"], pre + ".o2", S[pre + ".silu"]), o2, S[pre + ".o2"])
            l1 = jnp.exp(jnp.dot(lp["lambda_q1"], lp["lambda_k1"]))
            l2 = jnp.exp(jnp.dot(lp["lambda_q2"], lp["lambda_k2"]))
            fx = _ste(l1 * fo1 - l2 * fo2, xo, S[pre + ".out"])
        x = xo
    logits = _mm(x[:, 0], ip["head.w"], "bd,dc->bc") + _i64(ip["head.b"])
    if not sur:
        return logits, None
    hp = params["head"]
    s_logit = ws["logit"]
    hb = hp["bias"] + jax.lax.stop_gradient((ip["head.b"] * s_logit).astype(f32) - hp["bias"])
    fl = fx[:, 0] @ _wq(hp["kernel"], ip["head.w"], ws["head"][0]) + hb
    fl = fl + jax.lax.stop_gradient(logits.astype(f32) * s_logit.astype(f32) - fl)
    return logits, fl


def _np_ip(ip):
    return {k: np.asarray(v) for k, v in ip.items()}


class IntModel:
    """The integer forward of a lowered graph, jitted; logits of token-id lists."""

    def __init__(self, g, layers: int):
        import jax
        self.ip = _np_ip(ip_from_graph(g))
        self.layers = layers
        with jax.enable_x64(True):
            self._fn = jax.jit(lambda ip, x: forward(ip, x, layers)[0])

    def logits(self, seqs, batch_size: int = 64) -> np.ndarray:
        import jax
        out = np.zeros((len(seqs), self.ip["head.b"].shape[0]), np.int64)
        order = np.argsort([len(s) for s in seqs], kind="stable")
        with jax.enable_x64(True):
            for i in range(0, len(order), batch_size):
                idx = order[i:i + batch_size]
                x = _pad_batch([seqs[j] for j in idx], batch_size)
                out[idx] = np.asarray(self._fn(self.ip, x))[:len(idx)]
        return out


def _bucket(n: int) -> int:
    return max(16, -(-n // 16) * 16)


def _pad_batch(seqs, batch_size: int) -> np.ndarray:
    """[batch_size, T] right-padded with [PAD]; missing rows get a lone [CLS] (never all padding)."""
    T = _bucket(max(len(s) for s in seqs))
    x = np.zeros((batch_size, T), np.int32)
    x[:, 0] = 2
    for r, s in enumerate(seqs):
        x[r, :len(s)] = s
    return x


# ----------------------------------------------------------------------------- training

class QAT:
    """Holds the fixed scales/constants and the jitted step and eval functions."""

    def __init__(self, config: dict, S: dict, max_len: int, lr: float = 2e-5, weight_decay: float = 0.0):
        import jax
        import jax.numpy as jnp
        import optax
        self.config, self.S, self.max_len = config, dict(S), int(max_len)
        self.consts = constants(S, config)
        layers = config["layers"]
        self.tx = optax.chain(optax.clip_by_global_norm(1.0), optax.adamw(lr, weight_decay=weight_decay))

        def loss_fn(p, x, y, w):
            ip, ws = ip_from_float(p, self.S, self.consts, config, self.max_len)
            _, fl = forward(ip, x, layers, params=p, S=self.S, ws=ws)
            per = optax.softmax_cross_entropy_with_integer_labels(fl, y)
            return (per * w).sum() / jnp.maximum(w.sum(), 1.0)

        def step(p, s, x, y, w):
            loss, g = jax.value_and_grad(loss_fn)(p, x, y, w)
            u, s = self.tx.update(g, s, p)
            return optax.apply_updates(p, u), s, loss

        def eval_fn(p, x):
            ip, ws = ip_from_float(p, self.S, self.consts, config, self.max_len)
            return forward(ip, x, layers, params=p, S=self.S, ws=ws)

        with jax.enable_x64(True):
            self._step = jax.jit(step)
            self._eval = jax.jit(eval_fn)
            self._ip = jax.jit(lambda p: ip_from_float(p, self.S, self.consts, config, self.max_len)[0])

    def init(self, params):
        import jax
        import jax.numpy as jnp
        params = jax.tree_util.tree_map(lambda a: jnp.asarray(a, jnp.float32), params)
        with jax.enable_x64(True):
            return params, self.tx.init(params)

    def step(self, params, opt_state, x, y, w):
        import jax
        with jax.enable_x64(True):
            return self._step(params, opt_state, x, np.asarray(y, np.int32), np.asarray(w, np.float32))

    def loss(self, params, x, y, w):
        """The training loss (cross-entropy on the QAT forward's logits), without a gradient."""
        _, f = self.eval_logits(params, x)
        f = f.astype(np.float64)
        lse = np.log(np.exp(f - f.max(-1, keepdims=True)).sum(-1)) + f.max(-1)
        per = lse - f[np.arange(len(y)), np.asarray(y)]
        w = np.asarray(w, np.float64)
        return float((per * w).sum() / max(w.sum(), 1.0))

    def eval_logits(self, params, x):
        """(int logits, surrogate float logits) of the QAT forward on a padded batch."""
        import jax
        with jax.enable_x64(True):
            q, f = self._eval(params, x)
        return np.asarray(q), np.asarray(f)

    def int_params(self, params) -> dict:
        import jax
        with jax.enable_x64(True):
            return _np_ip(self._ip(params))

    def lower(self, params, label_names, *, name: str, task: str | None, tokenizer_json: str, n_calib: int = 0):
        """onnx.ModelProto of the float params lowered with the QAT scales."""
        import jax
        p = jax.device_get(params)
        return QE.quantize_params(p, self.config, label_names, [], name=name, task=task,
                                  tokenizer_json=tokenizer_json, max_len=self.max_len, scales=self.S,
                                  quantization="qat")


def qat_run(run_dir, out, epochs: int = 2, lr: float = 5e-5, batch_size: int = 32, calib: int = 256,
            limit: int | None = None, name: str | None = None, data_dir=None, seed: int = 0,
            on_log: Callable[[dict], None] | None = None) -> dict:
    """QAT of an EmbBERT float run -> EmbBERT-Q ONNX at `out` (the best epoch on validation,
    measured with the integer forward of the lowered graph; epoch 0 is PTQ)."""
    from tinynlp_data import get_task, load_split

    from tinylm import graph as G
    from tinylm.graph import reference
    from tinylm.train.finetune import score
    from tinylm.tokenizer import encode_examples
    from tinylm.train.floatrun import FloatRun
    from tinylm.tokenizer import encode
    run = FloatRun(run_dir)
    if run.arch != "embbert":
        raise ValueError(f"{run_dir}: arch {run.arch!r} is not embbert")
    task = get_task(run.task)
    if task.problem == "regression":
        raise ValueError(f"{run.task}: QAT supports classification tasks only")
    t0 = time.time()
    train = load_split(run.task, "train", data_dir)
    val = load_split(run.task, "validation", data_dir)
    # the same calibration sequences as `tinylm quantize` without --qat
    rng = np.random.default_rng(0)
    pick = rng.choice(len(train), size=min(calib, len(train)), replace=False)
    calib_seqs = [encode(run.tokenizer, train[i].text, train[i].text_b, run.max_len) for i in pick]
    if limit is not None and len(train) > limit:
        sel = np.random.default_rng(seed).permutation(len(train))[:limit]
        train = [train[i] for i in sorted(sel)]
    tr_ids, va_ids = encode_examples(run.tokenizer, train, run.max_len), encode_examples(run.tokenizer, val, run.max_len)
    tr_y = np.asarray([e.label for e in train], np.int32)
    va_y = [e.label for e in val]
    S = scales_from_calibration(run.params, run.config, calib_seqs)
    qat = QAT(run.config, S, run.max_len, lr=lr)
    params, opt_state = qat.init(run.params)
    tok_json = run.tokenizer.to_str()
    name = name or f"{run.task}-{run.meta.get('config_name', 'embbert')}-qat"
    layers = run.config["layers"]

    def lower(p):
        return qat.lower(p, run.label_names, name=name, task=run.task, tokenizer_json=tok_json)

    def val_score(model):
        return float(score(task, IntModel(model, layers).logits(va_ids).astype(np.float64), va_y)), model

    steps = -(-len(tr_ids) // batch_size)
    best, best_model = val_score(lower(params))
    best_epoch, history = 0, [dict(epoch=0, val=best, note="PTQ (the float weights, QAT scales)")]
    if on_log:
        on_log(dict(total=steps * epochs, done=0, info=f"epoch 0 (PTQ): validation {best:.4f}"))
    order_rng = np.random.default_rng(seed)
    done = 0
    for epoch in range(1, epochs + 1):
        order = order_rng.permutation(len(tr_ids))
        losses = []
        for i in range(0, len(order), batch_size):
            idx = order[i:i + batch_size]
            x = _pad_batch([tr_ids[j] for j in idx], batch_size)
            y = np.zeros(batch_size, np.int32)
            y[:len(idx)] = tr_y[idx]
            w = np.zeros(batch_size, np.float32)
            w[:len(idx)] = 1.0
            params, opt_state, loss = qat.step(params, opt_state, x, y, w)
            done += 1
            if done % 10 == 0:
                losses.append(float(loss))
                if on_log:
                    on_log(dict(total=steps * epochs, done=done, info=f"epoch {epoch} loss {losses[-1]:.3f}"))
        s, model = val_score(lower(params))
        history.append(dict(epoch=epoch, val=s, train_loss=float(np.mean(losses)) if losses else None,
                            elapsed_s=round(time.time() - t0, 1)))
        if s > best:
            best, best_model, best_epoch = s, model, epoch
        if on_log:
            on_log(dict(total=steps * epochs, done=done, info=f"epoch {epoch}: validation {s:.4f} (best {best:.4f})"))
    # the exported graph must be what was measured: spot-check it against the reference
    G.save(best_model, out)
    g = G.load(out)
    check = va_ids[:16]
    for ids, row in zip(check, IntModel(g, layers).logits(check)):
        want = reference.run(g, ids)
        if want.tolist() != row.tolist():
            Path(out).unlink()
            raise RuntimeError(f"QAT integer forward {row.tolist()} != reference {want.tolist()} on {ids}")
    return dict(out=str(out), score=best, best_epoch=best_epoch, history=history, metric=task.metric,
                wall_s=round(time.time() - t0, 1), n_train=len(train), n_val=len(val))

