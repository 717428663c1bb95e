/* binary_matmul_b32_s32 -- twin of tinylm.graph.ops.binary_matmul_int (ai.tinylm.BinaryMatMulInt).
 * a[m, W] and w[n, W] bit-packed (W = ceil(k/32) uint32 per row, binarize_s8_b32's layout):
 *     out[i, j] = k - 2 * popcount((a[i] ^ w[j]) & mask)        int32, |out| <= k
 * mask keeps the k % 32 real bits of a partial last word (all bits of every other word), so
 * padding bits count for nothing whatever they hold.
 *
 * Popcount: Cortex-M4/M33 have no popcount instruction and __builtin_popcount would call
 * libgcc's __popcountsi2 once per word, so it is SWAR (shifts, ands, adds; no multiply): per
 * word the byte sums (2-bit, 4-bit, then 8-bit sums, each byte <= 8), added into a byte
 * accumulator for a batch of up to 31 words (<= 248 per byte: no carry crosses a byte), then one
 * fold of its four bytes. Batches are the outer loop, so for k <= 960 (30 words and a partial
 * one) each output is one batch: out = k - 2 pop; a further batch subtracts its 2 pop. Two
 * output columns share each load of a word of a. The masks go through an empty asm so that gcc
 * keeps them in registers, where Thumb-2 does `(v >> s) & mask` in one AND (shifted operand):
 * 11 instructions per word and column, 22 per 64 binary MACs in the two-column loop. */
#include "tinylm_kernels.h"
#include "tinylm_popcount.h"

#define BATCH 30 /* full words per batch; with the partial word 31 * 8 = 248 <= 255 */

void binary_matmul_b32_s32(const uint32_t *a, const uint32_t *w, int32_t *out, int32_t m, int32_t n, int32_t k)
{
    const int32_t words = TINYLM_B32_WORDS(k), full = k / 32;
    const uint32_t tail = (k % 32) ? ((1u << (k % 32)) - 1u) : 0u;
    uint32_t m1 = 0x55555555u, m2 = 0x33333333u, m4 = 0x0F0F0F0Fu;
    int32_t i, j, p0;
#if defined(__GNUC__) && defined(__thumb2__)
    __asm__("" : "+r"(m1), "+r"(m2), "+r"(m4)); /* opaque: kept in registers, see above */
#endif
    for (i = 0; i < m; ++i) {
        const uint32_t *ar = a + i * words;
        int32_t *o = out + i * n;
        p0 = 0;
        do {
            const int32_t nb = (full - p0 < BATCH) ? (full - p0) : BATCH;
            const uint32_t t = (p0 + nb == full) ? tail : 0u; /* the partial word, in the last batch */
            const uint32_t *ae = ar + p0 + nb;
            for (j = 0; j + 2 <= n; j += 2) {
                const uint32_t *x = ar + p0, *w0 = w + j * words + p0, *w1 = w0 + words;
                uint32_t acc0 = 0, acc1 = 0;
                while (x != ae) {
                    const uint32_t av = *x++;
                    acc0 += byte_sums(av ^ *w0++, m1, m2, m4);
                    acc1 += byte_sums(av ^ *w1++, m1, m2, m4);
                }
                if (t) {
                    acc0 += byte_sums((*x ^ *w0) & t, m1, m2, m4);
                    acc1 += byte_sums((*x ^ *w1) & t, m1, m2, m4);
                }
                o[j] = (p0 ? o[j] : k) - 2 * fold_bytes(acc0);
                o[j + 1] = (p0 ? o[j + 1] : k) - 2 * fold_bytes(acc1);
            }
            if (j < n) {
                const uint32_t *x = ar + p0, *w0 = w + j * words + p0;
                uint32_t acc0 = 0;
                while (x != ae) {
                    acc0 += byte_sums(*x++ ^ *w0++, m1, m2, m4);
                }
                if (t) {
                    acc0 += byte_sums((*x ^ *w0) & t, m1, m2, m4);
                }
                o[j] = (p0 ? o[j] : k) - 2 * fold_bytes(acc0);
            }
            p0 += nb;
        } while (p0 < full);
    }
}
