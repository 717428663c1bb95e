/* Kernel server: the firmware side of `tinylm kernels` and tests/test_kernels_qemu.py. It runs
 * one kernel per request on arrays sent over the serial port and answers with the output bytes
 * and the kernel's cost (instructions under QEMU -icount), so the DSP path -- which the host
 * cannot execute -- is checked bit for bit against the numpy twins on every QEMU core.
 *
 * Request: the wire format of tests/kernel_driver.c (little-endian int32): op, nparams,
 * params, narrays, then per array elem_size, count, bytes. Op numbers are the driver's.
 * Reply: 'K', status (int32, 0 = ran), cost (uint64), nbytes (int32), output bytes.
 * Arrays live in one static pool (no malloc), reset for every request.
 * TINYLM_BENCH_UNFUSED: op fully_connected runs the unfused chain the models used before
 * (matmul_s8_s32 + add_s32 + requantize_s32_s8 through an int32 row, weights not packed):
 * the "before" column of the benchmark. */
#include <stdint.h>
#include "board.h"
#include "tinylm_kernels.h"

enum { OP_MATMUL = 2, OP_ADD_S32 = 3, OP_REQUANTIZE = 4, OP_ADD_S8 = 5, OP_LUT = 6,
       OP_SOFTMAX = 8, OP_RMSNORM = 9, OP_ATTENTION = 12, OP_CAUSAL_DWCONV = 13,
       OP_FULLY_CONNECTED = 14, OP_BINARIZE = 15, OP_BINARY_MATMUL = 16,
       OP_BINARY_MASK_MATMUL = 17, OP_BINARY_DENSE = 18, OP_REQUANTIZE_SH8 = 21 };

#define POOL_BYTES (200 * 1024)
#define MAX_PARAMS 16
#define MAX_ARRAYS 8
static int8_t pool[POOL_BYTES] __attribute__((aligned(8)));
static uint32_t used;

static void *take(uint32_t n)
{
    void *p;
    n = (n + 7u) & ~7u; /* every array 8-aligned, as the arena's buffers are */
    if (used + n > POOL_BYTES) {
        return 0;
    }
    p = pool + used;
    used += n;
    return p;
}

static int32_t get_i32(void)
{
    uint32_t v = 0;
    int i;
    for (i = 0; i < 4; ++i) {
        v |= (uint32_t)board_getc() << (8 * i);
    }
    return (int32_t)v;
}

static void put_i32(uint32_t v)
{
    int i;
    for (i = 0; i < 4; ++i) {
        board_putc((char)(v >> (8 * i)));
    }
}

static void reply(int32_t status, uint64_t cost, const void *out, int32_t nbytes)
{
    int32_t i;
    board_putc('K');
    put_i32((uint32_t)status);
    put_i32((uint32_t)cost);
    put_i32((uint32_t)(cost >> 32));
    put_i32((uint32_t)nbytes);
    for (i = 0; i < nbytes; ++i) {
        board_putc((char)((const uint8_t *)out)[i]);
    }
}

