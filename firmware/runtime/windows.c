/* Overlapping windows over an input longer than L (tinylm/graph/windows.py is the spec). */
#include "windows.h"
#include "tinylm_model.h"

int32_t tinylm_windows_run(int32_t *ids, int32_t n, int32_t L, int32_t stride, int32_t num_labels,
                           int32_t *logits, int32_t *window_logits, int64_t *acc)
{
    if (n <= L) {
        tinylm_model_run(ids, n, logits);
        return 1;
    }
    const int32_t m = n - 2, W = L - 2, first = ids[0], last = ids[n - 1];
    int32_t count = 0;
    for (int32_t c = 0; c < num_labels; c++) acc[c] = 0;
    for (int32_t s = 0;; s += stride) {
        const int32_t k = m - s < W ? m - s : W;   /* >= 1: s < m (stride <= W) */
        /* The window [first] ids[s+1 .. s+k] [last] in place at ids[s .. s+k+1]: two ids
         * swapped in and back out, so no copy of the input and no second buffer. */
        const int32_t keep_a = ids[s], keep_b = ids[s + k + 1];
        ids[s] = first;
        ids[s + k + 1] = last;
        tinylm_model_run(ids + s, k + 2, window_logits);
        ids[s] = keep_a;
        ids[s + k + 1] = keep_b;
        for (int32_t c = 0; c < num_labels; c++) acc[c] += window_logits[c];
        count++;
        if (s + W >= m) break;
    }
    for (int32_t c = 0; c < num_labels; c++)   /* never saturates for real heads (see the spec) */
        logits[c] = acc[c] > INT32_MAX ? INT32_MAX : acc[c] < INT32_MIN ? INT32_MIN : (int32_t)acc[c];
    return count;
}
