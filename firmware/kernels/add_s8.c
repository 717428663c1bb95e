/* add_s8 -- twin of tinylm.graph.ops.add_int8 (ai.tinylm.AddInt8).
 * y = clamp((a*ma + b*mb + 2**(shift-1)) >> shift) in int64: |a*ma| + |b*mb| < 2**39,
 * so the sum and the rounding half never overflow. mb may be negative.
 * DSP path, 9 <= shift <= 31: the int64 sum starts at the rounding half and takes both products
 * by SMLAL; the shifted value r satisfies |r| < 2**(40-shift) <= 2**31, so the low word of the
 * 64-bit shift, (lo >> shift) | (hi << (32 - shift)), is r exactly; SSAT clamps it. */
#include "tinylm_kernels.h"
#include "tinylm_fixedpoint.h"
#include "tinylm_dsp.h"

void add_s8(const int8_t *a, const int8_t *b, int8_t *out, int32_t count, int32_t ma, int32_t mb, int32_t shift)
{
    int32_t i;
#ifdef TINYLM_DSP
    if (shift >= 9 && shift <= 31) {
        int64_t half = (int64_t)1 << (shift - 1);
        for (i = 0; i < count; ++i) {
            int64_t acc = half + (int64_t)a[i] * ma + (int64_t)b[i] * mb;
            uint32_t lo = (uint32_t)acc, hi = (uint32_t)(acc >> 32);
            out[i] = (int8_t)tinylm_ssat8((int32_t)((lo >> shift) | (hi << (32 - shift))));
        }
        return;
    }
#endif
    for (i = 0; i < count; ++i) {
        int64_t acc = (int64_t)a[i] * ma + (int64_t)b[i] * mb;
        out[i] = tinylm_sat_s8(tinylm_round_shift_s64(acc, shift));
    }
}
