"""The paper's 2 MB BERT baseline (post-norm BERT, GELU FFN, learned absolute positions and
segments), and its BiPFT-style binary version (../shared/docs/bipft.md: BiPFT's own backbone).

binary=True: 1-bit weights and inputs in Q, K, V, O, FFN-in and FFN-out (BinaryDense: a_w
sign(W - mean W), alpha sign(x + beta)); Q, K, V binarized after their projection (alpha sign);
attention probabilities in {0, alpha_p} after a full-precision softmax (elastic binarization).
low_rank=True adds BiPFT-B's rank-1 estimators of the binarization residual: five Linear(d -> 1)
of the layer's full-precision input X, shared by the heads,
    S = Q^K^T + q_m k_p^T + q_p k_m^T + q_p k_p^T,   context = P^ V^ + P^ v_p
(without them: BiPFT-A). Full precision as the authors keep it: biases, LayerNorms, residual
adds, softmax, GELU, the 1/sqrt(d_head) scale, the mask, the embeddings and the classifier.
The parameter names are the float model's, so a float run initialises a binary one.

The binary bert is a training model only: the integer graph and the C kernels lower the EmbBERT
family (the bert config has no integer lowering at 8 bits either).
"""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import flax.linen as nn

from tinylm.models.binary import BinaryAct, BinaryDense, BinaryProb
from tinylm.models.segments import segments_from_ids
from tinylm.tokenizer import PAD


class BertLayer(nn.Module):
    d: int
    heads: int
    ffn: int
    dropout: float = 0.0
    binary: bool = False
    low_rank: bool = False

    @nn.compact
    def __call__(self, x, mask, deterministic=True):
        B, T, d = x.shape
        H = self.heads
        dense = BinaryDense if self.binary else nn.Dense
        drop = nn.Dropout(self.dropout)

        def heads(name):
            t = dense(d, name=name)(x).reshape(B, T, H, d // H)
            return BinaryAct(name=f"{name}_sign")(t) if self.binary else t

        q, k, v = heads("query"), heads("key"), heads("value")
        s = jnp.einsum("bthe,bshe->bhts", q, k)
        if self.low_rank:
            qm, km, qp, kp, vp = (nn.Dense(1, name=n)(x)[..., 0] for n in ("q_m", "k_m", "q_p", "k_p", "v_p"))
            s = s + (qm[:, :, None] * kp[:, None, :] + qp[:, :, None] * km[:, None, :]
                     + qp[:, :, None] * kp[:, None, :])[:, None]
        s = jnp.where(mask[:, None, None, :], s / math.sqrt(d // H), -1e30)
        p = jax.nn.softmax(s, axis=-1)
        if self.binary:
            valid = (mask[:, None, :, None] & mask[:, None, None, :]).astype(p.dtype)
            p = BinaryProb(name="prob_sign")(p, valid)
        p = drop(p, deterministic=deterministic)
        ctx = jnp.einsum("bhts,bshe->bthe", p, v)
        if self.low_rank:
            ctx = ctx + jnp.einsum("bhts,bs->bth", p, vp)[..., None]
        att = dense(d, name="out")(ctx.reshape(B, T, d))
        x = nn.LayerNorm(name="ln1")(x + drop(att, deterministic=deterministic))
        f = dense(d * self.ffn, name="ff1")(x)
        f = dense(d, name="ff2")(nn.gelu(f))
        return nn.LayerNorm(name="ln2")(x + drop(f, deterministic=deterministic))


class Bert(nn.Module):
    """ids [B, T] -> hidden states [B, T, d]."""
    config: dict

    @nn.compact
    def __call__(self, ids, deterministic=True):
        c = self.config
        ids = ids.astype(jnp.int32)
        T = ids.shape[1]
        if T > c["max_len"]:
            raise ValueError(f"input of {T} tokens exceeds max_len {c['max_len']}")
        mask = ids != PAD
        init = nn.initializers.normal(0.02)
        x = nn.Embed(c["vocab_size"], c["d"], embedding_init=init, name="tok")(ids)
        x = x + self.param("pos", init, (c["max_len"], c["d"]))[:T][None]
        x = x + nn.Embed(3, c["d"], embedding_init=init, name="seg")(segments_from_ids(ids))
        x = nn.LayerNorm(name="ln_emb")(x)
        x = nn.Dropout(c.get("dropout", 0.0))(x, deterministic=deterministic)
        for i in range(c["layers"]):
            x = BertLayer(c["d"], c["heads"], c["ffn"], c.get("dropout", 0.0), bool(c.get("binary", False)),
                          bool(c.get("low_rank", False)), name=f"layer_{i}")(x, mask, deterministic)
        return x
