/* gather_s8 -- twin of tinylm.graph.ops.gather (ONNX Gather on axis 0). */
#include "tinylm_kernels.h"

void gather_s8(const int8_t *table, int32_t rows, int32_t cols, const int32_t *ids, int32_t n, int8_t *out)
{
    int32_t i, j;
    (void)rows; /* the firmware checks 0 <= id < rows before inference */
    for (i = 0; i < n; ++i) {
        const int8_t *src = table + ids[i] * cols;
        int8_t *dst = out + i * cols;
        for (j = 0; j < cols; ++j) {
            dst[j] = src[j];
        }
    }
}
