/* attention_s8 -- twin of tinylm.graph.ops.attention_int (ai.tinylm.AttentionInt): EmbBERT's
 * Efficient Attention (keys = values = kv) one query row at a time, so the m x n score
 * matrix never exists. Per query row i:
 *   s[j]   = q[i] . kv[j]                              int32 (|s| <= d * 2**14)
 *   e[j]   = exp lut of ((max - s[j]) * mult + 2**(shift-1)) >> shift   (uint64 index)
 *   p[j]   = (e[j] * 127 + sum/2) / sum                in [0, 127], as softmax_s32_s8
 *   acc[c] = sum_j p[j] * kv[j, c]                     int32 (|acc| <= n * 127 * 128)
 *   y[i,c] = requantize(acc[c], out_mult, out_shift)
 * scratch: n + d int32 (attention_s8_scratch_bytes): s/e/p in place, then one output row.
 * Needs n >= 1, lut[0] > 0, n < 65537, and codegen's bounds on d and n. */
#include "tinylm_kernels.h"
#include "tinylm_fixedpoint.h"
#include "tinylm_dsp.h"

int32_t attention_s8_scratch_bytes(int32_t n, int32_t d)
{
    return 4 * (n + d);
}

#ifdef TINYLM_DSP
/* acc[0 .. d4) += p0 v0 + p1 v1 + p2 v2 + p3 v3 for the value rows v0 .. v0 + 3d (d4 = d & ~3,
 * acc word-aligned). Per four columns and four rows (16 MACs): LDM/STM of the four sums, four LDR
 * of value words, SXTB16 into (c0, c2) and (c1, c3), and SMLA<x><y> picks the byte half and the
 * probability half (p01 = p0 | p1 << 16): 32 instructions, against about 50 in C. Exact: int16
 * products and sums bounded by codegen (n * 127 * 128 < 2**31). The sums' LDM/STM need an
 * ascending register list, so they are pinned. */
__attribute__((noinline)) static void att_pv4_dsp(int32_t *acc, const int8_t *v0, int32_t d, int32_t d4,
                                                  int32_t p01, int32_t p23)
{
    register int32_t a0 __asm__("r8"), a1 __asm__("r9"), a2 __asm__("r10"), a3 __asm__("r11");
    const int8_t *v2 = v0 + 2 * d;
    int32_t *end = acc + d4, w, x, t;
    if (d4 == 0) {
        return;
    }
    __asm__ volatile(
        "1:\n\t"
        "ldmia  %[acc], {%[a0], %[a1], %[a2], %[a3]}\n\t"
        "ldr    %[w], [%[v0], %[d]]\n\t"
        "ldr    %[x], [%[v0]], #4\n\t"
        "sxtb16 %[t], %[x], ror #8\n\t"
        "sxtb16 %[x], %[x]\n\t"
        "smlabb %[a0], %[x], %[p01], %[a0]\n\t"
        "smlatb %[a2], %[x], %[p01], %[a2]\n\t"
        "smlabb %[a1], %[t], %[p01], %[a1]\n\t"
        "smlatb %[a3], %[t], %[p01], %[a3]\n\t"
        "sxtb16 %[t], %[w], ror #8\n\t"
        "sxtb16 %[w], %[w]\n\t"
        "smlabt %[a0], %[w], %[p01], %[a0]\n\t"
        "smlatt %[a2], %[w], %[p01], %[a2]\n\t"
        "smlabt %[a1], %[t], %[p01], %[a1]\n\t"
        "smlatt %[a3], %[t], %[p01], %[a3]\n\t"
        "ldr    %[w], [%[v2], %[d]]\n\t"
        "ldr    %[x], [%[v2]], #4\n\t"
        "sxtb16 %[t], %[x], ror #8\n\t"
        "sxtb16 %[x], %[x]\n\t"
        "smlabb %[a0], %[x], %[p23], %[a0]\n\t"
        "smlatb %[a2], %[x], %[p23], %[a2]\n\t"
        "smlabb %[a1], %[t], %[p23], %[a1]\n\t"
        "smlatb %[a3], %[t], %[p23], %[a3]\n\t"
        "sxtb16 %[t], %[w], ror #8\n\t"
        "sxtb16 %[w], %[w]\n\t"
        "smlabt %[a0], %[w], %[p23], %[a0]\n\t"
        "smlatt %[a2], %[w], %[p23], %[a2]\n\t"
        "smlabt %[a1], %[t], %[p23], %[a1]\n\t"
        "smlatt %[a3], %[t], %[p23], %[a3]\n\t"
        "stmia  %[acc]!, {%[a0], %[a1], %[a2], %[a3]}\n\t"
        "cmp    %[acc], %[end]\n\t"
        "bne    1b\n\t"
        : [a0] "=&r"(a0), [a1] "=&r"(a1), [a2] "=&r"(a2), [a3] "=&r"(a3), [acc] "+r"(acc), [v0] "+r"(v0),
          [v2] "+r"(v2), [w] "=&r"(w), [x] "=&r"(x), [t] "=&r"(t)
        : [d] "r"(d), [end] "r"(end), [p01] "r"(p01), [p23] "r"(p23)
        : "cc", "memory");
}
#endif

