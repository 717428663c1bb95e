/* softmax_s32_s8 -- twin of tinylm.graph.ops.softmax_int (ai.tinylm.SoftmaxInt), per row:
 *   z = ((mx - x) * mult + 2**(shift-1)) >> shift   in uint64
 *   e = lut[min(z, lut_len - 1)], sum = sum(e)       uint32
 *   y = (e * 127 + sum / 2) / sum                    in [0, 127]
 * Needs cols >= 1, lut_len >= 1, lut[0] > 0 (so sum > 0), cols < 65537 (so sum fits
 * uint32), 0 <= mult < 2**31, 1 <= shift <= 62. */
#include "tinylm_kernels.h"
#include "tinylm_fixedpoint.h"

/* exp_lut entry for one score: mx - x is in [0, 2**32) and mult < 2**31, so the
 * product is < 2**63 and adding the rounding half (<= 2**61) cannot wrap a uint64.
 * int64 could overflow here, hence unsigned. */
static uint16_t softmax_exp(int32_t mx, int32_t x, int32_t mult, int32_t shift, const uint16_t *lut, int32_t lut_len)
{
    uint64_t diff = (uint64_t)((int64_t)mx - (int64_t)x);
    uint64_t z = tinylm_round_shift_u64(diff * (uint64_t)mult, shift);
    uint64_t last = (uint64_t)(lut_len - 1);
    return lut[(z < last) ? z : last];
}

void softmax_s32_s8(const int32_t *x, int8_t *out, int32_t rows, int32_t cols, int32_t mult, int32_t shift, const uint16_t *lut, int32_t lut_len)
{
    int32_t i, j;
    for (i = 0; i < rows; ++i) {
        const int32_t *xr = x + i * cols;
        int8_t *yr = out + i * cols;
        int32_t mx = xr[0];
        uint32_t sum = 0;
        for (j = 1; j < cols; ++j) {
            if (xr[j] > mx) {
                mx = xr[j];
            }
        }
        for (j = 0; j < cols; ++j) {
            sum += softmax_exp(mx, xr[j], mult, shift, lut, lut_len);
        }
        /* second pass recomputes e: no scratch buffer (no malloc, no VLA) */
        for (j = 0; j < cols; ++j) {
            uint32_t e = softmax_exp(mx, xr[j], mult, shift, lut, lut_len);
            /* e <= 65535 and sum < 2**32: e * 127 + sum / 2 < 2**32; e <= sum so y <= 127 */
            yr[j] = (int8_t)((e * 127u + (sum >> 1)) / sum);
        }
    }
}
