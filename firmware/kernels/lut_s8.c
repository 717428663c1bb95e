/* lut_s8 -- twin of tinylm.graph.ops.lut (ai.tinylm.Lut): y = table[x + 128]. */
#include "tinylm_kernels.h"

void lut_s8(const int8_t *x, const int8_t *table, int8_t *out, int32_t count)
{
    int32_t i;
    for (i = 0; i < count; ++i) {
        out[i] = table[(int32_t)x[i] + 128]; /* x in [-128, 127] -> index in [0, 255] */
    }
}
