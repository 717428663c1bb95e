"""Integer semantics of every quantized op: the spec.

Each function here defines the exact integer result of one graph op. The C kernel
named beside it (``firmware/kernels/<kernel>.c``) must reproduce it bit for bit;
``tests/test_kernels.py`` checks that on randomized shapes and values.

Conventions shared by all ops:
- Activations are int8, symmetric (zero point 0). Accumulators are int32.
- Tensors are row-major. "rows" x "cols" means a 2-D view of the tensor whose
  last axis is "cols".
- A right shift ``>>`` of a signed value is an arithmetic shift (floor division
  by a power of two), as numpy does and as gcc does on every target we build for.
- Rounding is "add half, then floor": ``(v + (1 << (s - 1))) >> s``, i.e. round
  half up (towards +inf). It is the same for negative values, on purpose: it is
  one add and one shift in C.
- Saturation clamps to the output type's range; nothing wraps. Int32
  accumulators never overflow: codegen proves a bound for every MatMulInteger
  and Add before it emits C, and refuses the model otherwise.
"""
from __future__ import annotations

import numpy as np

INT8_MIN, INT8_MAX = -128, 127


def _round_shift(v: np.ndarray, shift) -> np.ndarray:
    """(v + 2**(shift-1)) >> shift on int64, with shift >= 1 (array or scalar)."""
    v = np.asarray(v, dtype=np.int64)
    shift = np.asarray(shift, dtype=np.int64)
    return (v + (np.int64(1) << (shift - 1))) >> shift


def requantize(x: np.ndarray, multiplier: np.ndarray, shift: np.ndarray) -> np.ndarray:
    """ai.tinylm.Requantize -- kernel ``requantize_s32_s8``.

    int32 x, multiplier and shift int32 of length 1 (per tensor) or of length
    cols (per output channel, the last axis of x):

        y = clamp((x * m + 2**(s-1)) >> s, -128, 127)     computed in int64

    with 0 <= m < 2**31 and 1 <= s <= 62, so the product never overflows int64.
    """
    x = np.asarray(x, dtype=np.int64)
    m = np.asarray(multiplier, dtype=np.int64).reshape(-1)
    s = np.asarray(shift, dtype=np.int64).reshape(-1)
    y = _round_shift(x * m, s)
    return np.clip(y, INT8_MIN, INT8_MAX).astype(np.int8)


