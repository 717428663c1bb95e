/* fully_connected_s8 -- fusion of tinylm.graph.ops.matmul_integer + add_int32 (bias, optional)
 * + requantize (+ lut, optional): per row i and output column j,
 *   acc    = bias[j] + sum_p x[i,p] * w[p,j]          int32 (codegen proves every partial sum fits)
 *   y[i,j] = requantize(acc, mult[c], shift[c])       c = 0 (per tensor) or j (per channel)
 *   y[i,j] = lut[y[i,j] + 128]                         when lut != NULL
 * so the int32 row never goes through the arena. The weights come packed by codegen
 * (codegen/fuse.py, pack_fc_weights) so that one 32-bit load gives four k-consecutive bytes of
 * one column: for each block of four columns j0..j0+3 (fewer in the last block, nb = n - j0),
 * starting at byte j0 * k,
 *   for each group g < k/4:  for c < nb: w[4g..4g+3, j0+c]      (4 bytes)
 *   then                     for c < nb: w[4(k/4)..k-1, j0+c]   (k % 4 bytes)
 * Same size as w, and every 4-byte word a block starts on is aligned (j0 * k with j0 % 4 == 0).
 * DSP path (__ARM_FEATURE_DSP): SXTB16 splits x's word into (x0,x2) and (x1,x3) once per four
 * columns and each weight word the same way, so two SMLAD do four MACs. Portable path: the
 * same packed order in plain C (host, cores without DSP). Rows go two per weight pass where m >= 2
 * (codegen's row tiles of 2 or more rows, `tinylm build --rows-per-pass`): on the DSP path a 2x2
 * register-blocked GEMM shares every weight word between the rows. Integer adds are exact in any order
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

/* x rows of at most this many int8 take the two-row path (its split copy of x lives on the
 * stack: 2 * FC_SPLIT_K * 2 bytes) */
#define FC_SPLIT_K 256

#ifdef TINYLM_DSP
typedef int32_t __attribute__((aligned(4), may_alias)) fc_aligned_i32;

/* requantize (+ lut) of one sum: for shift >= 33 the high-word form of tinylm_requantize_s32
 * in three instructions, SMMLA (hi + 2**(shift-33)), ASR, SSAT; smaller shifts: the int64 form.
 * lut128 = lut + 128 (NULL: none). */
static inline int8_t fc_out(int32_t acc, int32_t mult, int32_t shift, const int8_t *lut128)
{
    int32_t y;
    if (shift >= 33) {
        y = tinylm_ssat8(tinylm_smmla(acc, mult, (int32_t)1 << (shift - 33)) >> (shift - 32));
    } else {
        y = tinylm_requantize_s8(acc, mult, shift);
    }
    return lut128 ? lut128[y] : (int8_t)y;
}

/* Every full block of four columns of one row, the loop in inline assembly (gcc's allocation spilled
 * or split the loads): one LDR of x, one LDM of the four weight words, ten SXTB16, eight SMLAD,
 * CMP/BNE: 22 instructions per 16 MACs, 14 registers. Weight words are aligned (the layout),
 * x words need not be. */
