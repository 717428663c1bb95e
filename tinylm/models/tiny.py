"""The spine's small transformer classifier, in one file (nanoGPT style).

token + position embedding -> N x [RMSNorm -> single-head attention -> +x ;
RMSNorm -> FFN with GELU -> +x] -> RMSNorm -> Linear on position 0.

Every op has an integer twin in tinylm/graph/ops.py; tinylm/quant/tiny.py lowers it.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import flax.linen as nn
import jax
import jax.numpy as jnp

CONFIGS = {
    # vocab, max_len, d, ffn, layers
    "tiny": dict(vocab=8192, max_len=64, d=64, ffn=128, layers=2, dropout=0.1),
    "micro": dict(vocab=8192, max_len=32, d=32, ffn=64, layers=1),   # for tests: trains in seconds
}
RMS_EPS = 1e-6


@dataclass(frozen=True)
class TinyConfig:
    vocab: int = 2048
    max_len: int = 64
    d: int = 64
    ffn: int = 128
    layers: int = 2
    dropout: float = 0.0

    def to_dict(self) -> dict:
        return asdict(self)


def rmsnorm(x, gain):
    return x * jax.lax.rsqrt(jnp.mean(x * x, axis=-1, keepdims=True) + RMS_EPS) * gain


def gelu(x):
    return jax.nn.gelu(x, approximate=False)


class Block(nn.Module):
    cfg: TinyConfig

    @nn.compact
    def __call__(self, x, key_mask, taps, deterministic=True):
        d = self.cfg.d
        g1 = self.param("norm1", nn.initializers.ones, (d,))
        h = rmsnorm(x, g1)
        taps.append(h)
        q = nn.Dense(d, name="q")(h)
        k = nn.Dense(d, name="k")(h)
        v = nn.Dense(d, name="v")(h)
        taps += [q, k, v]
        s = jnp.einsum("btd,bsd->bts", q, k) / jnp.sqrt(d)
        s = jnp.where(key_mask[:, None, :], s, -1e9)
        p = jax.nn.softmax(s, axis=-1)
        av = jnp.einsum("bts,bsd->btd", p, v)
        taps.append(av)
        o = nn.Dense(d, name="o")(av)
        taps.append(o)
        o = nn.Dropout(self.cfg.dropout, deterministic=deterministic)(o)
        x = x + o
        taps.append(x)
        g2 = self.param("norm2", nn.initializers.ones, (d,))
        h2 = rmsnorm(x, g2)
        taps.append(h2)
        f = nn.Dense(self.cfg.ffn, name="ff1")(h2)
        taps.append(f)
        f = gelu(f)
        taps.append(f)
        f = nn.Dense(d, name="ff2")(f)
        taps.append(f)
        f = nn.Dropout(self.cfg.dropout, deterministic=deterministic)(f)
        x = x + f
        taps.append(x)
        return x


class TinyClassifier(nn.Module):
    cfg: TinyConfig
    num_labels: int

    @nn.compact
    def __call__(self, ids, deterministic: bool = True, return_taps: bool = False):
        """ids [B, T] int32 with 0 = [PAD] -> logits [B, C].

        return_taps=True also returns the intermediate activations, in the order the
        quantizer expects them (for calibration of activation scales)."""
        cfg = self.cfg
        T = ids.shape[1]
        tok = self.param("tok_emb", nn.initializers.normal(0.02), (cfg.vocab, cfg.d))
        pos = self.param("pos_emb", nn.initializers.normal(0.02), (cfg.max_len, cfg.d))
        taps = []
        x = tok[ids] + pos[None, :T]
        taps.append(x)
        x = nn.Dropout(cfg.dropout, deterministic=deterministic)(x)
        key_mask = ids != 0
        for i in range(cfg.layers):
            x = Block(cfg, name=f"block{i}")(x, key_mask, taps, deterministic)
        gf = self.param("norm_f", nn.initializers.ones, (cfg.d,))
        h = rmsnorm(x[:, 0], gf)
        taps.append(h)
        logits = nn.Dense(self.num_labels, name="head")(h)
        return (logits, taps) if return_taps else logits


def classifier_from_config(config: dict, num_labels: int) -> TinyClassifier:
    return TinyClassifier(TinyConfig(**config), num_labels)
