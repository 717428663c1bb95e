/* causal_dwconv_s8_s32 -- twin of tinylm.graph.ops.causal_dwconv_int (ai.tinylm.CausalDepthwiseConvInt):
 *   y[t, c] = bias[c] + sum_{j : t-k+1+j >= 0} w[j, c] * x[t-k+1+j, c]
 * for the output rows t = t0 .. t0+rows-1 (a row tile: codegen runs a layer a few rows at a
 * time); x points at row 0 of the whole input, out at the first row of the tile.
 * Exact in int32: codegen proves |bias| + k * 128 * max|w| < 2**31. */
#include "tinylm_kernels.h"

void causal_dwconv_s8_s32(const int8_t *x, const int8_t *w, const int32_t *bias, int32_t *out,
                          int32_t t0, int32_t rows, int32_t d, int32_t k)
{
    int32_t r, c, j;
    for (r = 0; r < rows; ++r) {
        int32_t t = t0 + r;
        int32_t j0 = (t >= k - 1) ? 0 : k - 1 - t; /* first tap with a row >= 0 */
        int32_t *yr = out + r * d;
        for (c = 0; c < d; ++c) {
            yr[c] = bias[c];
        }
        for (j = j0; j < k; ++j) {
            const int8_t *xr = x + (t - k + 1 + j) * d;
            const int8_t *wr = w + j * d;
            for (c = 0; c < d; ++c) {
                yr[c] += (int32_t)wr[c] * (int32_t)xr[c];
            }
        }
    }
}
