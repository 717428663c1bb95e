"""EmbBERT-Q's integer forward in JAX, and the QAT forward built around it.

1. `forward(ip, ids, layers)`: the EmbBERT-Q graph that tinylm/quant/embbert.py lowers, run on a
   batch of integer tensors by the very functions of the spec (tinylm/graph/ops.py, with
   xp = jax.numpy): the reference interpreter and this forward share one definition of every
   op. `ip` are the integer parameters: `ip_from_graph` reads them from a lowered graph,
   `ip_from_float` derives them from float weights and fixed activation scales with the
   lowering's own fixed-point math (tinylm/quant/qmath.py, also with xp = jax.numpy). Its int32
   logits equal `tinylm.graph.reference.run` on every input (tests/test_qat_embbert.py).
   It runs under `jax.enable_x64` (the requantize product x * m needs 62 bits) and with float32
   matmuls at full precision (ops.matmul_integer computes exact integer products in float32).
   Padding: sequences are right-padded with [PAD] = 0. The graph sees only the n real tokens;
   here padded keys are masked out of the attention softmax (ops' `mask`), the causal
   convolution never looks ahead, and every other op is row-local, so the real rows are
   identical to the graph's.

2. `forward(..., params=, S=, ws=)`: beside every integer tensor q a float surrogate f of the
   float EmbBERT on fake-quantized weights. Each activation is
       f = clip(f_raw, -128 s, 127 s) + stop_gradient(q * s - clip(...))
   so its VALUE is the integer tensor's (q * s) and its GRADIENT is the straight-through
   estimate of the float op (weights: w + stop_gradient(w_q * s_w - w); clipped activations pass
   no gradient). The loss therefore sees exactly the integer logits (times their scale) while
   gradients reach the float weights, the norm gains and the lambda vectors. Activation scales
   stay fixed at the PTQ calibration (absmax on <= 256 training examples), so the SiLU LUTs
   and the attention multipliers are constants; weight scales follow the weights.
"""
from __future__ import annotations

import contextlib
import math

import numpy as np

from tinylm.graph import ops
from tinylm.quant import embbert as QE
from tinylm.quant import qmath
from tinylm.quant.lowering import pack_sign_table, pack_signs

PAD, SEP = 0, 4


def exact_jax():
    """The JAX settings the integer forward needs: 64-bit integers, full-precision float32 dots."""
    import jax
    stack = contextlib.ExitStack()
    stack.enter_context(jax.enable_x64(True))
    stack.enter_context(jax.default_matmul_precision("highest"))
    return stack


# ----------------------------------------------------------------------------- integer params

def _dense_names(pre: str) -> list[str]:
    return [pre + ".q", pre + ".o1", pre + ".o2"]


def ip_from_graph(g) -> dict:
    """Integer parameters of an EmbBERT-Q graph (tinylm.graph.Graph or onnx.ModelProto)."""
    weights, nodes = _graph_parts(g)
    W = {k: np.asarray(v) for k, v in weights.items()}
    meta_layers = sum(1 for n in nodes if n.endswith(".norm") and n.startswith("layer"))
    ip = {"tok.m": W["embed.tok.m"], "tok.s": W["embed.tok.s"],
          "pos": W["embed.pos_table"], "w_pe": W["embed.w_pe"], "pos.m": W["embed.pos.m"], "pos.s": W["embed.pos.s"],
          "seg": W["embed.seg_table"], "exp_lut": W["exp_lut"], "head.w": W["head.w"], "head.b": W["head.b"]}
    if "embed.tok_bits" in W:           # binary token embedding
        ip["tok_bits"], ip["w_te_bits"] = W["embed.tok_bits"], W["embed.w_te_bits"]
    else:
        ip["tok"], ip["w_te"] = W["embed.tok_table"], W["embed.w_te"]
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
            ip[n + ".b"] = W[n + ".b"]
            for part in (".w", ".wb", ".beta"):           # int8 (.w) or binary (.wb, .beta) weights
                if n + part in W:
                    ip[n + part] = W[n + part]
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