int main(void)
{
    board_init();
    board_write("m-ready\r\n");
    for (;;) {
        int32_t op = get_i32(), np = get_i32(), p[MAX_PARAMS] = {0}, na, i, nbytes = 0, status = 0;
        void *a[MAX_ARRAYS] = {0}, *out = 0;
        uint64_t cost = 0;
        used = 0;
        for (i = 0; i < np; ++i) {
            int32_t v = get_i32();
            if (i < MAX_PARAMS) {
                p[i] = v;
            }
        }
        na = get_i32();
        for (i = 0; i < na; ++i) {
            int32_t size = get_i32(), count = get_i32(), j;
            uint32_t n = (uint32_t)size * (uint32_t)count;
            int8_t *dst = take(n);
            for (j = 0; j < (int32_t)n; ++j) {
                int c = board_getc();
                if (dst) {
                    dst[j] = (int8_t)c;
                }
            }
            if (i < MAX_ARRAYS) {
                a[i] = dst;
            }
            if (!dst) {
                status = 2; /* out of pool: read the bytes anyway, then refuse */
            }
        }
#define OUT(bytes) do { nbytes = (int32_t)(bytes); out = take((uint32_t)nbytes); if (!out) status = 2; } while (0)
        switch (op) {
        case OP_MATMUL: OUT(4 * p[0] * p[2]); break;
        case OP_ADD_S32: OUT(4 * p[0] * p[1]); break;
        case OP_REQUANTIZE: case OP_REQUANTIZE_SH8: OUT(p[1] * p[2]); break;
        case OP_ADD_S8: case OP_LUT: OUT(p[0]); break;
        case OP_SOFTMAX: case OP_RMSNORM: OUT(p[0] * p[1]); break;
        case OP_ATTENTION: OUT(p[0] * p[2] + attention_s8_scratch_bytes(p[1], p[2])); nbytes = p[0] * p[2]; break;
        case OP_CAUSAL_DWCONV: OUT(4 * p[4] * p[1]); break;
        case OP_FULLY_CONNECTED: OUT(p[0] * p[2] + 4 * p[2]); nbytes = p[0] * p[2]; break;
        case OP_BINARIZE: OUT(4 * p[0] * p[3]); break;
        case OP_BINARY_MASK_MATMUL: OUT(4 * p[0] * p[1]); break;
        case OP_BINARY_DENSE: OUT(4 * p[0] * TINYLM_B32_WORDS(p[1])); break;
        case OP_BINARY_MATMUL: OUT(4 * p[0] * p[1]); break;
        default: status = 1;
        }
        if (status == 0) {
            board_cost_begin();
            switch (op) {
            case OP_MATMUL: matmul_s8_s32(a[0], a[1], out, p[0], p[1], p[2]); break;
            case OP_ADD_S32: add_s32(a[0], a[1], out, p[0], p[1], p[2]); break;
            case OP_REQUANTIZE: requantize_s32_s8(a[0], a[1], a[2], p[0], out, p[1], p[2]); break;
            case OP_REQUANTIZE_SH8: requantize_s32_s8_sh8(a[0], a[1], a[2], p[0], out, p[1], p[2]); break;
            case OP_ADD_S8: add_s8(a[0], a[1], out, p[0], p[1], p[2], p[3]); break;
            case OP_LUT: lut_s8(a[0], a[1], out, p[0]); break;
            case OP_SOFTMAX: softmax_s32_s8(a[0], out, p[0], p[1], p[2], p[3], a[1], p[4]); break;
            case OP_RMSNORM: rmsnorm_s8(a[0], a[1], out, p[0], p[1], p[2], p[3]); break;
            case OP_ATTENTION:
                attention_s8(a[0], a[1], out, p[0], p[1], p[2], p[3], p[4], a[2], p[5], p[6], p[7],
                             (int32_t *)(void *)((int8_t *)out + ((p[0] * p[2] + 7) & ~7)));
                break;
            case OP_CAUSAL_DWCONV:
                causal_dwconv_s8_s32(a[0], a[1], a[2], out, p[3], p[4], p[1], p[2]);
                break;
            case OP_FULLY_CONNECTED: {
#ifdef TINYLM_BENCH_UNFUSED
                /* row by row through one int32 row, as the tile-of-1 models did */
                int32_t *row = (int32_t *)(void *)((int8_t *)out + ((p[0] * p[2] + 7) & ~7)), r;
                for (r = 0; r < p[0]; ++r) {
                    matmul_s8_s32((const int8_t *)a[0] + r * p[1], a[1], row, 1, p[1], p[2]);
                    if (p[4]) {
                        add_s32(row, a[2], row, 1, p[2], 1);
                    }
                    requantize_s32_s8(row, a[3], a[4], p[3], (int8_t *)out + r * p[2], 1, p[2]);
                    if (p[5]) {
                        lut_s8((int8_t *)out + r * p[2], a[5], (int8_t *)out + r * p[2], p[2]);
                    }
                }
#else
                fully_connected_s8(a[0], a[1], p[4] ? a[2] : NULL, a[3], a[4], p[3], p[5] ? a[5] : NULL,
                                   out, p[0], p[1], p[2]);
#endif
                break;
            }
            case OP_BINARIZE: binarize_s8_b32(a[0], a[1], p[2], out, p[0], p[1], p[3]); break;
            case OP_BINARY_MASK_MATMUL: binary_mask_matmul_b32_s32(a[0], a[1], out, p[0], p[1], p[2]); break;
            case OP_BINARY_DENSE: binary_dense_b32_b32(a[0], a[1], a[2], out, p[0], p[1], p[2]); break;
            case OP_BINARY_MATMUL: binary_matmul_b32_s32(a[0], a[1], out, p[0], p[1], p[2]); break;
            default: break;
            }
            cost = board_cost_end();
        }
        reply(status, cost, out, status ? 0 : nbytes);
    }
}
