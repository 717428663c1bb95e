/* matmul_s8_s32 -- twin of tinylm.graph.ops.matmul_integer (ONNX MatMulInteger, zero points 0).
 * The hot loop on Cortex-M4: four outputs of a row at a time, so each a[i][p] is loaded once
 * for four multiply-accumulates and the four b values of row p sit next to each other
 * (b[p][j..j+3]); a remainder loop handles n % 4. int8 * int8 fits an int (|p| <= 2**14) and
 * codegen proves the k-term sum fits int32, so every accumulation is exact and the order of
 * the additions does not matter. */
#include "tinylm_kernels.h"

void matmul_s8_s32(const int8_t *a, const int8_t *b, int32_t *out, int32_t m, int32_t k, int32_t n)
{
    int32_t i, j, p;
    for (i = 0; i < m; ++i) {
        const int8_t *a_row = a + i * k;
        int32_t *o_row = out + i * n;
        for (j = 0; j + 4 <= n; j += 4) {
            const int8_t *bp = b + j; /* b[p][j + c] is bp[p * n + c] */
            int32_t acc0 = 0, acc1 = 0, acc2 = 0, acc3 = 0;
            for (p = 0; p < k; ++p) {
                int32_t av = a_row[p];
                acc0 += av * (int32_t)bp[0];
                acc1 += av * (int32_t)bp[1];
                acc2 += av * (int32_t)bp[2];
                acc3 += av * (int32_t)bp[3];
                bp += n;
            }
            o_row[j] = acc0;
            o_row[j + 1] = acc1;
            o_row[j + 2] = acc2;
            o_row[j + 3] = acc3;
        }
        for (; j < n; ++j) {
            const int8_t *b_col = b + j;
            int32_t acc = 0;
            for (p = 0; p < k; ++p) {
                acc += (int32_t)a_row[p] * (int32_t)b_col[p * n];
            }
            o_row[j] = acc;
        }
    }
}