__attribute__((noinline)) static void fc_row1_dsp(const int8_t *xr, const int8_t *w, int32_t k,
                                                  const int32_t *bias, const int32_t *mult,
                                                  const int32_t *shift, int32_t cs, const int8_t *lut128,
                                                  int8_t *yr, int32_t nfull)
{
    /* the four weight words by one LDM, whose register list must ascend: pinned */
    register int32_t w0 __asm__("r8"), w1 __asm__("r9"), w2 __asm__("r10"), w3 __asm__("r11");
    int32_t j0;
    for (j0 = 0; j0 < nfull; j0 += 4) {
        int32_t a0 = 0, a1 = 0, a2 = 0, a3 = 0, p;
        const fc_aligned_i32 *w4 = (const fc_aligned_i32 *)(const void *)(w + j0 * k);
        const int8_t *xp = xr, *end = xr + (k & ~3), *wt;
        int32_t kr = k & 3;
        if (bias) {
            a0 = bias[j0];
            a1 = bias[j0 + 1];
            a2 = bias[j0 + 2];
            a3 = bias[j0 + 3];
        }
        if (xp != end) {
            int32_t xa, xb, t;
            __asm__ volatile(
                "1:\n\t"
                "ldr    %[xb], [%[xp]], #4\n\t"
                "ldmia  %[w4]!, {%[w0], %[w1], %[w2], %[w3]}\n\t"
                "sxtb16 %[xa], %[xb]\n\t"
                "sxtb16 %[xb], %[xb], ror #8\n\t"
                "sxtb16 %[t], %[w0]\n\t"
                "smlad  %[a0], %[xa], %[t], %[a0]\n\t"
                "sxtb16 %[w0], %[w0], ror #8\n\t"
                "smlad  %[a0], %[xb], %[w0], %[a0]\n\t"
                "sxtb16 %[t], %[w1]\n\t"
                "smlad  %[a1], %[xa], %[t], %[a1]\n\t"
                "sxtb16 %[w1], %[w1], ror #8\n\t"
                "smlad  %[a1], %[xb], %[w1], %[a1]\n\t"
                "sxtb16 %[t], %[w2]\n\t"
                "smlad  %[a2], %[xa], %[t], %[a2]\n\t"
                "sxtb16 %[w2], %[w2], ror #8\n\t"
                "smlad  %[a2], %[xb], %[w2], %[a2]\n\t"
                "sxtb16 %[t], %[w3]\n\t"
                "smlad  %[a3], %[xa], %[t], %[a3]\n\t"
                "sxtb16 %[w3], %[w3], ror #8\n\t"
                "smlad  %[a3], %[xb], %[w3], %[a3]\n\t"
                "cmp    %[xp], %[end]\n\t"
                "bne    1b\n\t"
                : [a0] "+r"(a0), [a1] "+r"(a1), [a2] "+r"(a2), [a3] "+r"(a3), [xp] "+r"(xp), [w4] "+r"(w4),
                  [w0] "=&r"(w0), [w1] "=&r"(w1), [w2] "=&r"(w2), [w3] "=&r"(w3), [xa] "=&r"(xa), [xb] "=&r"(xb),
                  [t] "=&r"(t)
                : [end] "r"(end)
                : "cc", "memory");
        }
        wt = (const int8_t *)w4; /* the k % 4 tail: column c's bytes at wt + c * kr */
        for (p = 0; p < kr; ++p) {
            int32_t xv = xp[p];
            a0 += xv * wt[p];
            a1 += xv * wt[kr + p];
            a2 += xv * wt[2 * kr + p];
            a3 += xv * wt[3 * kr + p];
        }
        { /* cs = 0: the one per-tensor pair; loaded before the stores, which may alias anything */
            const int32_t *mb = mult + cs * j0, *sb = shift + cs * j0;
            int32_t m0 = mb[0], s0 = sb[0], m1 = mb[cs], s1 = sb[cs];
            int32_t m2 = mb[2 * cs], s2 = sb[2 * cs], m3 = mb[3 * cs], s3 = sb[3 * cs];
            yr[j0] = fc_out(a0, m0, s0, lut128);
            yr[j0 + 1] = fc_out(a1, m1, s1, lut128);
            yr[j0 + 2] = fc_out(a2, m2, s2, lut128);
            yr[j0 + 3] = fc_out(a3, m3, s3, lut128);
        }
    }
}

/* Two rows, two columns (j, j+1 of a full block) per weight pass, for every full block: a 2x2
 * register-blocked GEMM. Both x rows are split once per call into SXTB16 halves, words
 * (x0, x2), (x1, x3) per k-group, so one LDRD gives a row's two halves. Each pair of weight words
 * (one LDRD) is split once and feeds both rows: 16 MACs in 17 instructions (three LDRD, four
 * SXTB16, eight SMLAD, CMP/BNE), 14 registers. Then the k % 4 tail and the four outputs; one
 * mult/shift load per column serves both rows. Needs k <= FC_SPLIT_K. */
