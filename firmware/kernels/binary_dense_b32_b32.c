/* binary_dense_b32_b32 -- fusion that codegen emits (codegen/binary.py) for
 * BinaryMatMulInt by a weight [+ Add of a bias] + Requantize + BinarizeInt: twin
 * tinylm.graph.ops.binary_matmul_int, then the thresholds codegen folds the rest into.
 * a[m, W] and w[n, W] packed as for binary_matmul_b32_s32 (W = ceil(k/32)); out[m, ceil(n/32)]:
 *     bit j of row i = (k - 2 * popcount((a[i] ^ w[j]) & mask)) >= thr[j]
 * LSB first, padding bits 0. Requantize is non-decreasing in its input (multiplier >= 0) and so
 * is the clamp, so "requantize(dot + bias) + beta >= 0" holds exactly for dot >= some thr[j]
 * (codegen finds it over all dot in [-k, k]); neither the int32 nor the int8 row exists.
 * Same SWAR popcount as binary_matmul_b32_s32 (byte sums, a byte accumulator per 31 words, one
 * fold); two columns share each load of a word of a. */
#include "tinylm_kernels.h"
#include "tinylm_popcount.h"

#define BATCH 31 /* full words per byte accumulator: 31 * 8 = 248 <= 255 */

void binary_dense_b32_b32(const uint32_t *a, const uint32_t *w, const int32_t *thr, uint32_t *out,
                          int32_t m, int32_t n, int32_t k)
{
    const int32_t words = TINYLM_B32_WORDS(k), full = k / 32, out_words = TINYLM_B32_WORDS(n);
    const uint32_t tail = (k % 32) ? ((1u << (k % 32)) - 1u) : 0u;
    uint32_t m1 = 0x55555555u, m2 = 0x33333333u, m4 = 0x0F0F0F0Fu;
    int32_t i, j, p;
#if defined(__GNUC__) && defined(__thumb2__)
    __asm__("" : "+r"(m1), "+r"(m2), "+r"(m4)); /* opaque: kept in registers (binary_matmul_b32_s32.c) */
#endif
    for (i = 0; i < m; ++i) {
        const uint32_t *ar = a + i * words;
        uint32_t *o = out + i * out_words;
        uint32_t bits = 0; /* the output word being built, stored after its 32nd column */
        for (j = 0; j < n; j += 2) {
            const int32_t two = (j + 1 < n);
            const uint32_t *w0 = w + j * words, *w1 = two ? w0 + words : w0;
            int32_t pop0 = 0, pop1 = 0;
            for (p = 0; p < full;) {
                const int32_t end = (full - p > BATCH) ? p + BATCH : full;
                uint32_t acc0 = 0, acc1 = 0;
                for (; p < end; ++p) {
                    const uint32_t av = ar[p];
                    acc0 += byte_sums(av ^ w0[p], m1, m2, m4);
                    acc1 += byte_sums(av ^ w1[p], m1, m2, m4);
                }
                pop0 += fold_bytes(acc0);
                pop1 += fold_bytes(acc1);
            }
            if (tail) {
                pop0 += fold_bytes(byte_sums((ar[full] ^ w0[full]) & tail, m1, m2, m4));
                pop1 += fold_bytes(byte_sums((ar[full] ^ w1[full]) & tail, m1, m2, m4));
            }
            bits |= (uint32_t)(k - 2 * pop0 >= thr[j]) << (j % 32);
            if (two) { /* j is even, so j + 1 is in the same word */
                bits |= (uint32_t)(k - 2 * pop1 >= thr[j + 1]) << ((j + 1) % 32);
            }
            if (j % 32 == 30 || j + 2 >= n) {
                o[j / 32] = bits;
                bits = 0;
            }
        }
    }
}
