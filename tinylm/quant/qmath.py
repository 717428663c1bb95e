"""Float -> integer parameter math shared by every quantizer: scales, fixed-point
multipliers, look-up tables. Pure numpy: what it produces is what tinylm/graph/ops.py consumes."""
from __future__ import annotations

import math

import numpy as np

EXP_FRAC_BITS = 5          # SoftmaxInt index step: 1/32 of a logit
EXP_LUT_LEN = 512          # covers logit differences up to 16 (exp(-16) ~ 1e-7: negligible)


def scale_of(absmax: float, qmax: int = 127) -> float:
    """Symmetric scale so that absmax maps to qmax."""
    return max(float(absmax), 1e-8) / qmax


def quantize_multiplier(real: float, target_bits: int = 30) -> tuple[int, int]:
    """(m, s) with m / 2**s ~= real, m < 2**31 and 1 <= s <= 62: for Requantize and friends.

    m is placed in [2**(target_bits-1), 2**target_bits) when the shift range allows."""
    if real <= 0:
        return 0, 1
    s = target_bits - 1 - math.floor(math.log2(real))
    s = min(max(s, 1), 62)
    m = int(round(real * 2.0 ** s))
    if m >= 2 ** 31:
        raise ValueError(f"multiplier {real} too large for int32 fixed point")
    return m, s


def quantize_multipliers(real: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    pairs = [quantize_multiplier(float(r)) for r in np.asarray(real).reshape(-1)]
    return (np.array([p[0] for p in pairs], np.int32), np.array([p[1] for p in pairs], np.int32))


def add_multipliers(scale_a: float, scale_b: float, scale_out: float) -> tuple[int, int, int]:
    """(ma, mb, shift) for AddInt8: y = (a*ma + b*mb) >> shift. Signs of scale_a/b are kept
    (EmbBERT's weighted difference passes a negative scale_b)."""
    ra, rb = scale_a / scale_out, scale_b / scale_out
    big = max(abs(ra), abs(rb), 1e-12)
    shift = min(max(29 - math.floor(math.log2(big)), 1), 62)
    return int(round(ra * 2 ** shift)), int(round(rb * 2 ** shift)), shift


def quantize_weight(w: np.ndarray, per_channel: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """int8 weights [in, out] and their scales (per output channel, or one)."""
    w = np.asarray(w, np.float64)
    absmax = np.abs(w).max(axis=0) if per_channel else np.array([np.abs(w).max()])
    scale = np.maximum(absmax, 1e-8) / 127.0
    q = np.clip(np.round(w / scale), -127, 127).astype(np.int8)
    return q, scale


def quantize_bias(b: np.ndarray, scale: np.ndarray) -> np.ndarray:
    return np.round(np.asarray(b, np.float64) / scale).astype(np.int32)


def exp_lut() -> np.ndarray:
    i = np.arange(EXP_LUT_LEN)
    return np.round(65535.0 * np.exp(-i / 2 ** EXP_FRAC_BITS)).astype(np.uint16)


def activation_lut(fn, scale_in: float, scale_out: float) -> np.ndarray:
    """int8 -> int8 table of fn for Lut: table[q + 128] = round(fn(q * scale_in) / scale_out)."""
    q = np.arange(-128, 128, dtype=np.float64)
    return np.clip(np.round(fn(q * scale_in) / scale_out), -128, 127).astype(np.int8)
