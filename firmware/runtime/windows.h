/* Inputs longer than the model's L, as overlapping windows whose logits are summed
 * (tinylm/graph/windows.py is the spec; docs/protocol.md says when the runtime uses it). */
#ifndef TINYLM_WINDOWS_H
#define TINYLM_WINDOWS_H
#include <stdint.h>

/* Runs the model on the windows of ids[0..n) ([first] body[s:s+L-2] [last], s = 0, stride,
 * ... up to the window that reaches the end) and writes the saturated int32 sum of their
 * logits. ids is modified during the call and restored. window_logits and acc hold num_labels
 * values each (scratch). Returns the number of windows. 1 <= stride <= L - 2, n >= 2. */
int32_t tinylm_windows_run(int32_t *ids, int32_t n, int32_t L, int32_t stride, int32_t num_labels,
                           int32_t *logits, int32_t *window_logits, int64_t *acc);

#endif
