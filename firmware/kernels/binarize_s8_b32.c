/* binarize_s8_b32 -- twin of tinylm.graph.ops.binarize_int (ai.tinylm.BinarizeInt).
 * x[rows, k] int8 -> out[rows, out_words] uint32 (out_words >= ceil(k/32)): bit j of word w is 1
 * iff x[32w + j] + beta[c] >= 0 (c = 0 per tensor, channels == 1, or the column, channels == k);
 * LSB first; the padding bits of a partial last word and any words past ceil(k/32) are 0.
 * beta is clamped to [-256, 255] (one SSAT #9 on Armv7-M and later): for int8 x that gives the same
 * sign as the exact sum (beta >= 128: always >= 0; beta <= -129: always < 0), and the int32 add
 * cannot overflow. Each value's sign bit (bit 31 of x + beta: 1 when negative) is shifted in
 * from the top, `acc = (acc >> 1) | (s & 0x80000000)`; after len values the word is
 * ~acc >> (32 - len), which puts value 32w + j at bit j and zeros above len. */
#include "tinylm_kernels.h"

static inline int32_t clamp_beta(int32_t b)
{
#if defined(__GNUC__) && defined(__ARM_FEATURE_SAT)
    int32_t r; /* [-256, 255] in one instruction (arm_acle.h's __ssat trips -Wsign-conversion) */
    __asm__("ssat %0, #9, %1" : "=r"(r) : "r"(b));
    return r;
#else
    return b > 255 ? 255 : (b < -256 ? -256 : b);
#endif
}

void binarize_s8_b32(const int8_t *x, const int32_t *beta, int32_t channels, uint32_t *out,
                     int32_t rows, int32_t k, int32_t out_words)
{
    const int32_t words = TINYLM_B32_WORDS(k);
    const int32_t b0 = clamp_beta(beta[0]);
    int32_t i, w, j;
    for (i = 0; i < rows; ++i) {
        const int8_t *xr = x + i * k;
        uint32_t *o = out + i * out_words;
        for (w = 0; w < words; ++w) {
            const int32_t c0 = w * 32, len = (k - c0 < 32) ? (k - c0) : 32;
            uint32_t acc = 0;
            if (channels == 1) {
                for (j = 0; j < len; ++j) {
                    acc = (acc >> 1) | ((uint32_t)((int32_t)xr[c0 + j] + b0) & 0x80000000u);
                }
            } else {
                for (j = 0; j < len; ++j) {
                    acc = (acc >> 1) | ((uint32_t)((int32_t)xr[c0 + j] + clamp_beta(beta[c0 + j])) & 0x80000000u);
                }
            }
            o[w] = ~acc >> (32 - len);
        }
        for (; w < out_words; ++w) {
            o[w] = 0;
        }
    }
}
