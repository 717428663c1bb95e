/* rmsnorm_s8 -- twin of tinylm.graph.ops.rmsnorm_int (ai.tinylm.RMSNormInt), per row of d = cols:
 *   ss  = sum x**2                 uint32 (<= d * 16384 <= 2**26 for d <= 4096)
 *   ms  = (ss << 16) / d           uint64: mean square in Q16 (ss << 16 needs > 32 bits)
 *   r   = max(isqrt(ms), 1)        rms in Q8
 *   inv = 2**22 / r                2**14 / rms
 *   y   = requantize(x * gain * inv, mult, shift)
 * Needs 1 <= d <= 4096. |x * gain * inv| <= 2**27 (worst case: one +-1 in a row),
 * so the product is exact in int32 and requantize takes its int32 form.
 * DSP path: the sum of squares by SMLAD on SXTB16 halves (exact: ss <= 2**26), the outputs by
 * the SMMLA + ASR + SSAT form of tinylm_requantize_s32 when shift >= 33. */
#include "tinylm_kernels.h"
#include "tinylm_fixedpoint.h"
#include "tinylm_dsp.h"

void rmsnorm_s8(const int8_t *x, const int8_t *gain, int8_t *out, int32_t rows, int32_t cols, int32_t mult, int32_t shift)
{
    int32_t i, j;
    for (i = 0; i < rows; ++i) {
        const int8_t *xr = x + i * cols;
        int8_t *yr = out + i * cols;
        uint32_t ss = 0;
        uint64_t ms, r;
        int32_t inv;
        j = 0;
#ifdef TINYLM_DSP
        {
            int32_t acc = 0;
            for (; j + 4 <= cols; j += 4) {
                int32_t w = tinylm_ld32(xr + j), e = tinylm_sxtb16(w), o = tinylm_sxtb16_ror8(w);
                acc = tinylm_smlad(e, e, acc);
                acc = tinylm_smlad(o, o, acc);
            }
            ss = (uint32_t)acc;
        }
#endif
        for (; j < cols; ++j) {
            int32_t v = xr[j];
            ss += (uint32_t)(v * v);
        }
        ms = ((uint64_t)ss << 16) / (uint64_t)cols;
        r = tinylm_isqrt_u64(ms);
        if (r < 1) {
            r = 1; /* a row of zeros: any inv gives zeros */
        }
        inv = (int32_t)(((uint64_t)1 << 22) / r); /* <= 2**22 */
#ifdef TINYLM_DSP
        if (shift >= 33) {
            int32_t half = (int32_t)1 << (shift - 33), sh = shift - 32;
            for (j = 0; j < cols; ++j) {
                int32_t xg = (int32_t)xr[j] * (int32_t)gain[j];
                yr[j] = (int8_t)tinylm_ssat8(tinylm_smmla(xg * inv, mult, half) >> sh);
            }
            continue;
        }
#endif
        for (j = 0; j < cols; ++j) {
            int32_t xg = (int32_t)xr[j] * (int32_t)gain[j]; /* |xg| <= 2**14 */
            yr[j] = tinylm_requantize_s32(xg * inv, mult, shift); /* |xg * inv| <= 2**27 */
        }
    }
}
