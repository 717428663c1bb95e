/* position_ids_s32 -- twin of tinylm.graph.ops.position_ids: [0, 1, ..., n-1]. */
#include "tinylm_kernels.h"

void position_ids_s32(int32_t n, int32_t *out)
{
    int32_t i;
    for (i = 0; i < n; ++i) {
        out[i] = i;
    }
}
