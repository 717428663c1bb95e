/* gather_b32 -- twin of tinylm.graph.ops.gather on a bit-packed (uint32) table: the binary
 * token embedding, one row of ceil(r/32) words per token. */
#include "tinylm_kernels.h"

void gather_b32(const uint32_t *table, int32_t rows, int32_t cols, const int32_t *ids, int32_t n, uint32_t *out)
{
    int32_t i, j;
    (void)rows; /* the firmware checks 0 <= id < rows before inference */
    for (i = 0; i < n; ++i) {
        const uint32_t *src = table + ids[i] * cols;
        uint32_t *dst = out + i * cols;
        for (j = 0; j < cols; ++j) {
            dst[j] = src[j];
        }
    }
}
