/* binarize_s8_b32 -- twin of tinylm.graph.ops.binarize_int (ai.tinylm.BinarizeInt).
 * x[rows, k] int8 -> out[rows, ceil(k/32)] uint32: bit j of word w is 1 iff
 * x[32w + j] + beta[c] >= 0 (c = 0 per tensor, channels == 1, or the column, channels == k);
 * LSB first; the padding bits of a partial last word are 0.
 * beta is clamped to [-128, 128] once per value: for int8 x that gives the same bit as the int64
 * sum (beta >= 128: always 1; beta <= -128: always 0), and the int32 add cannot overflow. */
#include "tinylm_kernels.h"

static int32_t clamp_beta(int32_t b)
{
    return b > 128 ? 128 : (b < -128 ? -128 : b);
}

void binarize_s8_b32(const int8_t *x, const int32_t *beta, int32_t channels, uint32_t *out,
                     int32_t rows, int32_t k)
{
    const int32_t words = TINYLM_B32_WORDS(k);
    int32_t i, w, j;
    for (i = 0; i < rows; ++i) {
        const int8_t *xr = x + i * k;
        uint32_t *o = out + i * words;
        for (w = 0; w < words; ++w) {
            const int32_t c0 = w * 32, len = (k - c0 < 32) ? (k - c0) : 32;
            uint32_t word = 0;
            if (channels == 1) {
                const int32_t b = clamp_beta(beta[0]);
                for (j = 0; j < len; ++j) {
                    word |= (uint32_t)((int32_t)xr[c0 + j] + b >= 0) << j;
                }
            } else {
                for (j = 0; j < len; ++j) {
                    word |= (uint32_t)((int32_t)xr[c0 + j] + clamp_beta(beta[c0 + j]) >= 0) << j;
                }
            }
            o[w] = word;
        }
    }
}
