"""EmbBERT in Flax, as /work/shared/docs/embbert.md (../shared/docs/embbert.md) describes it.

    x0[t] = E_tok[id_t] W_te + E_pos[t] W_pe + E_seg[s_t]           (Nano Embedder)
    per layer (pre-norm, no identity residual):
      h  = RMSNorm(x)
      O1 = softmax(mask((h Wq + bq) h^T / sqrt(d))) h Wo + bo     (Efficient Attention: K = V = h)
      O2 = SiLU(causal depthwise conv_k(h)) Wc + bc
      x' = exp(<lq1, lk1>) O1 - exp(<lq2, lk2>) O2
    no final norm; classifier Linear(d, C) on position 0.

Configs are plain dicts (data): CONFIGS[name]. `type` selects the architecture: "embbert", or
"bert" for the paper's 2 MB BERT baseline (post-norm BERT with GELU FFN).
Padding is id 0; segments are derived from the ids: 1 up to and including the first [SEP],
2 after it, 0 for padding.
"""
from __future__ import annotations

import copy
import math

import jax
import jax.numpy as jnp
import flax.linen as nn

from tinylm.models.binary import BinaryDense, BinaryProb, sign_ste
from tinylm.models.segments import segments_from_ids  # noqa: F401  (re-exported)
from tinylm.tokenizer import PAD

# `init` (EmbBERT only): "delta" (new runs) or absent / "flax" (the committed artefacts). It only
# changes the initial values, never the parameter tree, so any checkpoint loads under either.
CONFIGS: dict[str, dict] = {
    # the authors' default: 357,248 backbone parameters
    "embbert": dict(type="embbert", vocab_size=8192, max_len=256, d=128, r=16, layers=4,
                    kernel=32, dropout=0.1, residual=False, init="delta"),
    # smaller variants (our choice of sizes, see docs/embbert.md)
    "embbert-tiny": dict(type="embbert", vocab_size=8192, max_len=256, d=96, r=16, layers=3,
                         kernel=32, dropout=0.1, residual=False, init="delta"),
    "embbert-nano": dict(type="embbert", vocab_size=8192, max_len=256, d=64, r=8, layers=2,
                         kernel=16, dropout=0.1, residual=False, init="delta"),
    # the paper's 2 MB baseline: vocab 2048, d 80, 2 layers, 2 heads, ffn x2
    "bert": dict(type="bert", vocab_size=2048, max_len=256, d=80, layers=2, heads=2, ffn=2,
                 dropout=0.1),
}


def get_config(name_or_config) -> dict:
    if isinstance(name_or_config, dict):
        return dict(name_or_config)
    try:
        return copy.deepcopy(CONFIGS[name_or_config])
    except KeyError:
        raise KeyError(f"unknown model config {name_or_config!r}; known: {', '.join(CONFIGS)}") from None


class RMSNorm(nn.Module):
    eps: float = 1e-6

    @nn.compact
    def __call__(self, x):
        g = self.param("scale", nn.initializers.ones, (x.shape[-1],))
        return x * jax.lax.rsqrt(jnp.mean(x * x, axis=-1, keepdims=True) + self.eps) * g


class NanoEmbedder(nn.Module):
    vocab_size: int
    max_len: int
    d: int
    r: int
    init_std: float = 0.02
    binary: bool = False        # token rows sign(E - mean E) (r bits a token), W_te binary

    @nn.compact
    def __call__(self, ids):
        T = ids.shape[1]
        if T > self.max_len:
            raise ValueError(f"sequence length {T} exceeds the model's max_len {self.max_len}")
        emb = nn.Embed(self.vocab_size, self.r, embedding_init=nn.initializers.normal(self.init_std), name="tok")
        e_tok = emb(ids)
        if self.binary:     # the scales of both factors fold into one Requantize of the popcount dot
            e_tok = sign_ste(e_tok - jnp.mean(emb.embedding))
        e_tok = jnp.where((ids == PAD)[..., None], 0.0, e_tok)          # row 0 = padding
        pos = self.param("pos", nn.initializers.normal(self.init_std), (self.max_len, self.r))[:T]
        if self.binary:
            x = BinaryDense(self.d, use_bias=False, binarize_input=False, name="w_te")(e_tok)
        else:
            x = nn.Dense(self.d, use_bias=False, name="w_te")(e_tok)
        x = x + nn.Dense(self.d, use_bias=False, name="w_pe")(pos)[None]
        x = x + nn.Embed(3, self.d, embedding_init=nn.initializers.normal(0.02),
                         name="seg")(segments_from_ids(ids))
        return x


INITS = ("flax", "delta")


def _delta_conv_init(key, shape, dtype=jnp.float32):
    """[k, 1, d]: 1 on the current-token tap (k-1) plus N(0, 0.02^2), so the conv branch starts
    as a near-identity of h instead of a random mix of the last k positions."""
    k = shape[0]
    return (jnp.zeros(shape, dtype).at[k - 1].set(1.0)
            + 0.02 * jax.random.normal(key, shape, dtype))