def matmul_integer(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """ONNX MatMulInteger (zero points 0) -- kernel ``matmul_s8_s32``.

    int8 a [m, k] times int8 b [k, n] gives the exact int32 product [m, n].
    """
    return (np.asarray(a, np.int32) @ np.asarray(b, np.int32)).astype(np.int32)


def add_int32(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """ONNX Add on int32 -- kernel ``add_s32``.

    b is either a's shape or a's last axis (a bias broadcast over rows). Exact:
    codegen proves the sum fits int32.
    """
    return (np.asarray(a, np.int64) + np.asarray(b, np.int64)).astype(np.int32)


def add_int8(a: np.ndarray, b: np.ndarray, ma: int, mb: int, shift: int) -> np.ndarray:
    """ai.tinylm.AddInt8 -- kernel ``add_s8``.

    Adds two int8 tensors of the same shape with different scales (a residual
    connection, the embedding sum, EmbBERT's weighted difference when mb < 0):

        y = clamp((a * ma + b * mb + 2**(shift-1)) >> shift, -128, 127)   in int64

    with |ma|, |mb| < 2**31 and 1 <= shift <= 62.
    """
    acc = np.asarray(a, np.int64) * np.int64(ma) + np.asarray(b, np.int64) * np.int64(mb)
    return np.clip(_round_shift(acc, shift), INT8_MIN, INT8_MAX).astype(np.int8)


def gather(table: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """ONNX Gather on axis 0 -- kernel ``gather_s8``.

    Rows of an int8 table [rows, cols] picked by int32 ids [n], giving [n, cols].
    Every id must satisfy 0 <= id < rows; the interpreter raises otherwise and the
    firmware refuses such an input before inference.
    """
    ids = np.asarray(ids, dtype=np.int64)
    if ids.size and (ids.min() < 0 or ids.max() >= table.shape[0]):
        raise IndexError(f"Gather index out of range [0, {table.shape[0]})")
    return np.asarray(table)[ids]


def position_ids(ids: np.ndarray) -> np.ndarray:
    """ai.tinylm.PositionIds -- kernel ``position_ids_s32``: [0, 1, ..., n-1] as int32."""
    return np.arange(np.asarray(ids).shape[0], dtype=np.int32)


def transpose(x: np.ndarray) -> np.ndarray:
    """ONNX Transpose of a 2-D int8 tensor -- kernel ``transpose_s8``."""
    return np.ascontiguousarray(np.asarray(x).T)


def lut(x: np.ndarray, table: np.ndarray) -> np.ndarray:
    """ai.tinylm.Lut -- kernel ``lut_s8``: any int8 -> int8 function as a table.

    y = table[x + 128] with table int8 [256]. Used for GELU and SiLU: the
    quantizer folds input and output scales into the table.
    """
    return np.asarray(table, np.int8)[np.asarray(x, np.int64) + 128]


def softmax_int(x: np.ndarray, multiplier: int, shift: int, exp_lut: np.ndarray) -> np.ndarray:
    """ai.tinylm.SoftmaxInt -- kernel ``softmax_s32_s8``: softmax over the last axis.

    int32 x [rows, cols]; exp_lut uint16 [K], exp_lut[i] ~ 65535 * exp(-i / 2**f);
    multiplier/shift turn a score difference into that fixed-point index (the
    quantizer folds the score scale, 1/sqrt(d) and 2**f into them). Per row:

        mx     = max_j x[j]
        z[j]   = ((mx - x[j]) * multiplier + 2**(shift-1)) >> shift     in uint64
        e[j]   = exp_lut[min(z[j], K-1)]                                  uint16
        sum    = sum_j e[j]                                               uint32
        y[j]   = (e[j] * 127 + (sum >> 1)) // sum                         int8 in [0, 127]

    with 0 <= multiplier < 2**31, 1 <= shift <= 62, K >= 1, cols >= 1. z is
    computed in uint64, not int64: mx - x[j] is in [0, 2**32), so the product
    is < 2**63 but adding 2**(shift-1) (up to 2**61) can pass 2**63 - 1; in
    uint64 it stays < 2**64 and exact.

    The output scale is 1/127. sum > 0 because exp_lut[0] > 0 is required (the
    row maximum always maps to index 0). sum <= cols * 65535 < 2**32 for cols <
    65537, and e * 127 + sum/2 < 2**32 as well, so C can use uint32 throughout.
    """
    x = np.asarray(x, np.int64)
    exp_lut = np.asarray(exp_lut, np.uint16)
    mx = x.max(axis=-1, keepdims=True)
    diff = (mx - x).astype(np.uint64)  # in [0, 2**32)
    sh = np.uint64(shift)
    z = (diff * np.uint64(multiplier) + (np.uint64(1) << (sh - np.uint64(1)))) >> sh
    e = exp_lut[np.minimum(z, np.uint64(exp_lut.shape[0] - 1))].astype(np.int64)
    total = e.sum(axis=-1, keepdims=True)
    return ((e * 127 + (total >> 1)) // total).astype(np.int8)


def rmsnorm_int(x: np.ndarray, gain: np.ndarray, multiplier: int, shift: int) -> np.ndarray:
    """ai.tinylm.RMSNormInt -- kernel ``rmsnorm_s8``: RMSNorm over the last axis.

    int8 x [rows, d], int8 gain [d]. The input scale cancels in x / rms(x), so
    only the gain and output scales enter multiplier/shift. Per row:

        ss     = sum_i x[i]**2                                   uint32 (<= d * 16384)
        ms     = (ss << 16) // d                                 uint64: mean square in Q16
        r      = max(isqrt(ms), 1)                               floor sqrt: rms in Q8
        inv    = (1 << 22) // r                                  2**14 / rms
        y[i]   = requantize(x[i] * gain[i] * inv, multiplier, shift)

    Requires 1 <= d <= 4096. Since |x[i]| <= sqrt(ss), |x[i] * inv| is about
    2**14 * sqrt(d); the floors in ms, r and inv push it up to 2**20 (one +-1 in a
    row of d = 2622), so |x * gain * inv| <= 2**27 < 2**28 fits int32 (checked
    exhaustively over d <= 4096 and max |x[i]|). isqrt is the exact integer
    square root (the largest r with r*r <= ms; C: bit-by-bit on uint64). A row of
    zeros gives zeros.
    """
    x = np.asarray(x, np.int64)
    d = x.shape[-1]
    ss = (x * x).sum(axis=-1, keepdims=True)
    ms = (ss << 16) // d
    r = np.maximum(isqrt(ms), 1)
    inv = (np.int64(1) << 22) // r
    p = x * np.asarray(gain, np.int64) * inv
    return requantize(p, np.array([multiplier]), np.array([shift]))


def isqrt(v: np.ndarray) -> np.ndarray:
    """Exact floor square root of non-negative int64 values (< 2**62)."""
    v = np.asarray(v, np.int64)
    r = np.floor(np.sqrt(v.astype(np.float64))).astype(np.int64)
    # float sqrt can be off by one for large values: fix up exactly
    r = np.where(r * r > v, r - 1, r)
    r = np.where((r + 1) * (r + 1) <= v, r + 1, r)
    return r


# ----------------------------------------------------------------------------- EmbBERT-Q

SEP_ID = 4   # [SEP] in the tinylm tokenizer


def segment_ids(ids: np.ndarray) -> np.ndarray:
    """ai.tinylm.SegmentIds -- kernel ``segment_ids_s32``: EmbBERT's segment of each token.

    int32 ids [n] -> int32 [n]: 1 for every token up to and including the first [SEP]
    (id 4), 2 for every token after it. The device only ever sees real tokens, so the
    float model's segment 0 (padding) never occurs.
    """
    ids = np.asarray(ids, np.int64).reshape(-1)
    is_sep = (ids == SEP_ID).astype(np.int64)
    before = np.cumsum(is_sep) - is_sep          # [SEP]s strictly before position t
    return np.where(before > 0, 2, 1).astype(np.int32)


def attention_int(q: np.ndarray, kv: np.ndarray, multiplier: int, shift: int, exp_lut: np.ndarray,
                  out_multiplier: int, out_shift: int) -> np.ndarray:
    """ai.tinylm.AttentionInt -- kernel ``attention_s8``: EmbBERT's Efficient Attention
    (keys = values = kv), fused, one query row at a time; the m x n matrix never exists.

    int8 q [m, d], int8 kv [n, d], exp_lut uint16 [K] with exp_lut[0] > 0. For each row i:

        s[j]   = sum_c q[i,c] * kv[j,c]                    int32, |s| <= d * 2**14
        p[j]   = softmax_int(s, multiplier, shift, exp_lut) int8 in [0, 127] (scale 1/127)
        acc[c] = sum_j p[j] * kv[j,c]                      int32, |acc| <= n * 127 * 128
        y[i,c] = requantize(acc[c], out_multiplier, out_shift)   (per tensor)

    i.e. exactly requantize(matmul_integer(softmax_int(matmul_integer(q, kv^T)), kv)).
    Requires 1 <= n, d * 2**14 < 2**31, n * 127 * 128 < 2**31 (codegen checks both),
    and the multiplier/shift domains of softmax_int and requantize. The C kernel needs
    a scratch of n + d int32 (``attention_s8_scratch_bytes``).
    """
    s = matmul_integer(q, np.asarray(kv).T)
    p = softmax_int(s, multiplier, shift, exp_lut)
    acc = matmul_integer(p, kv)
    return requantize(acc, np.array([out_multiplier]), np.array([out_shift]))


def attention_scratch_bytes(n: int, d: int) -> int:
    """Bytes of int32 scratch the attention_s8 kernel needs: scores (n) + one output row (d)."""
    return 4 * (int(n) + int(d))


def causal_dwconv_int(x: np.ndarray, w: np.ndarray, bias: np.ndarray) -> np.ndarray:
    """ai.tinylm.CausalDepthwiseConvInt -- kernel ``causal_dwconv_s8_s32``.

    int8 x [n, d], int8 w [k, d], int32 bias [d] -> int32 [n, d], a depthwise causal
    convolution over time (each channel its own k taps; w[k-1] multiplies the current row):

        y[t, c] = bias[c] + sum_{j=0..k-1, t-k+1+j >= 0} w[j, c] * x[t-k+1+j, c]

    Exact: codegen proves |bias| + k * 128 * max|w| < 2**31.
    """
    x = np.asarray(x, np.int64)
    w = np.asarray(w, np.int64)
    n, k = x.shape[0], w.shape[0]
    y = np.broadcast_to(np.asarray(bias, np.int64), x.shape).copy()
    for j in range(k):
        lag = k - 1 - j                      # x row t - lag
        if lag < n:
            y[lag:] += w[j] * x[:n - lag]
    return y.astype(np.int32)
