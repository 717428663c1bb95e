/* matmul_s8_s32 -- twin of tinylm.ops.matmul_integer (ONNX MatMulInteger, zero points 0).
 * The hot loop on Cortex-M4: one int32 accumulator per output, a dot product over k
 * reading a row of a and a column of b. int8 * int8 fits an int (|p| <= 2**14) and
 * codegen proves the k-term sum fits int32, so the accumulation is exact. */
#include "tinylm_kernels.h"

void matmul_s8_s32(const int8_t *a, const int8_t *b, int32_t *out, int32_t m, int32_t k, int32_t n)
{
    int32_t i, j, p;
    for (i = 0; i < m; ++i) {
        const int8_t *a_row = a + i * k;
        for (j = 0; j < n; ++j) {
            const int8_t *b_col = b + j; /* b[p][j] is b_col[p * n] */
            int32_t acc = 0;
            for (p = 0; p < k; ++p) {
                acc += (int32_t)a_row[p] * (int32_t)b_col[p * n];
            }
            out[i * n + j] = acc;
        }
    }
}
