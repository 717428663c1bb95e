"""Integer semantics of the binary (BiPFT) ops: the spec, as tinylm/graph/ops.py is for the rest
(its conventions hold here: one function per graph op, numpy or jax.numpy through ``xp``, the C
kernel named beside each reproduces it bit for bit; docs/binary.md says how they fit together)."""
from __future__ import annotations

import numpy as np

# Bit-packed tensors: 32 values per uint32 word along the last axis, K values in W = ceil(K/32)
# words; value k in word k // 32, bit k % 32 (LSB first: value 32 w + j is (word >> j) & 1). Bit 1
# means +1, bit 0 -1. The padding bits of a partial last word are written 0 by binarize_int and
# ignored by binary_matmul_int (it masks them), so no other producer has to get them right.
B32 = 32


def _i64(x, xp):
    return xp.asarray(x).astype(xp.int64)


def packed_words(k: int) -> int:
    """uint32 words of a row of k bit-packed values: ceil(k / 32)."""
    return (int(k) + B32 - 1) // B32


def popcount32(v, xp=np):
    """Number of set bits of every uint32 in v, as uint32 in 0..32 (kernel: the same SWAR).

    Shifts, ands and adds only (no multiply, so nothing wraps on either backend):
        v = v - ((v >> 1) & 0x55555555)                  2-bit sums (each <= 2)
        v = (v & 0x33333333) + ((v >> 2) & 0x33333333)   4-bit sums (<= 4)
        v = (v + (v >> 4)) & 0x0F0F0F0F                  byte sums (<= 8)
        v = v + (v >> 8); v = v + (v >> 16); v & 0x3F    all four bytes (<= 32)
    """
    u = xp.uint32
    v = xp.asarray(v).astype(u)
    v = v - ((v >> u(1)) & u(0x55555555))
    v = (v & u(0x33333333)) + ((v >> u(2)) & u(0x33333333))
    v = (v + (v >> u(4))) & u(0x0F0F0F0F)
    v = v + (v >> u(8))
    v = v + (v >> u(16))
    return v & u(0x3F)


def binarize_int(x, beta, xp=np, words=None):
    """ai.tinylm.BinarizeInt (optional attr words) -- kernel ``binarize_s8_b32``: sign bits, bit-packed.

    int8 x [..., K], int32 beta of length 1 (per tensor) or K (per channel, the last axis of x)
    -> uint32 [..., W] with W = words if given (>= ceil(K/32); the words past ceil(K/32) are 0:
    a fixed width for an axis that grows with the input, e.g. keys packed along the token axis
    for binary_mask_matmul_int), else ceil(K/32):

        bit[k] = 1 if x[k] + beta[k] >= 0 else 0          (x + beta in int64: exact)
        word[w] = sum_{j < 32, 32 w + j < K} bit[32 w + j] << j

    i.e. value k in word k // 32, bit k % 32 (LSB first); the padding bits of a partial last
    word are 0. Bit 1 stands for +1, bit 0 for -1 (BiPFT's sign(x + beta), with sign(0) = +1).
    Any int32 beta is allowed: |x + beta| < 2**32 in int64 (the C kernel clamps beta to
    [-128, 128] first, which gives the same bits for int8 x).
    """
    x = _i64(x, xp)
    k = x.shape[-1]
    words = packed_words(k) if words is None else int(words)
    if words < packed_words(k):
        raise ValueError(f"{k} values need {packed_words(k)} words, words = {words}")
    bits = (x + _i64(beta, xp).reshape(-1) >= 0).astype(xp.uint32)
    bits = xp.pad(bits, [(0, 0)] * (bits.ndim - 1) + [(0, words * B32 - k)])
    bits = bits.reshape(bits.shape[:-1] + (words, B32))
    weights = xp.asarray([1 << j for j in range(B32)], dtype=xp.uint64)
    return (bits.astype(xp.uint64) * weights).sum(axis=-1).astype(xp.uint32)


def binary_tail_mask(k: int, xp=np):
    """uint32 [ceil(k/32)]: all ones, except the real bits (k % 32 of them) of a partial last word."""
    tail = int(k) % B32
    return xp.asarray([0xFFFFFFFF] * (packed_words(k) - 1) + [(1 << tail) - 1 if tail else 0xFFFFFFFF], dtype=xp.uint32)


def binary_matmul_int(a, w, k, xp=np):
    """ai.tinylm.BinaryMatMulInt (attr k) -- kernel ``binary_matmul_b32_s32``.

    uint32 a [..., m, W] (bit-packed activations, binarize_int's layout), uint32 w [n, W] (one
    packed row per output channel, the K-axis packed the same way), W = ceil(k/32), 1 <= k:

        dot[i, j] = k - 2 * popcount((a[i] XOR w[j]) AND mask)        int32, |dot| <= k

    = sum_c s_a[i, c] s_w[j, c] over the k values in {-1, +1} (equal bits +1, different -1);
    mask (binary_tail_mask) drops the padding bits of a partial last word, whatever they hold.
    Exact: 0 <= popcount <= k. The scale (alpha_a alpha_w: BiPFT's mean |W| and learned alpha)
    and the bias are not here: an Add of an int32 bias and a Requantize (per tensor or per output
    channel) follow, as after MatMulInteger; codegen proves |dot| <= k for the bias sum.
    """
    a, w = xp.asarray(a).astype(xp.uint32), xp.asarray(w).astype(xp.uint32)
    x = (a[..., :, None, :] ^ w) & binary_tail_mask(k, xp)
    pop = popcount32(x, xp).astype(xp.int64).sum(axis=-1)
    return (int(k) - 2 * pop).astype(xp.int32)


def binary_mask_matmul_int(mask, v, xp=np):
    """ai.tinylm.BinaryMaskMatMulInt -- kernel ``binary_mask_matmul_b32_s32``: {0,1} x {-1,+1}.

    Binary attention's context (BiT / BiPFT: P in {0, alpha_p}, V in +-alpha_v): uint32 mask
    [..., m, W] (bit j = 1: key j takes part; BinarizeInt of the SoftmaxInt row, beta = -threshold),
    uint32 v [d, W] (channel c of every key, packed along keys: BinarizeInt of V^T, words = W):

        out[i, c] = sum_j mask[i, j] * s_v[c, j] = 2 popcount(mask[i] & v[c]) - popcount(mask[i])

    over all 32 W bit positions, int32: a 0 mask bit counts for nothing, so mask's padding bits must
    be 0 (BinarizeInt writes 0), v's may hold anything. |out| <= popcount(mask[i]) <= 32 W.
    """
    mk, v = xp.asarray(mask).astype(xp.uint32), xp.asarray(v).astype(xp.uint32)
    both = popcount32(mk[..., :, None, :] & v, xp).astype(xp.int64).sum(axis=-1)
    ones = popcount32(mk, xp).astype(xp.int64).sum(axis=-1)[..., None]
    return (2 * both - ones).astype(xp.int32)
