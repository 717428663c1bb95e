/* binary_mask_matmul_b32_s32 -- twin of tinylm.graph.ops.binary_mask_matmul_int
 * (ai.tinylm.BinaryMaskMatMulInt): the context of binary attention, {0,1} mask x +-1 values.
 * mask[m, words] (bit j = 1: key j takes part; padding bits 0), v[d, words] (channel c of every
 * key, packed along the key axis):
 *     out[i, c] = 2 * popcount(mask[i] & v[c]) - popcount(mask[i])        |out| <= 32 words
 * The SWAR popcount of binary_matmul_b32_s32 (byte sums, a byte accumulator over up to 31 words,
 * 31 * 8 = 248 <= 255, one fold per batch); popcount(mask[i]) once per row; two channels share
 * each load of a mask word. */
#include "tinylm_kernels.h"
#include "tinylm_popcount.h"

#define BATCH 31

void binary_mask_matmul_b32_s32(const uint32_t *mask, const uint32_t *v, int32_t *out, int32_t m, int32_t d,
                                int32_t words)
{
    uint32_t m1 = 0x55555555u, m2 = 0x33333333u, m4 = 0x0F0F0F0Fu;
    int32_t i, c, p0, p;
#if defined(__GNUC__) && defined(__thumb2__)
    __asm__("" : "+r"(m1), "+r"(m2), "+r"(m4)); /* opaque: kept in registers (binary_matmul_b32_s32.c) */
#endif
    for (i = 0; i < m; ++i) {
        const uint32_t *mr = mask + i * words;
        int32_t *o = out + i * d;
        int32_t ones = 0;
        for (p0 = 0; p0 < words; p0 += BATCH) {
            const int32_t end = (words - p0 < BATCH) ? words : p0 + BATCH;
            uint32_t acc = 0;
            for (p = p0; p < end; ++p) {
                acc += byte_sums(mr[p], m1, m2, m4);
            }
            ones += fold_bytes(acc);
        }
        for (c = 0; c < d; ++c) {
            o[c] = -ones;
        }
        for (p0 = 0; p0 < words; p0 += BATCH) {
            const int32_t end = (words - p0 < BATCH) ? words : p0 + BATCH;
            for (c = 0; c + 2 <= d; c += 2) {
                const uint32_t *v0 = v + c * words, *v1 = v0 + words;
                uint32_t acc0 = 0, acc1 = 0;
                for (p = p0; p < end; ++p) {
                    const uint32_t mv = mr[p];
                    acc0 += byte_sums(mv & v0[p], m1, m2, m4);
                    acc1 += byte_sums(mv & v1[p], m1, m2, m4);
                }
                o[c] += 2 * fold_bytes(acc0);
                o[c + 1] += 2 * fold_bytes(acc1);
            }
            if (c < d) {
                const uint32_t *v0 = v + c * words;
                uint32_t acc0 = 0;
                for (p = p0; p < end; ++p) {
                    acc0 += byte_sums(mr[p] & v0[p], m1, m2, m4);
                }
                o[c] += 2 * fold_bytes(acc0);
            }
        }
    }
}
