/* requantize_s32_s8_sh8 -- twin of tinylm.graph.ops.requantize (ai.tinylm.Requantize) with an
 * int8 shift tensor (binary graphs store their per-channel shifts, 1..62, in one byte each).
 * The same computation as requantize_s32_s8, which reads int32 shifts:
 * y = clamp((x * m + 2**(s-1)) >> s, -128, 127) in int64, m/s per tensor (channels == 1) or
 * per last-axis channel (channels == cols); DSP path: for s >= 33 the high-word form by
 * SMMLA + ASR + SSAT (tinylm_fixedpoint.h). */
#include "tinylm_kernels.h"
#include "tinylm_fixedpoint.h"
#include "tinylm_dsp.h"

#ifdef TINYLM_DSP
/* shifts below 33 (rare): out of line, so gcc does not hoist the int64 form into the fast loop */
__attribute__((noinline)) static int8_t rq8_int64(int32_t v, int32_t mult, int32_t shift)
{
    return tinylm_requantize_s32(v, mult, shift);
}
#endif

void requantize_s32_s8_sh8(const int32_t *x, const int32_t *mult, const int8_t *shift, int32_t channels, int8_t *out, int32_t rows, int32_t cols)
{
    int32_t i, j;
#ifdef TINYLM_DSP
    int32_t cs = (channels == 1) ? 0 : 1;
    /* one channel index for both tables (two pointers of different strides cost gcc a register
     * and one instruction per value more than requantize_s32_s8's loop) */
    for (i = 0; i < rows; ++i) {
        const int32_t *xr = x + i * cols;
        int8_t *yr = out + i * cols;
        int32_t c = 0;
        for (j = 0; j < cols; ++j, c += cs) {
            int32_t s = shift[c], m = mult[c];
            yr[j] = (s >= 33) ? (int8_t)tinylm_ssat8(tinylm_smmla(xr[j], m, (int32_t)1 << (s - 33)) >> (s - 32))
                              : rq8_int64(xr[j], m, s);
        }
    }
#else
    for (i = 0; i < rows; ++i) {
        for (j = 0; j < cols; ++j) {
            int32_t c = (channels == 1) ? 0 : j;
            out[i * cols + j] = tinylm_requantize_s32(x[i * cols + j], mult[c], shift[c]);
        }
    }
#endif
}
