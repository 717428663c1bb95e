/* SWAR popcount pieces shared by the binary kernels (Cortex-M4/M33 have no popcount
 * instruction, and a __popcountsi2 call per word would be slow). byte_sums leaves the popcount
 * of each byte of v in that byte; up to 31 such results can be added before a byte overflows
 * (31 * 8 = 248 <= 255); fold_bytes then sums the four bytes. m1, m2, m4 are 0x55555555,
 * 0x33333333, 0x0F0F0F0F, passed in so the caller keeps them in registers. */
#ifndef TINYLM_POPCOUNT_H
#define TINYLM_POPCOUNT_H

#include <stdint.h>

static inline uint32_t byte_sums(uint32_t v, uint32_t m1, uint32_t m2, uint32_t m4)
{
    v = v - ((v >> 1) & m1);
    v = (v & m2) + ((v >> 2) & m2);
    return (v + (v >> 4)) & m4;
}

static inline int32_t fold_bytes(uint32_t v) /* sum of the four bytes (each <= 255) */
{
    v = (v & 0x00FF00FFu) + ((v >> 8) & 0x00FF00FFu);
    return (int32_t)((v + (v >> 16)) & 0xFFFFu);
}

#endif
