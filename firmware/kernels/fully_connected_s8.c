/* fully_connected_s8 -- fusion of tinylm.graph.ops.matmul_integer + add_int32 (bias, optional)
 * + requantize (+ lut, optional): per row i and output column j,
 *   acc    = bias[j] + sum_p x[i,p] * w[p,j]          int32 (codegen proves every partial sum fits)
 *   y[i,j] = requantize(acc, mult[c], shift[c])       c = 0 (per tensor) or j (per channel)
 *   y[i,j] = lut[y[i,j] + 128]                         when lut != NULL
 * so the int32 row never goes through the arena. The weights come packed by codegen
 * (codegen/pack.py, pack_fc_weights) so that one 32-bit load gives four k-consecutive bytes of
 * one column: for each block of four columns j0..j0+3 (fewer in the last block, nb = n - j0),
 * starting at byte j0 * k,
 *   for each group g < k/4:  for c < nb: w[4g..4g+3, j0+c]      (4 bytes)
 *   then                     for c < nb: w[4(k/4)..k-1, j0+c]   (k % 4 bytes)
 * Same size as w, and every 4-byte word a block starts on is aligned (j0 * k with j0 % 4 == 0).
 * DSP path (__ARM_FEATURE_DSP): SXTB16 splits x's word into (x0,x2) and (x1,x3) once per four
 * columns and each weight word the same way, so two SMLAD do four MACs. Portable path: the
 * same packed order in plain C (host, cores without DSP). Integer adds are exact in any order
 * here, so both paths give the spec's result bit for bit. */
#include "tinylm_kernels.h"
#include "tinylm_fixedpoint.h"
#include "tinylm_dsp.h"

int32_t fully_connected_s8_scratch_bytes(int32_t k, int32_t n)
{
    (void)k;
    (void)n;
    return 0;
}

static inline int8_t fc_finish(int32_t acc, const int32_t *mult, const int32_t *shift, int32_t c,
                               const int8_t *lut)
{
    int8_t y = tinylm_requantize_s32(acc, mult[c], shift[c]);
    return lut ? lut[(int32_t)y + 128] : y;
}

/* one column of a block of nb columns: the scalar form of the layout, used for the last
 * block (n % 4 columns) everywhere and for every block on the portable path */
static int32_t fc_column(const int8_t *xr, const int8_t *wb, int32_t k, int32_t nb, int32_t c, int32_t acc)
{
    int32_t kq = k >> 2, g, p;
    const int8_t *wc = wb + 4 * c;
    for (g = 0; g < kq; ++g) {
        const int8_t *xg = xr + 4 * g;
        acc += (int32_t)xg[0] * wc[0] + (int32_t)xg[1] * wc[1] + (int32_t)xg[2] * wc[2]
             + (int32_t)xg[3] * wc[3];
        wc += 4 * nb;
    }
    wc = wb + 4 * kq * nb + (k & 3) * c;
    for (p = 4 * kq; p < k; ++p) {
        acc += (int32_t)xr[p] * wc[p - 4 * kq];
    }
    return acc;
}

#ifdef TINYLM_DSP
typedef int32_t __attribute__((aligned(4), may_alias)) fc_aligned_i32;

/* One block of four columns, start to finish: y[j0..j0+3] of one row. Its own function (not
 * inlined) so that gcc keeps the four sums, both x halves and the pointers in registers:
 * 24 instructions per 16 MACs (one LDR of x, two LDRD of weights, ten SXTB16, eight SMLAD,
 * the loop). Weight words are aligned (see the layout), x words need not be. */
__attribute__((noinline)) static void fc_block4_dsp(const int8_t *xr, const int8_t *wb, int32_t k,
                                                    const int32_t *bias, const int32_t *mult,
                                                    const int32_t *shift, int32_t cs, const int8_t *lut,
                                                    int8_t *yr)
{
    int32_t a0 = 0, a1 = 0, a2 = 0, a3 = 0, p;
    const fc_aligned_i32 *w4 = (const fc_aligned_i32 *)(const void *)wb;
    const int8_t *xp = xr, *end = xr + (k & ~3), *wt;
    int32_t kr = k & 3;
    if (bias) {
        a0 = bias[0];
        a1 = bias[1];
        a2 = bias[2];
        a3 = bias[3];
    }
    while (xp != end) {
        int32_t xv = tinylm_ld32(xp);
        int32_t xa = tinylm_sxtb16(xv), xb = tinylm_sxtb16_ror8(xv);
        int32_t w0 = w4[0], w1 = w4[1], w2 = w4[2], w3 = w4[3];
        a0 = tinylm_smlad(xa, tinylm_sxtb16(w0), a0);
        a0 = tinylm_smlad(xb, tinylm_sxtb16_ror8(w0), a0);
        a1 = tinylm_smlad(xa, tinylm_sxtb16(w1), a1);
        a1 = tinylm_smlad(xb, tinylm_sxtb16_ror8(w1), a1);
        a2 = tinylm_smlad(xa, tinylm_sxtb16(w2), a2);
        a2 = tinylm_smlad(xb, tinylm_sxtb16_ror8(w2), a2);
        a3 = tinylm_smlad(xa, tinylm_sxtb16(w3), a3);
        a3 = tinylm_smlad(xb, tinylm_sxtb16_ror8(w3), a3);
        xp += 4;
        w4 += 4;
    }
    wt = (const int8_t *)w4; /* the k % 4 tail: column c's bytes at wt + c * kr */
    for (p = 0; p < kr; ++p) {
        int32_t xv = xp[p];
        a0 += xv * wt[p];
        a1 += xv * wt[kr + p];
        a2 += xv * wt[2 * kr + p];
        a3 += xv * wt[3 * kr + p];
    }
    /* mult/shift point at this block's channels; cs = 0: the one per-tensor pair */
    yr[0] = fc_finish(a0, mult, shift, 0, lut);
    yr[1] = fc_finish(a1, mult, shift, cs, lut);
    yr[2] = fc_finish(a2, mult, shift, 2 * cs, lut);
    yr[3] = fc_finish(a3, mult, shift, 3 * cs, lut);
}
#endif

void fully_connected_s8(const int8_t *x, const int8_t *w, const int32_t *bias, const int32_t *mult,
                        const int32_t *shift, int32_t channels, const int8_t *lut, int8_t *out,
                        int32_t m, int32_t k, int32_t n)
{
    int32_t i, j0, c, cs = (channels == 1) ? 0 : 1;
    for (i = 0; i < m; ++i) {
        const int8_t *xr = x + i * k;
        int8_t *yr = out + i * n;
        for (j0 = 0; j0 < n; j0 += 4) {
            const int8_t *wb = w + j0 * k;
            int32_t nb = (n - j0 < 4) ? n - j0 : 4;
#ifdef TINYLM_DSP
            if (nb == 4) {
                fc_block4_dsp(xr, wb, k, bias ? bias + j0 : NULL, mult + cs * j0, shift + cs * j0, cs,
                              lut, yr + j0);
                continue;
            }
#endif
            for (c = 0; c < nb; ++c) {
                int32_t acc = fc_column(xr, wb, k, nb, c, bias ? bias[j0 + c] : 0);
                yr[j0 + c] = fc_finish(acc, mult, shift, cs * (j0 + c), lut);
            }
        }
    }
}
