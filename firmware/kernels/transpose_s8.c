/* transpose_s8 -- twin of tinylm.graph.ops.transpose (ONNX Transpose of a 2-D int8 tensor). */
#include "tinylm_kernels.h"

void transpose_s8(const int8_t *x, int8_t *out, int32_t rows, int32_t cols)
{
    int32_t i, j;
    for (i = 0; i < rows; ++i) {
        for (j = 0; j < cols; ++j) {
            out[j * rows + i] = x[i * cols + j];
        }
    }
}
