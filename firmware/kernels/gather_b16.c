/* gather_b16 -- twin of tinylm.graph.ops.gather on a uint16 table: the binary token embedding
 * when a token has at most 16 sign bits (r <= 16), stored at that width. Each entry becomes a
 * uint32 word, zero-extended (bits 16..31 are 0), so the rows are those of the same table
 * stored as uint32 (gather_b32) and binary_matmul_b32_s32 reads them unchanged. */
#include "tinylm_kernels.h"

void gather_b16(const uint16_t *table, int32_t rows, int32_t cols, const int32_t *ids, int32_t n, uint32_t *out)
{
    int32_t i, j;
    (void)rows; /* the firmware checks 0 <= id < rows before inference */
    for (i = 0; i < n; ++i) {
        const uint16_t *src = table + ids[i] * cols;
        uint32_t *dst = out + i * cols;
        for (j = 0; j < cols; ++j) {
            dst[j] = (uint32_t)src[j];
        }
    }
}
