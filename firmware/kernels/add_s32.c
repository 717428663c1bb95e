/* add_s32 -- twin of tinylm.graph.ops.add_int32 (ONNX Add on int32).
 * Plain int32 addition: codegen proves the sum fits, so it never overflows. */
#include "tinylm_kernels.h"

void add_s32(const int32_t *a, const int32_t *b, int32_t *out, int32_t rows, int32_t cols, int32_t b_rows)
{
    int32_t i, j;
    for (i = 0; i < rows; ++i) {
        /* b_rows == 1: the same bias row for every row of a */
        const int32_t *b_row = (b_rows == 1) ? b : b + i * cols;
        for (j = 0; j < cols; ++j) {
            out[i * cols + j] = a[i * cols + j] + b_row[j];
        }
    }
}
