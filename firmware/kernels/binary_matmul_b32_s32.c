/* binary_matmul_b32_s32 -- twin of tinylm.graph.ops.binary_matmul_int (ai.tinylm.BinaryMatMulInt).
 * a[m, W] and w[n, W] bit-packed (W = ceil(k/32) uint32 per row, binarize_s8_b32's layout):
 *     out[i, j] = k - 2 * popcount((a[i] ^ w[j]) & mask)        int32, |out| <= k
 * mask keeps the k % 32 real bits of a partial last word (all of every other word), so padding
 * bits count for nothing whatever they hold.
 * Cortex-M4/M33 have no popcount instruction and __builtin_popcount would call libgcc's
 * __popcountsi2 per word, so the popcount is SWAR, split in two: per word the byte sums
 * (each <= 8: 2-bit, 4-bit, 8-bit steps, shifts/ands/adds), added into a byte accumulator for
 * up to 31 words (each byte <= 248 < 256: no carry between bytes), then one fold of the four
 * bytes per batch. Two output columns share each load of a word of a. */
#include "tinylm_kernels.h"

#define M1 0x55555555u
#define M2 0x33333333u
#define M4 0x0F0F0F0Fu
#define BATCH 31 /* words per byte accumulator: 31 * 8 = 248 <= 255 */

static inline uint32_t byte_sums(uint32_t v)
{
    v = v - ((v >> 1) & M1);
    v = (v & M2) + ((v >> 2) & M2);
    return (v + (v >> 4)) & M4;
}

static inline uint32_t fold_bytes(uint32_t v) /* sum of the four bytes, each <= 255 */
{
    v = (v & 0x00FF00FFu) + ((v >> 8) & 0x00FF00FFu);
    return (v + (v >> 16)) & 0xFFFFu;
}

void binary_matmul_b32_s32(const uint32_t *a, const uint32_t *w, int32_t *out, int32_t m, int32_t n, int32_t k)
{
    const int32_t words = TINYLM_B32_WORDS(k), full = k / 32;
    const uint32_t tail = (k % 32) ? ((1u << (k % 32)) - 1u) : 0u;
    int32_t i, j, p;
    for (i = 0; i < m; ++i) {
        const uint32_t *ar = a + i * words;
        int32_t *o = out + i * n;
        for (j = 0; j + 2 <= n; j += 2) {
            const uint32_t *w0 = w + j * words, *w1 = w0 + words;
            uint32_t pop0 = 0, pop1 = 0;
            for (p = 0; p < full;) {
                const int32_t end = (full - p > BATCH) ? p + BATCH : full;
                uint32_t acc0 = 0, acc1 = 0;
                for (; p < end; ++p) {
                    const uint32_t av = ar[p];
                    acc0 += byte_sums(av ^ w0[p]);
                    acc1 += byte_sums(av ^ w1[p]);
                }
                pop0 += fold_bytes(acc0);
                pop1 += fold_bytes(acc1);
            }
            if (tail) {
                pop0 += fold_bytes(byte_sums((ar[full] ^ w0[full]) & tail));
                pop1 += fold_bytes(byte_sums((ar[full] ^ w1[full]) & tail));
            }
            o[j] = k - 2 * (int32_t)pop0;
            o[j + 1] = k - 2 * (int32_t)pop1;
        }
        for (; j < n; ++j) {
            const uint32_t *w0 = w + j * words;
            uint32_t pop0 = 0;
            for (p = 0; p < full;) {
                const int32_t end = (full - p > BATCH) ? p + BATCH : full;
                uint32_t acc0 = 0;
                for (; p < end; ++p) {
                    acc0 += byte_sums(ar[p] ^ w0[p]);
                }
                pop0 += fold_bytes(acc0);
            }
            if (tail) {
                pop0 += fold_bytes(byte_sums((ar[full] ^ w0[full]) & tail));
            }
            o[j] = k - 2 * (int32_t)pop0;
        }
    }
}
