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

One spec, two backends. Every op takes ``xp``, an array namespace: numpy (the
default) for the reference interpreter, ``jax.numpy`` for quantization-aware
training (tinylm/quant/qat_forward.py), which runs these same functions on
batches. So each op is written against what numpy and jax.numpy share:
functional updates only, leading batch axes allowed (the op works on the last
one or two), no data-dependent Python control flow. Two things differ by
backend and are stated where they occur: range errors are raised only on
concrete numpy inputs (a traced array has no value to check), and
``matmul_integer`` uses exact float32 products off numpy. The jax backend must
run with 64-bit types enabled (``jax.enable_x64``) and float32 matmuls at full
precision (``jax.default_matmul_precision("highest")``).

Only ``attention_int`` and ``softmax_int`` have a backend-neutral extra, the
``mask`` of real keys that batches padded to one length need; the graph never
passes one (it runs the n real tokens), and with every key real the result is
the same.
"""
from __future__ import annotations

import numpy as np

INT8_MIN, INT8_MAX = -128, 127


def _i64(x, xp):
    return xp.asarray(x).astype(xp.int64)


def _round_shift(v, shift, xp=np):
    """(v + 2**(shift-1)) >> shift on int64, with shift >= 1 (array or scalar)."""
    v, shift = _i64(v, xp), _i64(shift, xp)
    return (v + (xp.asarray(1, dtype=xp.int64) << (shift - 1))) >> shift


def _to_int8(y, xp):
    return xp.clip(y, INT8_MIN, INT8_MAX).astype(xp.int8)


def requantize(x, multiplier, shift, xp=np):
    """ai.tinylm.Requantize -- kernel ``requantize_s32_s8`` (``requantize_s32_s8_sh8`` for int8 shifts).

    int32 x, multiplier int32 and shift int32 or int8 (the same values: shifts are 1..62),
    each of length 1 (per tensor) or of length cols (per output channel, the last axis of x):

        y = clamp((x * m + 2**(s-1)) >> s, -128, 127)     computed in int64

    with 0 <= m < 2**31 and 1 <= s <= 62, so the product never overflows int64.
    """
    m = _i64(multiplier, xp).reshape(-1)
    s = _i64(shift, xp).reshape(-1)
    return _to_int8(_round_shift(_i64(x, xp) * m, s, xp), xp)


def matmul_integer(a, b, xp=np):
    """ONNX MatMulInteger (zero points 0) -- kernel ``matmul_s8_s32``.

    int8 a [..., m, k] times int8 b [..., k, n] gives the exact int32 product [..., m, n].

    Off numpy the product runs in float32 when k <= 1024: every term is an integer
    of magnitude <= 2**14 and every partial sum < 2**24, so float32 is exact in any
    summation order, and accelerators multiply float32 far faster than int64.
    """
    if xp is np:
        return (np.asarray(a, np.int32) @ np.asarray(b, np.int32)).astype(np.int32)
    if a.shape[-1] <= 1024:
        return xp.matmul(a.astype(xp.float32), b.astype(xp.float32)).astype(xp.int32)
    return xp.matmul(_i64(a, xp), _i64(b, xp)).astype(xp.int32)


def add_int32(a, b, xp=np):
    """ONNX Add on int32 -- kernel ``add_s32``.

    b is either a's shape or a's last axis (a bias broadcast over rows). Exact:
    codegen proves the sum fits int32.
    """
    return (_i64(a, xp) + _i64(b, xp)).astype(xp.int32)


def add_int8(a, b, ma, mb, shift, xp=np):
    """ai.tinylm.AddInt8 -- kernel ``add_s8``.

    Adds two int8 tensors of the same shape with different scales (a residual
    connection, the embedding sum, EmbBERT's weighted difference when mb < 0):

        y = clamp((a * ma + b * mb + 2**(shift-1)) >> shift, -128, 127)   in int64

    with |ma|, |mb| < 2**31 and 1 <= shift <= 62.
    """
    acc = _i64(a, xp) * _i64(ma, xp) + _i64(b, xp) * _i64(mb, xp)
    return _to_int8(_round_shift(acc, shift, xp), xp)


def gather(table, ids, xp=np):
    """ONNX Gather on axis 0 -- kernels ``gather_s8``, ``gather_b32``, ``gather_b16``.

    Rows of a table [rows, cols] picked by int32 ids [...] -> [..., cols]:
    - int8 table: int8 rows (``gather_s8``);
    - uint32 table (bit-packed rows, binarize_int's layout): uint32 rows (``gather_b32``);
    - uint16 table: bit-packed rows whose words have at most 16 bits (the binary token table
      when a token has r <= 16 sign bits), stored at their real width: each uint16 entry is
      zero-extended to a uint32 word, so the result is the uint32 rows that the same table
      stored as uint32 gives (``gather_b16``), and BinaryMatMulInt reads it unchanged.
    Every id must satisfy 0 <= id < rows; the interpreter raises otherwise and the
    firmware refuses such an input before inference.
    """
    table = xp.asarray(table)
    if xp is np:
        ids = np.asarray(ids, dtype=np.int64)
        if ids.size and (ids.min() < 0 or ids.max() >= table.shape[0]):
            raise IndexError(f"Gather index out of range [0, {table.shape[0]})")
    rows = table[ids]
    return rows.astype(xp.uint32) if table.dtype == np.uint16 else rows


def position_ids(ids, xp=np):
    """ai.tinylm.PositionIds -- kernel ``position_ids_s32``: [0, 1, ..., n-1] as int32
    (n = the last axis of ids)."""
    return xp.arange(ids.shape[-1], dtype=xp.int32)


def transpose(x, xp=np):
    """ONNX Transpose of a 2-D int8 tensor (the last two axes) -- kernel ``transpose_s8``."""
    y = xp.swapaxes(xp.asarray(x), -1, -2)
    return np.ascontiguousarray(y) if xp is np else y


def lut(x, table, xp=np):
    """ai.tinylm.Lut -- kernel ``lut_s8``: any int8 -> int8 function as a table.

    y = table[x + 128] with table int8 [256]. Used for GELU and SiLU: the
    quantizer folds input and output scales into the table.
    """
    return xp.asarray(table).astype(xp.int8)[_i64(x, xp) + 128]


def softmax_int(x, multiplier, shift, exp_lut, xp=np, mask=None):
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

    mask (bool, broadcastable to x; not a graph input): only the True columns of a
    row take part -- the others get 0 and change nothing else, so a row padded
    with masked columns gives the unpadded row's result.
    """
    x = _i64(x, xp)
    lut_ = _i64(exp_lut, xp)
    if mask is None:
        mx = x.max(axis=-1, keepdims=True)
        diff = mx - x
    else:
        mx = xp.where(mask, x, np.iinfo(np.int64).min).max(axis=-1, keepdims=True)
        diff = xp.where(mask, mx - x, 0)
    u64 = xp.uint64
    sh = _i64(shift, xp).astype(u64)
    one = xp.asarray(1, dtype=u64)
    z = (diff.astype(u64) * _i64(multiplier, xp).astype(u64) + (one << (sh - one))) >> sh
    e = lut_[xp.minimum(z, xp.asarray(lut_.shape[0] - 1, dtype=u64)).astype(xp.int64)]
    if mask is not None:
        e = xp.where(mask, e, 0)
    total = e.sum(axis=-1, keepdims=True)
    if mask is not None:
        total = xp.maximum(total, 1)          # a row without any real column: zeros
    return ((e * 127 + (total >> 1)) // total).astype(xp.int8)


def rmsnorm_int(x, gain, multiplier, shift, xp=np):
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
    x = _i64(x, xp)
    d = x.shape[-1]
    ss = (x * x).sum(axis=-1, keepdims=True)
    r = xp.maximum(isqrt((ss << 16) // d, xp), 1)
    inv = (1 << 22) // r
    return requantize(x * _i64(gain, xp) * inv, multiplier, shift, xp)


def isqrt(v, xp=np):
    """Exact floor square root of non-negative int64 values (< 2**62)."""
    v = _i64(v, xp)
    r = xp.floor(xp.sqrt(v.astype(xp.float64))).astype(xp.int64)
    # float sqrt can be off by one for large values: fix up exactly
    r = xp.where(r * r > v, r - 1, r)
    return xp.where((r + 1) * (r + 1) <= v, r + 1, r)


# ----------------------------------------------------------------------------- EmbBERT-Q

SEP_ID = 4   # [SEP] in the tinylm tokenizer


def segment_ids(ids, xp=np):
    """ai.tinylm.SegmentIds -- kernel ``segment_ids_s32``: EmbBERT's segment of each token.

    int32 ids [..., n] -> int32 [..., n]: 1 for every token up to and including the first
    [SEP] (id 4), 2 for every token after it. The device only ever sees real tokens, so the
    float model's segment 0 (padding) never occurs.
    """
    is_sep = (_i64(ids, xp) == SEP_ID).astype(xp.int64)
    before = xp.cumsum(is_sep, axis=-1) - is_sep          # [SEP]s strictly before position t
    return xp.where(before > 0, 2, 1).astype(xp.int32)


def attention_int(q, kv, multiplier, shift, exp_lut, out_multiplier, out_shift, xp=np, mask=None):
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

    mask: bool [..., n], the real keys of padded batches (see softmax_int).
    """
    s = matmul_integer(q, xp.swapaxes(xp.asarray(kv), -1, -2), xp)
    p = softmax_int(s, multiplier, shift, exp_lut, xp, mask=None if mask is None else mask[..., None, :])
    return requantize(matmul_integer(p, kv, xp), out_multiplier, out_shift, xp)


def attention_scratch_bytes(n: int, d: int) -> int:
    """Bytes of int32 scratch the attention_s8 kernel needs: scores (n) + one output row (d)."""
    return 4 * (int(n) + int(d))


def causal_dwconv_int(x, w, bias, xp=np):
    """ai.tinylm.CausalDepthwiseConvInt -- kernel ``causal_dwconv_s8_s32``.

    int8 x [..., n, d], int8 w [k, d], int32 bias [d] -> int32 [..., n, d], a depthwise causal
    convolution over time (each channel its own k taps; w[k-1] multiplies the current row):

        y[t, c] = bias[c] + sum_{j=0..k-1, t-k+1+j >= 0} w[j, c] * x[t-k+1+j, c]

    Exact: codegen proves |bias| + k * 128 * max|w| < 2**31.
    """
    x, w = _i64(x, xp), _i64(w, xp)
    n, k = x.shape[-2], w.shape[0]
    y = xp.broadcast_to(_i64(bias, xp), x.shape)
    for j in range(k):
        lag = k - 1 - j                      # tap j reads row t - lag
        if lag < n:
            late = x[..., :n - lag, :] if lag else x
            shifted = xp.concatenate([xp.zeros_like(x[..., :lag, :]), late], axis=-2)
            y = y + w[j] * shifted
    return y.astype(xp.int32)


# The binary (BiPFT) ops live in their own module; importing them here keeps `ops.<name>` the one
# place a caller looks up any op of the spec.
from tinylm.graph.binary_ops import (B32, binarize_int, binary_mask_matmul_int,  # noqa: E402,F401
                                     binary_matmul_int, binary_tail_mask, packed_words, popcount32)