void attention_s8(const int8_t *q, const int8_t *kv, int8_t *out, int32_t m, int32_t n, int32_t d,
                  int32_t mult, int32_t shift, const uint16_t *lut, int32_t lut_len,
                  int32_t out_mult, int32_t out_shift, int32_t *scratch)
{
    int32_t *s = scratch;      /* [n]: scores, then exp values, then probabilities */
    int32_t *acc = scratch + n; /* [d] */
    uint64_t last = (uint64_t)(lut_len - 1);
    int32_t i, j, c;
    for (i = 0; i < m; ++i) {
        const int8_t *qr = q + i * d;
        int32_t mx;
        uint32_t sum = 0;
        /* scores, four keys at a time: each q[i][c] is loaded once for four MACs */
        for (j = 0; j + 4 <= n; j += 4) {
            const int8_t *k0 = kv + j * d, *k1 = k0 + d, *k2 = k1 + d, *k3 = k2 + d;
            int32_t d0 = 0, d1 = 0, d2 = 0, d3 = 0;
            c = 0;
#ifdef TINYLM_DSP
            /* one word of q split by SXTB16 feeds two SMLAD per key: 4 MACs per key per word */
            for (; c + 4 <= d; c += 4) {
                int32_t qv = tinylm_ld32(qr + c);
                int32_t qe = tinylm_sxtb16(qv), qo = tinylm_sxtb16_ror8(qv);
                int32_t v0 = tinylm_ld32(k0 + c), v1 = tinylm_ld32(k1 + c);
                int32_t v2 = tinylm_ld32(k2 + c), v3 = tinylm_ld32(k3 + c);
                d0 = tinylm_smlad(qe, tinylm_sxtb16(v0), d0);
                d0 = tinylm_smlad(qo, tinylm_sxtb16_ror8(v0), d0);
                d1 = tinylm_smlad(qe, tinylm_sxtb16(v1), d1);
                d1 = tinylm_smlad(qo, tinylm_sxtb16_ror8(v1), d1);
                d2 = tinylm_smlad(qe, tinylm_sxtb16(v2), d2);
                d2 = tinylm_smlad(qo, tinylm_sxtb16_ror8(v2), d2);
                d3 = tinylm_smlad(qe, tinylm_sxtb16(v3), d3);
                d3 = tinylm_smlad(qo, tinylm_sxtb16_ror8(v3), d3);
            }
#endif
            for (; c < d; ++c) {
                int32_t qv = qr[c];
                d0 += qv * (int32_t)k0[c];
                d1 += qv * (int32_t)k1[c];
                d2 += qv * (int32_t)k2[c];
                d3 += qv * (int32_t)k3[c];
            }
            s[j] = d0;
            s[j + 1] = d1;
            s[j + 2] = d2;
            s[j + 3] = d3;
        }
        for (; j < n; ++j) {
            const int8_t *kr = kv + j * d;
            int32_t dot = 0;
            for (c = 0; c < d; ++c) {
                dot += (int32_t)qr[c] * (int32_t)kr[c];
            }
            s[j] = dot;
        }
        mx = s[0];
        for (j = 1; j < n; ++j) {
            if (s[j] > mx) {
                mx = s[j];
            }
        }
        for (j = 0; j < n; ++j) {
            /* mx - s in [0, 2**32), mult < 2**31: product < 2**63, + half cannot wrap uint64 */
            uint64_t diff = (uint64_t)((int64_t)mx - (int64_t)s[j]);
            uint64_t z = tinylm_round_shift_u64(diff * (uint64_t)mult, shift);
            uint16_t e = lut[(z < last) ? z : last];
            s[j] = (int32_t)e;
            sum += e;
        }
        for (c = 0; c < d; ++c) {
            acc[c] = 0;
        }
        for (j = 0; j < n; ++j) {
            /* e <= 65535, sum < 2**32: e * 127 + sum / 2 < 2**32; p <= 127 */
            s[j] = (int32_t)(((uint32_t)s[j] * 127u + (sum >> 1)) / sum);
        }
        /* acc += p . kv, four value rows at a time: one load/store of acc[c] per four MACs.
         * Exact in any order: every partial sum is bounded by n * 127 * 128 < 2**31. */
        for (j = 0; j + 4 <= n; j += 4) {
            const int8_t *v0 = kv + j * d, *v1 = v0 + d, *v2 = v1 + d, *v3 = v2 + d;
            int32_t p0 = s[j], p1 = s[j + 1], p2 = s[j + 2], p3 = s[j + 3];
            c = 0;
#ifdef TINYLM_DSP
            att_pv4_dsp(acc, v0, d, d & ~3, p0 | (p1 << 16), p2 | (p3 << 16)); /* 0 <= p <= 127 */
            c = d & ~3;
#endif
            for (; c < d; ++c) {
                acc[c] += p0 * (int32_t)v0[c] + p1 * (int32_t)v1[c] + p2 * (int32_t)v2[c] + p3 * (int32_t)v3[c];
            }
        }
        for (; j < n; ++j) {
            const int8_t *vr = kv + j * d;
            int32_t p = s[j];
            for (c = 0; c < d; ++c) {
                acc[c] += p * (int32_t)vr[c];
            }
        }
        for (c = 0; c < d; ++c) {
            out[i * d + c] = tinylm_requantize_s32(acc[c], out_mult, out_shift);
        }
    }
}