def _minus_identity_init(key, shape, dtype=jnp.float32):
    """Wc = -I + N(0, 0.02^2): with x' = l1 O1 - l2 O2, -l2 O2 then starts as +SiLU(h), a
    position-preserving path (the stack has no residual)."""
    return -jnp.eye(shape[0], shape[1], dtype=dtype) + 0.02 * jax.random.normal(key, shape, dtype)


def _scaled_lecun(scale: float):
    base = nn.initializers.lecun_normal()
    return lambda key, shape, dtype=jnp.float32: scale * base(key, shape, dtype)


class CausalDepthwiseConv(nn.Module):
    """Causal depthwise Conv1d, C[t] = sum_j w[j] * h[t-k+1+j] + b, with nn.Conv's parameters
    (kernel [k, 1, d], bias [d]) and initial values. impl "toeplitz" computes it as one banded
    [T, T, d] einsum: on CPU XLA's grouped convolution (feature_group_count = d) is far slower
    than a batched matmul, though the banded form does T/k times the multiplies. impl "grouped"
    is flax's nn.Conv, kept for the equivalence test and the throughput comparison."""
    features: int
    kernel: int
    impl: str = "toeplitz"
    kernel_init: object = nn.initializers.lecun_normal()

    @nn.compact
    def __call__(self, h):
        w = self.param("kernel", self.kernel_init, (self.kernel, 1, self.features))
        b = self.param("bias", nn.initializers.zeros, (self.features,))
        k = self.kernel
        if self.impl == "grouped":                       # what nn.Conv(..., feature_group_count=d) runs
            return jax.lax.conv_general_dilated(h, w, (1,), [(k - 1, 0)],
                                                dimension_numbers=("NWC", "WIO", "NWC"),
                                                feature_group_count=self.features) + b
        if self.impl != "toeplitz":
            raise ValueError(f"unknown conv_impl {self.impl!r}; known: toeplitz, grouped")
        t = jnp.arange(h.shape[1])
        j = t[None, :] - t[:, None] + k - 1              # [t, s]: the tap multiplying h[s] in C[t]
        band = jnp.where(((j >= 0) & (j < k))[..., None], w[jnp.clip(j, 0, k - 1), 0], 0.0)
        return jnp.einsum("tsd,bsd->btd", band, h) + b


class EmbBERTLayer(nn.Module):
    d: int
    kernel: int
    dropout: float = 0.0
    residual: bool = False
    init: str = "flax"
    conv_impl: str = "toeplitz"
    binary: bool = False          # BiPFT-style 1-bit Wq, Wo, Wc and their inputs (models/binary.py)
    # attention probabilities in {0, alpha_p} (BiPFT's elastic binarization; a training-time
    # ablation: the integer graph does not lower it, docs/binary.md)
    binary_attention: bool = False

    @nn.compact
    def __call__(self, x, mask, deterministic=True):
        # mask: [B, T] bool, True for real tokens
        d = self.d
        h = RMSNorm(name="norm")(x)
        lam_init = nn.initializers.normal(0.1)
        lq1, lk1, lq2, lk2 = (self.param(n, lam_init, (d,)) for n in ("lambda_q1", "lambda_k1",
                                                                     "lambda_q2", "lambda_k2"))
        lam1, lam2 = jnp.exp(jnp.dot(lq1, lk1)), jnp.exp(jnp.dot(lq2, lk2))
        # Efficient Attention: keys = values = h, projections only for the query and the output
        delta = self.init == "delta"
        dense = BinaryDense if self.binary else nn.Dense
        q = dense(d, name="wq")(h)
        s = jnp.einsum("btd,bsd->bts", q, h) / math.sqrt(d)
        s = jnp.where(mask[:, None, :], s, -1e30)
        a = jax.nn.softmax(s, axis=-1)
        a = jnp.where(mask[:, :, None], a, 0.0)                        # padded query rows give 0
        if self.binary_attention:
            a = BinaryProb(name="prob_sign")(a, (mask[:, :, None] & mask[:, None, :]).astype(a.dtype))
        # delta init: Wo x 0.1 so the attention average (the same vector at every position at
        # init) does not swamp the position-preserving conv path
        o1 = dense(d, name="wo", kernel_init=_scaled_lecun(0.1) if delta else
                      nn.initializers.lecun_normal())(jnp.einsum("bts,bsd->btd", a, h))
        # causal depthwise convolution over time: C[t] uses h[t-k+1 .. t]
        c = CausalDepthwiseConv(d, self.kernel, self.conv_impl, name="conv",
                                kernel_init=_delta_conv_init if delta else
                                nn.initializers.lecun_normal())(h)
        o2 = dense(d, name="wc", kernel_init=_minus_identity_init if delta else
                      nn.initializers.lecun_normal())(nn.silu(c))
        out = lam1 * o1 - lam2 * o2
        if self.residual:
            out = out + x
        return nn.Dropout(self.dropout)(out, deterministic=deterministic)


