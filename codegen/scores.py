"""The EEMBC scores of `m-results-[...]`: softmax probabilities of the int32 logits, computed on
the device in integer arithmetic (firmware/runtime/protocol.c, `scores`), and this, its exact
Python twin (the harness compares the two bit for bit).

Why: the MLPerf Tiny runner divides each m-results vector by its sum before the argmax and the
AUC, so the vector must be non-negative with the argmax of the logits; raw int32 logits are
not (a negative sum turns the argmax into an argmin).

The real logit is l * s (s = the graph's tinylm.logit_scale). For d = max(l) - l_i >= 0:
    x   = (d * mult) >> shift                 x = d*s in Q24 (mult/shift from s, below)
    y   = (x * LOG2E_Q24) >> 24               e^-x = 2^-y, y in Q24
    r   = 2^-frac(y) in Q30                    exp(-t), t = frac(y)*ln2, Horner to degree 9
    e_i = r >> (y >> 24)                       e^-x in Q30 (0 once x >= 22)
    p_i = (e_i * 10^9 + S/2) // S              parts per billion, S = sum of e
then every class whose logit is below the maximum gets at most p_max - 1, so rounding can never
tie it with (and, being earlier, beat) the argmax. Printed as p/10^9 with 9 decimals."""
from __future__ import annotations

import math

ONE_Q30 = 1 << 30
LOG2E_Q24 = 24204406                   # round(log2(e) * 2**24)
LN2_Q30 = 744261118                    # round(ln(2) * 2**30)
X_ZERO = 22 << 24                      # e^-22 < 2^-31: the score is 0 beyond
PPB = 1_000_000_000
DEFAULT_SCALE = 1.0 / 256              # a graph without tinylm.logit_scale


def logit_scale_q(scale) -> tuple[int, int]:
    """(mult, shift) with (d * mult) >> shift = d * scale * 2**24, mult in [2**30, 2**31)."""
    try:
        s = float(scale)
    except (TypeError, ValueError):
        s = DEFAULT_SCALE
    if not (math.isfinite(s) and 2.0 ** -50 <= s <= 2.0 ** 6):
        s = DEFAULT_SCALE
    m, e = math.frexp(s * 2.0 ** 24)   # s * 2**24 = m * 2**e, m in [0.5, 1)
    mult, shift = round(m * 2 ** 31), 31 - e
    if mult == 2 ** 31:
        mult, shift = mult // 2, shift - 1
    return mult, shift


def exp_neg_q30(x_q24: int) -> int:
    """e^-x in Q30 for x >= 0 in Q24, as the firmware computes it."""
    if x_q24 >= X_ZERO:
        return 0
    y = (x_q24 * LOG2E_Q24) >> 24
    n, f = y >> 24, y & 0xFFFFFF
    t = (f * LN2_Q30) >> 24            # frac * ln2 in Q30, < ln2
    r = ONE_Q30
    for k in range(9, 0, -1):          # exp(-t) = 1 - t(1 - t/2(1 - t/3(...)))
        r = ONE_Q30 - (t * r // k >> 30)
    return r >> n


def scores(logits, mult: int, shift: int) -> list[int]:
    """Parts per billion of each class (what m-results-[...] prints, times 10^9)."""
    if not logits:
        return []
    top = max(logits)
    e = [exp_neg_q30(((top - v) * mult) >> shift) for v in logits]
    total = sum(e)
    p = [(v * PPB + total // 2) // total for v in e]
    pmax = max(p)
    return [q if v == top else min(q, pmax - 1) for q, v in zip(p, logits)]


def format_scores(ppb: list[int]) -> str:
    return ",".join(f"{q // PPB}.{q % PPB:09d}" for q in ppb)


def parse_scores(text: str) -> list[int]:
    """'0.250000000,...' -> parts per billion (exactly: the digits are read, not a float)."""
    out = []
    for v in text.split(",") if text else []:
        whole, _, frac = v.partition(".")
        out.append(int(whole) * PPB + int((frac + "000000000")[:9]))
    return out
