/* Shared fixed-point helpers for the tinylm kernels: the rounding, saturation and
 * square root of tinylm/graph/ops.py, written once so every kernel says the same thing. */
#ifndef TINYLM_FIXEDPOINT_H
#define TINYLM_FIXEDPOINT_H
#include <stdint.h>

/* The spec floors negative values with >>. C99 leaves >> of a negative value
 * implementation-defined; gcc (host and arm-none-eabi) defines it as arithmetic. */
#if (-1 >> 1) != -1
#error "tinylm kernels need an arithmetic right shift of negative values"
#endif

/* ops._round_shift: (v + 2**(shift-1)) >> shift, round half up, 1 <= shift <= 62.
 * The caller guarantees v + 2**(shift-1) fits int64 (each kernel's spec bounds v).
 * The shifted constant is positive, so no negative value is ever left-shifted. */
static inline int64_t tinylm_round_shift_s64(int64_t v, int32_t shift)
{
    return (v + ((int64_t)1 << (shift - 1))) >> shift;
}

/* Same rounding on uint64 (softmax: v < 2**63, so v + 2**61 cannot wrap). */
static inline uint64_t tinylm_round_shift_u64(uint64_t v, int32_t shift)
{
    return (v + ((uint64_t)1 << (shift - 1))) >> shift;
}

/* Clamp to [-128, 127]: saturate, never wrap. */
static inline int8_t tinylm_sat_s8(int64_t v)
{
    if (v < INT8_MIN) {
        return INT8_MIN;
    }
    if (v > INT8_MAX) {
        return INT8_MAX;
    }
    return (int8_t)v;
}

/* ops.requantize for one value: clamp((v * mult + 2**(shift-1)) >> shift).
 * 0 <= mult < 2**31 and |v| <= 2**31 keep |v * mult| < 2**62, so v * mult and the
 * added half fit int64. */
static inline int8_t tinylm_requantize_s8(int64_t v, int32_t mult, int32_t shift)
{
    return tinylm_sat_s8(tinylm_round_shift_s64(v * (int64_t)mult, shift));
}

/* Clamp an int32 to [-128, 127]. (An SSAT by inline assembly measured no better overall on
 * the M4: 2 instructions fewer per output in fully_connected_s8, 5 more in attention_s8.) */
static inline int8_t tinylm_sat_s32_s8(int32_t v)
{
    return (int8_t)(v < INT8_MIN ? INT8_MIN : (v > INT8_MAX ? INT8_MAX : v));
}

/* ops.requantize for an int32 value, in a cheaper form that is exactly equal to it.
 * Write v * mult = hi * 2**32 + lo with 0 <= lo < 2**32 (hi: the high word of one 32x32->64
 * SMULL). For shift >= 33,
 *   (v*mult + 2**(shift-1)) >> shift = floor(((hi + 2**(shift-33)) + lo / 2**32) / 2**(shift-32))
 *                                    = (hi + 2**(shift-33)) >> (shift-32)
 * because floor((N + f) / D) = floor(N / D) for an integer N, an integer D >= 1 and 0 <= f < 1.
 * |v * mult| < 2**62 gives |hi| <= 2**30, so hi + 2**29 cannot overflow. The 64-bit add and
 * the 64-bit variable shift disappear; smaller shifts (rare: quantized scales put them at
 * 36..46) take the int64 form of the spec. tests/test_kernels.py checks both on the spec. */
static inline int8_t tinylm_requantize_s32(int32_t v, int32_t mult, int32_t shift)
{
    if (shift >= 33) {
        int32_t hi = (int32_t)(((int64_t)v * (int64_t)mult) >> 32);
        return tinylm_sat_s32_s8((hi + ((int32_t)1 << (shift - 33))) >> (shift - 32));
    }
    return tinylm_requantize_s8(v, mult, shift);
}

/* ops.isqrt: exact floor square root of any uint64, bit by bit (no floating point).
 * Classic digit-by-digit method: r collects result bits from the top; r + bit never
 * wraps because r < 2**32 and bit <= 2**62. */
static inline uint64_t tinylm_isqrt_u64(uint64_t v)
{
    uint64_t r = 0;
    uint64_t bit = (uint64_t)1 << 62; /* highest power of four in a uint64 */
    while (bit > v) {
        bit >>= 2;
    }
    while (bit != 0) {
        if (v >= r + bit) {
            v -= r + bit;
            r = (r >> 1) + bit;
        } else {
            r >>= 1;
        }
        bit >>= 2;
    }
    return r;
}

#endif /* TINYLM_FIXEDPOINT_H */
