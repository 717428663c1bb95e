"""BiPFT-style binary layers in Flax (../shared/docs/bipft.md): 1-bit weights and activations.

    weights      W_b = a_w * sign(W - mean(W)),  a_w = mean |W - mean(W)| per output channel
    activations  x_b = alpha * sign(x + beta),   beta learnable per input channel, alpha a
                 learnable scalar (set from data before training: `init_alphas`)
    sign(0) = +1, as the spec's BinarizeInt (bit = x + beta >= 0).

Gradients are straight-through: weights pass the identity; activations pass where
|x + beta| <= alpha, and alpha gets the LSQ-style gradient sign(v) - v / alpha there (v = x + beta).
The product x_b @ W_b = alpha * a_w * (k - 2 popcount(bits_x XOR bits_w)): the integer graph
computes the popcount form (ops.binary_matmul_int) and folds alpha * a_w into its Requantize.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import flax.linen as nn


def sign(v):
    """+1 where v >= 0, else -1 (BinarizeInt's convention)."""
    return jnp.where(v >= 0, 1.0, -1.0).astype(v.dtype)


def binary_weight(w):
    """(values a_w * sign(W - mean W), a_w [n]) of a [k, n] kernel, per output channel; the
    values carry W's gradient unchanged (straight-through)."""
    mu = jnp.mean(w, axis=0, keepdims=True)
    a_w = jnp.mean(jnp.abs(w - mu), axis=0)
    wb = a_w * sign(w - mu)
    return w + jax.lax.stop_gradient(wb - w), a_w


def binary_activation(x, alpha, beta):
    """alpha * sign(x + beta) with the elastic straight-through gradient."""
    v = x + beta
    c = jnp.clip(v / alpha, -1.0, 1.0)
    return alpha * (c + jax.lax.stop_gradient(sign(v) - c))


def sign_ste(v):
    """sign(v) in value, the clipped identity (|v| <= 1) in gradient: inputs already scaled."""
    c = jnp.clip(v, -1.0, 1.0)
    return c + jax.lax.stop_gradient(sign(v) - c)


class BinaryDense(nn.Module):
    """Dense(features) on alpha * sign(x + beta) with binary weights; the same `kernel` and `bias`
    names as nn.Dense, so a float Dense's parameters initialise it (plus `alpha`, `beta`).
    binarize_input=False: x is already +-1 (the binary token embedding), no alpha, beta."""
    features: int
    kernel_init: object = nn.initializers.lecun_normal()
    use_bias: bool = True
    binarize_input: bool = True

    @nn.compact
    def __call__(self, x):
        k = x.shape[-1]
        w = self.param("kernel", self.kernel_init, (k, self.features))
        wb, _ = binary_weight(w)
        if self.binarize_input:
            alpha = self.param("alpha", nn.initializers.ones, ())
            beta = self.param("beta", nn.initializers.zeros, (k,))
            # the input's mean |.|: what init_alphas sets alpha to (the L1-best scalar for sign(x))
            self.sow("intermediates", "alpha_init", jnp.mean(jnp.abs(x + beta)))
            x = binary_activation(x, jnp.abs(alpha) + 1e-6, beta)
        y = x @ wb
        if self.use_bias:
            y = y + self.param("bias", nn.initializers.zeros, (self.features,))
        return y


class BinaryAct(nn.Module):
    """alpha * sign(x): a projection's output binarized as a whole (BiPFT's Q, K, V), alpha a
    learnable scalar set from data by init_alphas."""

    @nn.compact
    def __call__(self, x):
        alpha = self.param("alpha", nn.initializers.ones, ())
        self.sow("intermediates", "alpha_init", jnp.mean(jnp.abs(x)))
        return binary_activation(x, jnp.abs(alpha) + 1e-6, 0.0)


def elastic_binary_prob(p, alpha):
    """alpha * clip(round(p / alpha), 0, 1): attention probabilities in {0, alpha} (BiT, BiPFT).
    Gradient: p passes where 0 <= p / alpha <= 1; alpha gets round(c) - c there and 1 above (LSQ)."""
    c = jnp.clip(p / alpha, 0.0, 1.0)
    return alpha * (c + jax.lax.stop_gradient(jnp.round(c) - c))


class BinaryProb(nn.Module):
    """Elastic binarization of softmax probabilities; alpha_p starts at 4 mean(P) over the real
    entries (`valid`), the authors' init, through init_alphas."""

    @nn.compact
    def __call__(self, p, valid):
        alpha = self.param("alpha", nn.initializers.constant(0.25), ())
        self.sow("intermediates", "alpha_init",
                 4.0 * jnp.sum(p * valid) / jnp.maximum(jnp.sum(valid), 1.0))
        return elastic_binary_prob(p, jnp.abs(alpha) + 1e-6)


def init_alphas(apply_fn, params, x):
    """params with every binary module's alpha set from batch x (BiPFT initialises alpha from
    data): the mean |input| of a BinaryDense or BinaryAct, 4 mean(P) of a BinaryProb.
    apply_fn(params, x, mutable) -> (out, state)."""
    from flax.traverse_util import flatten_dict, unflatten_dict
    _, state = apply_fn(params, x)
    means = flatten_dict(state["intermediates"])
    flat = flatten_dict(params)
    for path, v in means.items():
        key = path[:-1] + ("alpha",)           # ('...', 'wq', 'alpha_init') -> ('...', 'wq', 'alpha')
        if key in flat:
            flat[key] = jnp.asarray(jnp.mean(jnp.stack([jnp.asarray(t) for t in v])), flat[key].dtype)
    return unflatten_dict(flat)