def ip_from_float(params, S: dict, consts: dict, config: dict, max_len: int):
    """(integer params, weight scales) from float params, traceable under jit + enable_x64:
    quant/embbert.quantize_params's steps, with qmath on jax.numpy."""
    import jax.numpy as jnp
    qw = lambda w, per_channel=True: qmath.quantize_weight(w, per_channel, xp=jnp)  # noqa: E731
    qm = lambda real: qmath.quantize_multipliers(real, xp=jnp)  # noqa: E731
    qadd = lambda a, b, o: qmath.add_multipliers(a, b, o, xp=jnp)  # noqa: E731
    qb = lambda b, scale: qmath.quantize_bias(b, scale, xp=jnp)  # noqa: E731
    f64 = lambda a: jnp.asarray(a).astype(jnp.float64)  # noqa: E731
    bb, em = params["backbone"], params["backbone"]["embedder"]
    ip, ws = {}, {}
    if config.get("binary_embedding", False):     # the lowering's steps (quant/embbert.py), on jax.numpy
        be = QE.binary_embedding_parts(em, jnp)
        ip["tok_bits"], ip["w_te_bits"] = pack_sign_table(be["tok"], jnp), pack_signs(be["bits"].T, jnp)
        ws["w_te"] = be["a_w"]
        ip["tok.m"], ip["tok.s"] = qm(ws["w_te"] / S["embed.tok"])
    else:
        tok = f64(em["tok"]["embedding"]).at[0].set(0.0)
        ip["tok"], ws["tok"] = qw(tok, per_channel=False)
        ip["w_te"], ws["w_te"] = qw(em["w_te"]["kernel"])
        ip["tok.m"], ip["tok.s"] = qm(ws["tok"][0] * ws["w_te"] / S["embed.tok"])
    ip["pos"], ws["pos"] = qw(f64(em["pos"])[:max_len], per_channel=False)
    ip["w_pe"], ws["w_pe"] = qw(em["w_pe"]["kernel"])
    ip["seg"], ws["seg"] = qw(em["seg"]["embedding"], per_channel=False)
    ip["pos.m"], ip["pos.s"] = qm(ws["pos"][0] * ws["w_pe"] / S["embed.pos"])
    ip["tokpos"] = qadd(jnp.float64(S["embed.tok"]), jnp.float64(S["embed.pos"]),
                                     jnp.float64(S["embed.tokpos"]))
    ip["embed"] = qadd(jnp.float64(S["embed.tokpos"]), ws["seg"][0], jnp.float64(S["embed"]))
    ip["exp_lut"] = consts["exp_lut"]
    s_x = S["embed"]

    def dense(name, layer, s_in, s_out):
        if config.get("binary", False):         # quant/lowering.binary_dense, on jax.numpy
            bp = QE.binary_parts(layer, jnp)
            ip[name + ".wb"] = pack_signs(bp["bits"].T, jnp)
            ip[name + ".beta"] = jnp.round(bp["beta"] / s_in).astype(jnp.int32)
            sw = bp["alpha"] * bp["a_w"]
            ws[name] = sw
            ip[name + ".b"] = qb(layer["bias"], sw)
            ip[name + ".m"], ip[name + ".s"] = qm(sw / s_out)
            return
        ip[name + ".w"], sw = qw(layer["kernel"])
        ws[name] = sw
        ip[name + ".b"] = qb(layer["bias"], s_in * sw)
        ip[name + ".m"], ip[name + ".s"] = qm(s_in * sw / s_out)

    for i in range(config["layers"]):
        lp, pre = bb[f"layer_{i}"], f"layer{i}"
        g, sg = qw(f64(lp["norm"]["scale"]).reshape(-1, 1), per_channel=False)
        ip[pre + ".norm.g"], ws[pre + ".norm"] = g.reshape(-1), sg
        s_h = S[pre + ".norm"]
        m, s = qm(sg[0] / 2 ** 14 / s_h)
        ip[pre + ".norm.ms"] = jnp.stack([m, s])
        dense(pre + ".q", lp["wq"], s_h, S[pre + ".q"])
        ip[pre + ".att"] = consts[pre + ".att"]
        dense(pre + ".o1", lp["wo"], S[pre + ".att"], S[pre + ".o1"])
        ip[pre + ".conv.w"], sw = qw(lp["conv"]["kernel"][:, 0, :])
        ws[pre + ".conv"] = sw
        ip[pre + ".conv.b"] = qb(lp["conv"]["bias"], s_h * sw)
        ip[pre + ".conv.m"], ip[pre + ".conv.s"] = qm(s_h * sw / S[pre + ".conv"])
        ip[pre + ".silu.t"] = consts[pre + ".silu.t"]
        dense(pre + ".o2", lp["wc"], S[pre + ".silu"], S[pre + ".o2"])
        l1, l2 = _jlambdas(lp)
        ip[pre + ".out"] = qadd(l1 * S[pre + ".o1"], -l2 * S[pre + ".o2"], jnp.float64(S[pre + ".out"]))
        s_x = S[pre + ".out"]
    ip["head.w"], sw = qw(params["head"]["kernel"], per_channel=False)
    ws["head"] = sw
    ip["head.b"] = qb(params["head"]["bias"], s_x * sw)
    ws["logit"] = s_x * sw[0]
    return ip, ws


