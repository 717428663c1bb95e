/* requantize_s32_s8 -- twin of tinylm.graph.ops.requantize (ai.tinylm.Requantize).
 * y = clamp((x * m + 2**(s-1)) >> s, -128, 127) in int64, with m/s per tensor
 * (channels == 1) or per last-axis channel (channels == cols). */
#include "tinylm_kernels.h"
#include "tinylm_fixedpoint.h"

void requantize_s32_s8(const int32_t *x, const int32_t *mult, const int32_t *shift, int32_t channels, int8_t *out, int32_t rows, int32_t cols)
{
    int32_t i, j;
    for (i = 0; i < rows; ++i) {
        for (j = 0; j < cols; ++j) {
            int32_t c = (channels == 1) ? 0 : j;
            out[i * cols + j] = tinylm_requantize_s32(x[i * cols + j], mult[c], shift[c]);
        }
    }
}
