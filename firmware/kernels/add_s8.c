/* add_s8 -- twin of tinylm.graph.ops.add_int8 (ai.tinylm.AddInt8).
 * y = clamp((a*ma + b*mb + 2**(shift-1)) >> shift) in int64: |a*ma| + |b*mb| < 2**39,
 * so the sum and the rounding half never overflow. mb may be negative. */
#include "tinylm_kernels.h"
#include "tinylm_fixedpoint.h"

void add_s8(const int8_t *a, const int8_t *b, int8_t *out, int32_t count, int32_t ma, int32_t mb, int32_t shift)
{
    int32_t i;
    for (i = 0; i < count; ++i) {
        int64_t acc = (int64_t)a[i] * ma + (int64_t)b[i] * mb;
        out[i] = tinylm_sat_s8(tinylm_round_shift_s64(acc, shift));
    }
}
