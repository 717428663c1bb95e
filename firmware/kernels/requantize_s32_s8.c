/* requantize_s32_s8 -- twin of tinylm.graph.ops.requantize (ai.tinylm.Requantize).
 * y = clamp((x * m + 2**(s-1)) >> s, -128, 127) in int64, with m/s per tensor
 * (channels == 1) or per last-axis channel (channels == cols). DSP path: for s >= 33 the
 * high-word form of tinylm_requantize_s32 by SMMLA + ASR + SSAT (tinylm_fixedpoint.h). */
#include "tinylm_kernels.h"
#include "tinylm_fixedpoint.h"
#include "tinylm_dsp.h"

void requantize_s32_s8(const int32_t *x, const int32_t *mult, const int32_t *shift, int32_t channels, int8_t *out, int32_t rows, int32_t cols)
{
    int32_t i, j;
    for (i = 0; i < rows; ++i) {
        for (j = 0; j < cols; ++j) {
            int32_t c = (channels == 1) ? 0 : j;
#ifdef TINYLM_DSP
            int32_t s = shift[c];
            if (s >= 33) {
                out[i * cols + j] = (int8_t)tinylm_ssat8(
                    tinylm_smmla(x[i * cols + j], mult[c], (int32_t)1 << (s - 33)) >> (s - 32));
                continue;
            }
#endif
            out[i * cols + j] = tinylm_requantize_s32(x[i * cols + j], mult[c], shift[c]);
        }
    }
}
