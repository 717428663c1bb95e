/* tinylm portable C99 kernels. Each one reproduces, bit for bit, the numpy function
 * named beside it in tinylm/graph/ops.py (the spec); tests/test_kernels.py checks that.
 * All tensors are row-major; sizes are int32_t; no kernel allocates memory. */
#ifndef TINYLM_KERNELS_H
#define TINYLM_KERNELS_H
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* tinylm.graph.ops.gather: out[n,cols] = table[ids[i], :]; ids already validated (0 <= id < rows). */
void gather_s8(const int8_t *table, int32_t rows, int32_t cols, const int32_t *ids, int32_t n, int8_t *out);
/* the same on bit-packed rows (binary token embedding, tinylm.graph.ops.binarize_int's layout) */
void gather_b32(const uint32_t *table, int32_t rows, int32_t cols, const int32_t *ids, int32_t n, uint32_t *out);
/* the same on bit-packed rows of words of at most 16 bits stored as uint16 (tinylm.graph.ops.gather):
 * each entry zero-extended to a uint32 word, out[n, cols] */
void gather_b16(const uint16_t *table, int32_t rows, int32_t cols, const int32_t *ids, int32_t n, uint32_t *out);

/* tinylm.graph.ops.position_ids: out[i] = i for i < n. */
void position_ids_s32(int32_t n, int32_t *out);

/* tinylm.graph.ops.matmul_integer: out[m,n] = a[m,k] @ b[k,n], exact int32 (codegen proves no overflow). */
void matmul_s8_s32(const int8_t *a, const int8_t *b, int32_t *out, int32_t m, int32_t k, int32_t n);

/* tinylm.graph.ops.add_int32: out = a + b; b_rows is rows (same shape) or 1 (bias broadcast over rows). */
void add_s32(const int32_t *a, const int32_t *b, int32_t *out, int32_t rows, int32_t cols, int32_t b_rows);

/* tinylm.graph.ops.requantize: out = clamp((x*mult + 2**(shift-1)) >> shift); channels = 1 or cols. */
void requantize_s32_s8(const int32_t *x, const int32_t *mult, const int32_t *shift, int32_t channels, int8_t *out, int32_t rows, int32_t cols);
/* tinylm.graph.ops.requantize with an int8 shift tensor (the same values, 1..62): as requantize_s32_s8. */
void requantize_s32_s8_sh8(const int32_t *x, const int32_t *mult, const int8_t *shift, int32_t channels, int8_t *out, int32_t rows, int32_t cols);

/* tinylm.graph.ops.add_int8: out = clamp((a*ma + b*mb + 2**(shift-1)) >> shift), int64 inside. */
void add_s8(const int8_t *a, const int8_t *b, int8_t *out, int32_t count, int32_t ma, int32_t mb, int32_t shift);

/* tinylm.graph.ops.lut: out[i] = table[x[i] + 128], table[256]. */
void lut_s8(const int8_t *x, const int8_t *table, int8_t *out, int32_t count);

/* tinylm.graph.ops.transpose: out[cols,rows] = x[rows,cols]^T. */
void transpose_s8(const int8_t *x, int8_t *out, int32_t rows, int32_t cols);

/* tinylm.graph.ops.softmax_int: softmax over each row via exp lut[lut_len], output scale 1/127. */
void softmax_s32_s8(const int32_t *x, int8_t *out, int32_t rows, int32_t cols, int32_t mult, int32_t shift, const uint16_t *lut, int32_t lut_len);

/* tinylm.graph.ops.rmsnorm_int: integer RMSNorm of each row (cols <= 4096) times gain[cols], requantized. */
void rmsnorm_s8(const int8_t *x, const int8_t *gain, int8_t *out, int32_t rows, int32_t cols, int32_t mult, int32_t shift);

/* Fusion of tinylm.graph.ops.matmul_integer + add_int32 (bias, or NULL) + requantize (+ lut, or NULL):
 * out[m,n] int8 from x[m,k] and w[k,n] packed by codegen (codegen/pack.py); channels = 1 or n. */
