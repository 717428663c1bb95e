"""Float -> integer parameter math shared by every quantizer: scales, fixed-point
multipliers, look-up tables. Pure numpy: what it produces is what tinylm/graph/ops.py consumes."""
from __future__ import annotations


import numpy as np

EXP_FRAC_BITS = 5          # SoftmaxInt index step: 1/32 of a logit
EXP_LUT_LEN = 512          # covers logit differences up to 16 (exp(-16) ~ 1e-7: negligible)


def scale_of(absmax: float, qmax: int = 127) -> float:
    """Symmetric scale so that absmax maps to qmax."""
    return max(float(absmax), 1e-8) / qmax


def _floor_log2(x, xp):
    _, e = xp.frexp(x)               # x = mant * 2**e with mant in [0.5, 1): floor(log2 x) = e - 1
    return e.astype(xp.int64) - 1


def quantize_multipliers(real, xp=np):
    """Elementwise (m, s) with m / 2**s ~= real, m < 2**31 and 1 <= s <= 62: for Requantize
    and friends; m lies in [2**29, 2**30) when the shift range allows. real <= 0 gives (0, 1).
    Numpy gives int32 arrays and refuses a real too large for int32 fixed point."""
    real = xp.asarray(real).astype(xp.float64)
    pos = real > 0
    safe = xp.where(pos, real, 1.0)
    s = xp.clip(29 - _floor_log2(safe, xp), 1, 62)
    m = xp.where(pos, xp.round(xp.ldexp(safe, s.astype(xp.int32))).astype(xp.int64), 0)
    s = xp.where(pos, s, 1)
    if xp is np:
        if (m >= 2 ** 31).any():
            raise ValueError(f"multiplier {real.reshape(-1)[int(np.argmax(m >= 2 ** 31))]} too large for int32 fixed point")
        return m.astype(np.int32), s.astype(np.int32)
    return m, s


def quantize_multiplier(real: float) -> tuple[int, int]:
    """quantize_multipliers of one float, as Python ints."""
    m, s = quantize_multipliers(np.array([real], np.float64))
    return int(m[0]), int(s[0])


def add_multipliers(scale_a, scale_b, scale_out, xp=np):
    """(ma, mb, shift) for AddInt8: y = (a*ma + b*mb) >> shift, one shift for both. Signs of
    scale_a/b are kept (EmbBERT's weighted difference passes a negative scale_b). Numpy: Python
    ints; otherwise an int64 array [3]."""
    ra = xp.asarray(scale_a).astype(xp.float64) / scale_out
    rb = xp.asarray(scale_b).astype(xp.float64) / scale_out
    big = xp.maximum(xp.maximum(xp.abs(ra), xp.abs(rb)), 1e-12)
    sh = xp.clip(29 - _floor_log2(big, xp), 1, 62)
    e = sh.astype(xp.int32)
    ma, mb = (xp.round(xp.ldexp(r, e)).astype(xp.int64) for r in (ra, rb))
    if xp is np:
        return int(ma), int(mb), int(sh)
    return xp.stack([ma, mb, sh])


def quantize_weight(w, per_channel: bool = True, xp=np):
    """int8 weights [in, out] and their float64 scales (per output channel, or one)."""
    w = xp.asarray(w).astype(xp.float64)
    absmax = xp.abs(w).max(axis=0) if per_channel else xp.abs(w).max().reshape(1)
    scale = xp.maximum(absmax, 1e-8) / 127.0
    return xp.clip(xp.round(w / scale), -127, 127).astype(xp.int8), scale


def quantize_bias(b, scale, xp=np):
    return xp.round(xp.asarray(b).astype(xp.float64) / scale).astype(xp.int32)


def exp_lut() -> np.ndarray:
    i = np.arange(EXP_LUT_LEN)
    return np.round(65535.0 * np.exp(-i / 2 ** EXP_FRAC_BITS)).astype(np.uint16)


def activation_lut(fn, scale_in: float, scale_out: float) -> np.ndarray:
    """int8 -> int8 table of fn for Lut: table[q + 128] = round(fn(q * scale_in) / scale_out)."""
    q = np.arange(-128, 128, dtype=np.float64)
    return np.clip(np.round(fn(q * scale_in) / scale_out), -128, 127).astype(np.int8)