__attribute__((noinline)) static void fc_rows2_dsp(const int8_t *x0, const int8_t *wall, int32_t k,
                                                   const int32_t *bias, const int32_t *mult,
                                                   const int32_t *shift, int32_t cs, const int8_t *lut128,
                                                   int8_t *y0, int32_t n, int32_t nfull)
{
    int32_t j, g, kq = k >> 2;
    const int8_t *x1 = x0 + k;
    int32_t xs0[FC_SPLIT_K / 2], xs1[FC_SPLIT_K / 2];
    for (g = 0; g < kq; ++g) {
        int32_t v0 = tinylm_ld32(x0 + 4 * g), v1 = tinylm_ld32(x1 + 4 * g);
        xs0[2 * g] = tinylm_sxtb16(v0);
        xs0[2 * g + 1] = tinylm_sxtb16_ror8(v0);
        xs1[2 * g] = tinylm_sxtb16(v1);
        xs1[2 * g + 1] = tinylm_sxtb16_ror8(v1);
    }
    for (j = 0; j < nfull; j += 2) { /* columns j, j+1 of the block at j & ~3 */
        int32_t kr = k & 3, p, h = j & 2;
        const int8_t *wb = wall + (j - h) * k, *xa0 = x0 + 4 * kq, *xa1 = x1 + 4 * kq;
        const int8_t *wt = wb + 16 * kq + kr * h; /* column j's k % 4 tail */
        const int32_t *xp0 = xs0, *xp1 = xs1;
        int32_t a00 = bias ? bias[j] : 0, a01 = bias ? bias[j + 1] : 0, a10 = a00, a11 = a01;
        const fc_aligned_i32 *w = (const fc_aligned_i32 *)(const void *)(wb + 4 * h), *end = w + 4 * kq;
        if (w != end) {
            int32_t w0, w1, w0a, w1a, xa, xb;
            __asm__ volatile(
                "1:\n\t"
                "ldrd   %[w0], %[w1], [%[w]], #16\n\t"
                "ldrd   %[xa], %[xb], [%[x0]], #8\n\t"
                "sxtb16 %[w0a], %[w0]\n\t"
                "sxtb16 %[w0], %[w0], ror #8\n\t"
                "sxtb16 %[w1a], %[w1]\n\t"
                "sxtb16 %[w1], %[w1], ror #8\n\t"
                "smlad  %[a00], %[xa], %[w0a], %[a00]\n\t"
                "smlad  %[a00], %[xb], %[w0], %[a00]\n\t"
                "smlad  %[a01], %[xa], %[w1a], %[a01]\n\t"
                "smlad  %[a01], %[xb], %[w1], %[a01]\n\t"
                "ldrd   %[xa], %[xb], [%[x1]], #8\n\t"
                "smlad  %[a10], %[xa], %[w0a], %[a10]\n\t"
                "smlad  %[a10], %[xb], %[w0], %[a10]\n\t"
                "smlad  %[a11], %[xa], %[w1a], %[a11]\n\t"
                "smlad  %[a11], %[xb], %[w1], %[a11]\n\t"
                "cmp    %[w], %[end]\n\t"
                "bne    1b\n\t"
                : [a00] "+r"(a00), [a01] "+r"(a01), [a10] "+r"(a10), [a11] "+r"(a11), [x0] "+r"(xp0), [x1] "+r"(xp1),
                  [w] "+r"(w), [w0] "=&r"(w0), [w1] "=&r"(w1), [w0a] "=&r"(w0a), [w1a] "=&r"(w1a), [xa] "=&r"(xa),
                  [xb] "=&r"(xb)
                : [end] "r"(end)
                : "cc", "memory");
        }
        for (p = 0; p < kr; ++p) {
            int32_t v0 = xa0[p], v1 = xa1[p];
            a00 += v0 * wt[p];
            a01 += v0 * wt[kr + p];
            a10 += v1 * wt[p];
            a11 += v1 * wt[kr + p];
        }
        { /* loaded before the stores, which may alias anything */
            int32_t m0 = mult[cs * j], s0 = shift[cs * j], m1 = mult[cs * (j + 1)], s1 = shift[cs * (j + 1)];
            y0[j] = fc_out(a00, m0, s0, lut128);
            y0[n + j] = fc_out(a10, m0, s0, lut128);
            y0[j + 1] = fc_out(a01, m1, s1, lut128);
            y0[n + j + 1] = fc_out(a11, m1, s1, lut128);
        }
    }
}
#endif

void fully_connected_s8(const int8_t *x, const int8_t *w, const int32_t *bias, const int32_t *mult,
                        const int32_t *shift, int32_t channels, const int8_t *lut, int8_t *out,
                        int32_t m, int32_t k, int32_t n)
{
    int32_t i, j0, c, r, rr, cs = (channels == 1) ? 0 : 1, nfull = 0;
    for (i = 0; i < m; i += r) {
        const int8_t *xr = x + i * k;
        int8_t *yr = out + i * n;
        /* rows per weight pass (row tiles of 2 or more) */
        r = (i + 2 <= m && n >= 4 && k <= FC_SPLIT_K) ? 2 : 1;
#ifdef TINYLM_DSP
        nfull = n & ~3; /* the full blocks of four columns */
        if (r == 2) {
            fc_rows2_dsp(xr, w, k, bias, mult, shift, cs, lut ? lut + 128 : NULL, yr, n, nfull);
        } else {
            fc_row1_dsp(xr, w, k, bias, mult, shift, cs, lut ? lut + 128 : NULL, yr, nfull);
        }
#endif
        for (j0 = nfull; j0 < n; j0 += 4) {
            const int8_t *wb = w + j0 * k;
            int32_t nb = (n - j0 < 4) ? n - j0 : 4;
            for (rr = 0; rr < r; ++rr) {
                for (c = 0; c < nb; ++c) {
                    int32_t acc = fc_column(xr + rr * k, wb, k, nb, c, bias ? bias[j0 + c] : 0);
                    yr[rr * n + j0 + c] = fc_finish(acc, mult, shift, cs * (j0 + c), lut);
                }
            }
        }
    }
}
