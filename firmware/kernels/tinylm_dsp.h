/* Helpers for the Armv7E-M / Armv8-M DSP path of the int8 kernels (cores with
 * __ARM_FEATURE_DSP: Cortex-M4, M7, M33, M55). Everything else uses the portable C loops.
 *
 * tinylm_ld32: a 32-bit read of four int8 that compiles to one LDR. memcpy would be the
 * portable idiom, but under -ffreestanding gcc keeps it a library call; a may_alias,
 * aligned(1) type is an ordinary load (Armv7-M LDR allows unaligned addresses; LDRD/LDM
 * would not, and gcc does not pair aligned(1) loads into them). Checked in the disassembly
 * by tests/test_kernels_qemu.py. */
#ifndef TINYLM_DSP_H
#define TINYLM_DSP_H
#include <stdint.h>

typedef int32_t __attribute__((aligned(1), may_alias)) tinylm_unaligned_i32;

static inline int32_t tinylm_ld32(const int8_t *p)
{
    return *(const tinylm_unaligned_i32 *)(const void *)p;
}

#if defined(__ARM_FEATURE_DSP) && !defined(TINYLM_NO_DSP)
#define TINYLM_DSP 1
#include <arm_acle.h>

/* bytes 0 and 2 sign-extended to two halfwords */
static inline int32_t tinylm_sxtb16(int32_t v)
{
    return __sxtb16(v);
}

/* bytes 1 and 3: gcc 12's arm_acle.h has no __ror, and a C rotate stays a separate MOV,
 * so the rotation is folded into SXTB16 by hand (one instruction instead of two). */
static inline int32_t tinylm_sxtb16_ror8(int32_t v)
{
    int32_t r;
    __asm__("sxtb16 %0, %1, ror #8" : "=r"(r) : "r"(v));
    return r;
}

/* acc + lo(a)*lo(b) + hi(a)*hi(b); exact here because codegen bounds every partial sum */
static inline int32_t tinylm_smlad(int32_t a, int32_t b, int32_t acc)
{
    return __smlad(a, b, acc);
}

/* c + the high word of a * b (SMMLA: floor((c * 2**32 + a * b) / 2**32), exact) */
static inline int32_t tinylm_smmla(int32_t a, int32_t b, int32_t c)
{
    int32_t r;
    __asm__("smmla %0, %1, %2, %3" : "=r"(r) : "r"(a), "r"(b), "r"(c));
    return r;
}

/* clamp to [-128, 127] (SSAT #8) */
static inline int32_t tinylm_ssat8(int32_t v)
{
    int32_t r;
    __asm__("ssat %0, #8, %1" : "=r"(r) : "r"(v));
    return r;
}
#endif

#endif /* TINYLM_DSP_H */
