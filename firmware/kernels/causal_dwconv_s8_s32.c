/* causal_dwconv_s8_s32 -- twin of tinylm.graph.ops.causal_dwconv_int (ai.tinylm.CausalDepthwiseConvInt):
 *   y[t, c] = bias[c] + sum_{j : t-k+1+j >= 0} w[j, c] * x[t-k+1+j, c]
 * for the output rows t = t0 .. t0+rows-1 (a row tile: codegen runs a layer a few rows at a
 * time); x points at row 0 of the whole input, out at the first row of the tile.
 * Exact in int32: codegen proves |bias| + k * 128 * max|w| < 2**31. */
#include "tinylm_kernels.h"
#include "tinylm_dsp.h"

void causal_dwconv_s8_s32(const int8_t *x, const int8_t *w, const int32_t *bias, int32_t *out,
                          int32_t t0, int32_t rows, int32_t d, int32_t k)
{
    int32_t r, c, j;
    for (r = 0; r < rows; ++r) {
        int32_t t = t0 + r;
        int32_t j0 = (t >= k - 1) ? 0 : k - 1 - t; /* first tap with a row >= 0 */
        const int8_t *x0 = x + (t - k + 1 + j0) * d, *w0 = w + j0 * d;
        int32_t *yr = out + r * d;
        /* four channels per pass over the taps, their sums in registers: the int32 row is
         * written once instead of once per tap */
        for (c = 0; c + 4 <= d; c += 4) {
            const int8_t *xp = x0 + c, *wp = w0 + c;
            int32_t a0 = bias[c], a1 = bias[c + 1], a2 = bias[c + 2], a3 = bias[c + 3];
#ifdef TINYLM_DSP
            /* one word of x and of w per tap; SXTB16 halves, SMLABB/SMLATT per channel */
            for (j = j0; j < k; ++j) {
                int32_t xv = tinylm_ld32(xp), wv = tinylm_ld32(wp);
                int32_t xe = tinylm_sxtb16(xv), xo = tinylm_sxtb16_ror8(xv);
                int32_t we = tinylm_sxtb16(wv), wo = tinylm_sxtb16_ror8(wv);
                a0 = __smlabb(xe, we, a0);
                a2 = __smlatt(xe, we, a2);
                a1 = __smlabb(xo, wo, a1);
                a3 = __smlatt(xo, wo, a3);
                xp += d;
                wp += d;
            }
#else
            for (j = j0; j < k; ++j) {
                a0 += (int32_t)wp[0] * (int32_t)xp[0];
                a1 += (int32_t)wp[1] * (int32_t)xp[1];
                a2 += (int32_t)wp[2] * (int32_t)xp[2];
                a3 += (int32_t)wp[3] * (int32_t)xp[3];
                xp += d;
                wp += d;
            }
#endif
            yr[c] = a0;
            yr[c + 1] = a1;
            yr[c + 2] = a2;
            yr[c + 3] = a3;
        }
        for (; c < d; ++c) {
            const int8_t *xp = x0 + c, *wp = w0 + c;
            int32_t acc = bias[c];
            for (j = j0; j < k; ++j) {
                acc += (int32_t)wp[0] * (int32_t)xp[0];
                xp += d;
                wp += d;
            }
            yr[c] = acc;
        }
    }
}
