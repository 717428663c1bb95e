/* segment_ids_s32 -- twin of tinylm.graph.ops.segment_ids (ai.tinylm.SegmentIds):
 * out[t] = 1 up to and including the first [SEP] (id 4), 2 after it. */
#include "tinylm_kernels.h"

void segment_ids_s32(const int32_t *ids, int32_t n, int32_t *out)
{
    int32_t i, seg = 1;
    for (i = 0; i < n; ++i) {
        out[i] = seg;
        if (ids[i] == TINYLM_SEP_ID) {
            seg = 2; /* the [SEP] itself still belongs to segment 1 */
        }
    }
}
