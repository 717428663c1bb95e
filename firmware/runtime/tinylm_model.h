/* The interface every generated model implements (codegen writes model.c/model.h/weights.c).
 * The runtime (protocol loop, board ports) only ever calls these. */
#ifndef TINYLM_MODEL_H
#define TINYLM_MODEL_H
#include <stdint.h>

typedef struct {
    const char *name;      /* model name, e.g. "emotion-tiny" */
    const char *hash;      /* first 16 hex chars of the sha256 of the ONNX file */
    int32_t vocab;         /* token ids must be < vocab */
    int32_t max_tokens;    /* L: longest input */
    int32_t num_labels;    /* length of the logits vector */
    int32_t arena_bytes;   /* size of the static activation arena */
    /* The logit scale s as (d * logit_mult) >> logit_shift = d * s * 2^24 (codegen/scores.py):
     * the m-results scores are softmax(l * s). 0, 0 (a model that sets neither) gives equal
     * scores but the same argmax. */
    int32_t logit_mult;
    int32_t logit_shift;
} tinylm_model_info_t;

extern const tinylm_model_info_t tinylm_model_info;

/* Runs the model on n token ids (1 <= n <= max_tokens, every id < vocab: the caller checks).
 * Writes num_labels int32 logits. Returns 0. */
int tinylm_model_run(const int32_t *ids, int32_t n, int32_t *logits);

#endif