class EmbBERT(nn.Module):
    """Backbone: ids [B, T] -> hidden states [B, T, d]."""
    config: dict

    @nn.compact
    def __call__(self, ids, deterministic=True):
        c = self.config
        ids = ids.astype(jnp.int32)
        mask = ids != PAD
        x = NanoEmbedder(c["vocab_size"], c["max_len"], c["d"], c["r"], c.get("emb_init", 0.02),
                         bool(c.get("binary_embedding", False)), name="embedder")(ids)
        init = c.get("init", "flax")
        if init not in INITS:
            raise ValueError(f"unknown init {init!r}; known: {', '.join(INITS)}")
        for i in range(c["layers"]):
            x = EmbBERTLayer(c["d"], c["kernel"], c.get("dropout", 0.0), c.get("residual", False),
                             init, c.get("conv_impl", "toeplitz"), bool(c.get("binary", False)),
                             bool(c.get("binary_attention", False)),
                             name=f"layer_{i}")(x, mask, deterministic)
        return x


def backbone_from_config(config: dict) -> nn.Module:
    kind = config.get("type", "embbert")
    if kind == "embbert":
        return EmbBERT(config, name="backbone")
    if kind == "bert":
        from tinylm.models.bert import Bert
        return Bert(config, name="backbone")
    raise ValueError(f"unknown model type {kind!r}; known: embbert, bert")


class Classifier(nn.Module):
    """Backbone + Linear(d, C) on position 0 (no pooler, no tanh)."""
    config: dict
    num_labels: int

    @nn.compact
    def __call__(self, ids, deterministic=True):
        h = backbone_from_config(self.config)(ids, deterministic)
        return nn.Dense(self.num_labels, name="head")(h[:, 0])


class PretrainModel(nn.Module):
    """Backbone + untied MLM head Linear(d, V) (+ NSP head Linear(d, 2) on position 0).

    `mlm_positions` [B, P] picks the positions whose vocabulary logits are computed (the
    masked ones), so the d x V head is evaluated on ~15% of the tokens only."""
    config: dict

    @nn.compact
    def __call__(self, ids, mlm_positions, deterministic=True):
        h = backbone_from_config(self.config)(ids, deterministic)
        hm = jnp.take_along_axis(h, mlm_positions[..., None], axis=1)
        mlm = nn.Dense(self.config["vocab_size"], name="mlm")(hm)
        nsp = nn.Dense(2, name="nsp")(h[:, 0])
        return mlm, nsp


def classifier_from_config(config: dict, num_labels: int) -> nn.Module:
    """The floatrun contract: a Module whose __call__(ids [B, T] int32, deterministic=True)
    returns logits [B, C]."""
    return Classifier(dict(config), int(num_labels))


def count_params(tree) -> int:
    return int(sum(x.size for x in jax.tree_util.tree_leaves(tree)))


def init_backbone_params(config: dict, seed: int = 0, T: int = 8):
    import numpy as np
    return backbone_from_config(config).init(jax.random.PRNGKey(seed), np.zeros((1, T), np.int32))["params"]


def backbone_param_shapes(config: dict):
    """Parameter shapes (jax.ShapeDtypeStruct) without computing anything."""
    import numpy as np
    m = backbone_from_config(config)
    return jax.eval_shape(lambda: m.init(jax.random.PRNGKey(0), np.zeros((1, 8), np.int32)))["params"]


class CheckpointMismatch(ValueError):
    pass


def check_same_shapes(template, tree, where: str) -> None:
    """Raises CheckpointMismatch naming the first differing parameter (a checkpoint of another
    config). flax.serialization.from_bytes alone does not compare shapes."""
    from flax.traverse_util import flatten_dict
    a = flatten_dict(jax.tree_util.tree_map(lambda x: tuple(x.shape), template, is_leaf=_is_arr),
                     sep="/", is_leaf=lambda k, v: isinstance(v, tuple))
    b = flatten_dict(jax.tree_util.tree_map(lambda x: tuple(x.shape), tree, is_leaf=_is_arr),
                     sep="/", is_leaf=lambda k, v: isinstance(v, tuple))
    if set(a) != set(b):
        diff = sorted(set(a) ^ set(b))[:3]
        raise CheckpointMismatch(f"{where}: parameters differ from the config's ({', '.join(diff)} ...): "
                                 "a checkpoint of another config?")
    for k in a:
        if a[k] != b[k]:
            raise CheckpointMismatch(f"{where}: parameter {k} has shape {b[k]}, the config expects "
                                     f"{a[k]}: a checkpoint of another config?")


def _is_arr(x):
    return hasattr(x, "shape")


def load_params(template, data: bytes, where: str):
    """flax msgpack bytes -> pytree shaped like `template`, with a clear error on mismatch."""
    from flax import serialization
    try:
        raw = serialization.msgpack_restore(data)
    except Exception as e:
        raise CheckpointMismatch(f"{where}: not a msgpack checkpoint ({e})") from None
    check_same_shapes(template, raw, where)
    return serialization.from_state_dict(template, raw)