def _jlambdas(lp):
    import jax.numpy as jnp
    f = lambda k: jnp.asarray(lp[k]).astype(jnp.float64)  # noqa: E731
    return jnp.exp(jnp.dot(f("lambda_q1"), f("lambda_k1"))), jnp.exp(jnp.dot(f("lambda_q2"), f("lambda_k2")))


def _dwconv(x, w):
    """Causal depthwise convolution in float (the surrogate): x [B, T, d], w [k, d] (w[k-1] on
    the current row)."""
    import jax
    k, d = w.shape
    return jax.lax.conv_general_dilated(x, w[:, None, :], (1,), [(k - 1, 0)], dimension_numbers=("NWC", "WIO", "NWC"),
                                        feature_group_count=d, precision=jax.lax.Precision.HIGHEST)


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
    from tinylm.models.binary import binary_activation, binary_weight, sign_ste
    ids = jnp.asarray(ids).astype(jnp.int32)
    B, T = ids.shape
    kmask = ids != PAD
    sur = params is not None
    f32 = jnp.float32
    xp = jnp

    def requant(acc, name):
        return ops.requantize(acc, ip[name + ".m"], ip[name + ".s"], xp)

    def dense(v, name):                       # MatMulInteger (or the binary pair) + Add + Requantize
        if name + ".wb" in ip:
            acc = ops.binary_matmul_int(ops.binarize_int(v, ip[name + ".beta"], xp), ip[name + ".wb"], v.shape[-1], xp)
        else:
            acc = ops.matmul_integer(v, ip[name + ".w"], xp)
        return requant(ops.add_int32(acc, ip[name + ".b"], xp), name)

    def add8(a, b, mab):
        return ops.add_int8(a, b, mab[0], mab[1], mab[2], xp)
    # --- embedder
    if "tok_bits" in ip:
        r = ip["w_pe"].shape[0]              # the token rows have the position rows' width r
        t = requant(ops.binary_matmul_int(ops.gather(ip["tok_bits"], ids, xp), ip["w_te_bits"], r, xp), "tok")
    else:
        t = requant(ops.matmul_integer(ops.gather(ip["tok"], ids, xp), ip["w_te"], xp), "tok")
    e = requant(ops.matmul_integer(ops.gather(ip["pos"], ops.position_ids(ids, xp), xp), ip["w_pe"], xp), "pos")
    e = jnp.broadcast_to(e, t.shape)
    tp = add8(t, e, ip["tokpos"])
    seg = ops.segment_ids(ids, xp)
    x = add8(tp, ops.gather(ip["seg"], seg, xp), ip["embed"])
    if sur:
        em = params["backbone"]["embedder"]
        if "tok_bits" in ip:                 # NanoEmbedder's binary forward, straight through
            tab = jnp.asarray(em["tok"]["embedding"])
            sgn = jnp.where((ids == PAD)[..., None], 0.0, sign_ste(tab[ids] - jnp.mean(tab)))
            ft = _ste(sgn @ binary_weight(em["w_te"]["kernel"])[0], t, S["embed.tok"])
        else:
            tok_f = _wq(jnp.asarray(em["tok"]["embedding"]).at[0].set(0.0), ip["tok"], ws["tok"][0])
            ft = _ste(tok_f[ids] @ _wq(em["w_te"]["kernel"], ip["w_te"], ws["w_te"]), t, S["embed.tok"])
        fe = _ste(_wq(em["pos"][:T], ip["pos"][:T], ws["pos"][0]) @ _wq(em["w_pe"]["kernel"], ip["w_pe"], ws["w_pe"]),
                  e[0], S["embed.pos"])
        ftp = _ste(ft + fe[None], tp, S["embed.tokpos"])
        fx = _ste(ftp + _wq(em["seg"]["embedding"], ip["seg"], ws["seg"][0])[seg], x, S["embed"])
    d = x.shape[-1]
    for i in range(layers):
        pre = f"layer{i}"
        ms = ip[pre + ".norm.ms"]
        h = ops.rmsnorm_int(x, ip[pre + ".norm.g"], ms[0], ms[1], xp)
        last = i == layers - 1
        rows = h[:, :1] if last else h          # the graph runs the last layer on row 0 only
        q = dense(rows, pre + ".q")
        am = ip[pre + ".att"]
        att = ops.attention_int(q, h, am[0], am[1], ip["exp_lut"], am[2], am[3], xp, mask=kmask)
        o1 = dense(att, pre + ".o1")
        c = requant(ops.causal_dwconv_int(rows, ip[pre + ".conv.w"], ip[pre + ".conv.b"], xp), pre + ".conv")
        sc = ops.lut(c, ip[pre + ".silu.t"], xp)
        o2 = dense(sc, pre + ".o2")
        xo = add8(o1, o2, ip[pre + ".out"])
        if sur:
            lp = params["backbone"][f"layer_{i}"]
            fh = fx * jax.lax.rsqrt(jnp.mean(fx * fx, -1, keepdims=True) + 1e-6) * \
                _wq(lp["norm"]["scale"], ip[pre + ".norm.g"], ws[pre + ".norm"][0])
            fh = _ste(fh, h, S[pre + ".norm"])
            frows = fh[:, :1] if last else fh

            def fdense(v, layer, name, s_in):
                sw = ws[name]
                if name + ".wb" in ip:           # BinaryDense's straight-through forward; bias scale sw
                    b = layer["bias"] + jax.lax.stop_gradient((ip[name + ".b"] * sw).astype(f32) - layer["bias"])
                    xb = binary_activation(v, jnp.abs(layer["alpha"]) + 1e-6, layer["beta"])
                    return xb @ binary_weight(layer["kernel"])[0] + b
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
    logits = ops.add_int32(ops.matmul_integer(x[:, 0], ip["head.w"], xp), ip["head.b"], xp)
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
        with exact_jax():
            self._fn = jax.jit(lambda ip, x: forward(ip, x, layers)[0])

    def logits(self, seqs, batch_size: int = 64) -> np.ndarray:
        out = np.zeros((len(seqs), self.ip["head.b"].shape[0]), np.int64)
        order = np.argsort([len(s) for s in seqs], kind="stable")
        with exact_jax():
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