int32_t fully_connected_s8_scratch_bytes(int32_t k, int32_t n);
void fully_connected_s8(const int8_t *x, const int8_t *w, const int32_t *bias, const int32_t *mult,
                        const int32_t *shift, int32_t channels, const int8_t *lut, int8_t *out,
                        int32_t m, int32_t k, int32_t n);

/* ---- EmbBERT-Q ---- */
#define TINYLM_SEP_ID 4

/* tinylm.graph.ops.segment_ids: out[t] = 1 up to and including the first [SEP] (id 4), 2 after. */
void segment_ids_s32(const int32_t *ids, int32_t n, int32_t *out);

/* tinylm.graph.ops.attention_int: Efficient Attention (keys = values = kv[n,d]) for m query rows,
 * row by row; scratch holds attention_s8_scratch_bytes(n, d) bytes (n + d int32). */
int32_t attention_s8_scratch_bytes(int32_t n, int32_t d);
void attention_s8(const int8_t *q, const int8_t *kv, int8_t *out, int32_t m, int32_t n, int32_t d,
                  int32_t mult, int32_t shift, const uint16_t *lut, int32_t lut_len,
                  int32_t out_mult, int32_t out_shift, int32_t *scratch);

/* tinylm.graph.ops.causal_dwconv_int: causal depthwise conv (w[k,d], bias[d]) of the whole x[.,d],
 * output rows t0 .. t0+rows-1 written to out[rows,d] (int32). */
void causal_dwconv_s8_s32(const int8_t *x, const int8_t *w, const int32_t *bias, int32_t *out,
                          int32_t t0, int32_t rows, int32_t d, int32_t k);

/* ---- binary (BiPFT-style): 32 values per uint32 word along the last axis, value c in word c / 32,
 * bit c % 32 (LSB first); bit 1 = +1, bit 0 = -1; a partial last word is padded with 0 bits. ---- */
#define TINYLM_B32_WORDS(k) (((k) + 31) / 32)

/* tinylm.graph.ops.binarize_int: out[rows, out_words] = sign bits of x[rows,k] + beta (bit 1 iff
 * x + beta >= 0), out_words >= TINYLM_B32_WORDS(k), the words past it 0; beta int32, channels = 1
 * (per tensor) or k (per column). */
void binarize_s8_b32(const int8_t *x, const int32_t *beta, int32_t channels, uint32_t *out,
                     int32_t rows, int32_t k, int32_t out_words);

/* tinylm.graph.ops.binary_matmul_int: out[m,n] = k - 2 popcount(a[i] ^ w[j]) over the k real bits of
 * the packed rows a[m, W], w[n, W] (W = TINYLM_B32_WORDS(k)); padding bits are masked. SWAR popcount. */
void binary_matmul_b32_s32(const uint32_t *a, const uint32_t *w, int32_t *out, int32_t m, int32_t n, int32_t k);

/* Fusion of tinylm.graph.ops.binary_matmul_int + add_int32 (bias) + requantize + binarize_int (codegen/binary.py):
 * out[m, TINYLM_B32_WORDS(n)] packed, bit j = (k - 2 popcount(a[i] ^ w[j])) >= thr[j], thresholds folded by codegen. */
void binary_dense_b32_b32(const uint32_t *a, const uint32_t *w, const int32_t *thr, uint32_t *out,
                          int32_t m, int32_t n, int32_t k);

/* tinylm.graph.ops.binary_mask_matmul_int: binary attention's context, out[m,d] =
 * 2 popcount(mask[i] & v[c]) - popcount(mask[i]) over all 32 words bits of mask[m, words] ({0,1},
 * padding 0) and v[d, words] (+-1 values packed along the key axis). */
void binary_mask_matmul_b32_s32(const uint32_t *mask, const uint32_t *v, int32_t *out, int32_t m, int32_t d,
                                int32_t words);

#ifdef __cplusplus
}
#endif

#endif /* TINYLM_KERNELS_H */
