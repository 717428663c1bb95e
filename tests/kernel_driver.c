/* Test driver for tests/test_kernels.py: runs tinylm kernels on cases read from stdin.
 *
 * Built once per pytest session with ASan + UBSan. Every input and output buffer is
 * malloc'ed at its exact size, so any out-of-bounds access by a kernel aborts.
 *
 * Request (native little-endian int32 unless noted), repeated until EOF:
 *   op, nparams, params[nparams], narrays, then narrays times: elem_size, count, data
 * Reply: status (0), nbytes, output bytes. A malformed request prints to stderr and
 * exits with status 2. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "tinylm_kernels.h"
#include "tinylm_fixedpoint.h"

enum {
    OP_GATHER = 0, OP_POSITION_IDS, OP_MATMUL, OP_ADD_S32, OP_REQUANTIZE, OP_ADD_S8,
    OP_LUT, OP_TRANSPOSE, OP_SOFTMAX, OP_RMSNORM, OP_ISQRT,
    OP_SEGMENT_IDS, OP_ATTENTION, OP_CAUSAL_DWCONV, OP_FULLY_CONNECTED,
    OP_BINARIZE, OP_BINARY_MATMUL, OP_BINARY_MASK_MATMUL, OP_BINARY_DENSE,
    OP_GATHER_B32, OP_GATHER_B16, OP_REQUANTIZE_SH8
};

#define MAX_PARAMS 16
#define MAX_ARRAYS 8

typedef struct {
    int32_t elem_size;
    int32_t count;
    void *data;
} array_t;

static void die(const char *msg)
{
    fprintf(stderr, "kernel_driver: %s\n", msg);
    exit(2);
}

static int read_exact(void *buf, size_t n)
{
    return fread(buf, 1, n, stdin) == n;
}

static int32_t read_i32(void)
{
    int32_t v;
    if (!read_exact(&v, sizeof v)) {
        die("truncated request");
    }
    return v;
}

static void *xmalloc(size_t n)
{
    void *p = malloc(n ? n : 1);
    if (p == NULL) {
        die("out of memory");
    }
    return p;
}

static void expect(const array_t *a, int32_t elem_size, int64_t count, const char *what)
{
    if (a->elem_size != elem_size || a->count != count) {
        fprintf(stderr, "kernel_driver: array %s: got elem_size %d count %d, want %d %lld\n", what,
                (int)a->elem_size, (int)a->count, (int)elem_size, (long long)count);
        exit(2);
    }
}

static void reply(const void *out, size_t nbytes)
{
    int32_t head[2];
    head[0] = 0;
    head[1] = (int32_t)nbytes;
    fwrite(head, sizeof head, 1, stdout);
    if (nbytes) {
        fwrite(out, 1, nbytes, stdout);
    }
    fflush(stdout);
}

int main(void)
{
    int32_t op;
    while (read_exact(&op, sizeof op)) {
        int32_t p[MAX_PARAMS] = {0};
        array_t a[MAX_ARRAYS];
        int32_t np = read_i32(), na, i;
        void *out = NULL;
        size_t out_bytes = 0;
        if (np < 0 || np > MAX_PARAMS) {
            die("bad nparams");
        }
        for (i = 0; i < np; ++i) {
            p[i] = read_i32();
        }
        na = read_i32();
        if (na < 0 || na > MAX_ARRAYS) {
            die("bad narrays");
        }
        for (i = 0; i < na; ++i) {
            size_t n;
            a[i].elem_size = read_i32();
            a[i].count = read_i32();
            if (a[i].count < 0 || a[i].elem_size < 1 || a[i].elem_size > 8) {
                die("bad array header");
            }
            n = (size_t)a[i].count * (size_t)a[i].elem_size;
            a[i].data = xmalloc(n);
            if (!read_exact(a[i].data, n)) {
                die("truncated array");
            }
        }
#define NEED(nparams, narrays) \
    do { if (np != (nparams) || na != (narrays)) die("wrong number of params/arrays"); } while (0)
#define OUT(type, count) \
    do { out_bytes = (size_t)(count) * sizeof(type); out = xmalloc(out_bytes); memset(out, 0x5a, out_bytes); } while (0)
        switch (op) {
        case OP_GATHER: /* rows, cols, n; table, ids */
            NEED(3, 2);
            expect(&a[0], 1, (int64_t)p[0] * p[1], "table");
            expect(&a[1], 4, p[2], "ids");
            OUT(int8_t, (int64_t)p[2] * p[1]);
            gather_s8(a[0].data, p[0], p[1], a[1].data, p[2], out);
            break;
        case OP_GATHER_B32: /* rows, cols, n; table (uint32), ids */
            NEED(3, 2);
            expect(&a[0], 4, (int64_t)p[0] * p[1], "table");
            expect(&a[1], 4, p[2], "ids");
            OUT(uint32_t, (int64_t)p[2] * p[1]);
            gather_b32(a[0].data, p[0], p[1], a[1].data, p[2], out);
            break;
        case OP_GATHER_B16: /* rows, cols, n; table (uint16), ids -> uint32 rows */
            NEED(3, 2);
            expect(&a[0], 2, (int64_t)p[0] * p[1], "table");
            expect(&a[1], 4, p[2], "ids");
            OUT(uint32_t, (int64_t)p[2] * p[1]);
            gather_b16(a[0].data, p[0], p[1], a[1].data, p[2], out);
            break;
        case OP_POSITION_IDS: /* n */
            NEED(1, 0);
            OUT(int32_t, p[0]);
            position_ids_s32(p[0], out);
            break;
        case OP_MATMUL: /* m, k, n; a, b */
            NEED(3, 2);
            expect(&a[0], 1, (int64_t)p[0] * p[1], "a");
            expect(&a[1], 1, (int64_t)p[1] * p[2], "b");
            OUT(int32_t, (int64_t)p[0] * p[2]);
            matmul_s8_s32(a[0].data, a[1].data, out, p[0], p[1], p[2]);
            break;
        case OP_ADD_S32: /* rows, cols, b_rows; a, b */
            NEED(3, 2);
            expect(&a[0], 4, (int64_t)p[0] * p[1], "a");
            expect(&a[1], 4, (int64_t)p[2] * p[1], "b");
            OUT(int32_t, (int64_t)p[0] * p[1]);
            add_s32(a[0].data, a[1].data, out, p[0], p[1], p[2]);
            break;
        case OP_REQUANTIZE: /* channels, rows, cols; x, mult, shift */
            NEED(3, 3);
            expect(&a[0], 4, (int64_t)p[1] * p[2], "x");
            expect(&a[1], 4, p[0], "mult");
            expect(&a[2], 4, p[0], "shift");
            OUT(int8_t, (int64_t)p[1] * p[2]);
            requantize_s32_s8(a[0].data, a[1].data, a[2].data, p[0], out, p[1], p[2]);
            break;
        case OP_REQUANTIZE_SH8: /* channels, rows, cols; x, mult, shift (int8) */
            NEED(3, 3);
            expect(&a[0], 4, (int64_t)p[1] * p[2], "x");
            expect(&a[1], 4, p[0], "mult");
            expect(&a[2], 1, p[0], "shift");
            OUT(int8_t, (int64_t)p[1] * p[2]);
            requantize_s32_s8_sh8(a[0].data, a[1].data, a[2].data, p[0], out, p[1], p[2]);
            break;
        case OP_ADD_S8: /* count, ma, mb, shift; a, b */
            NEED(4, 2);
            expect(&a[0], 1, p[0], "a");
            expect(&a[1], 1, p[0], "b");
            OUT(int8_t, p[0]);
            add_s8(a[0].data, a[1].data, out, p[0], p[1], p[2], p[3]);
            break;
        case OP_LUT: /* count; x, table */
            NEED(1, 2);
            expect(&a[0], 1, p[0], "x");
            expect(&a[1], 1, 256, "table");
            OUT(int8_t, p[0]);
            lut_s8(a[0].data, a[1].data, out, p[0]);
            break;
        case OP_TRANSPOSE: /* rows, cols; x */
            NEED(2, 1);
            expect(&a[0], 1, (int64_t)p[0] * p[1], "x");
            OUT(int8_t, (int64_t)p[0] * p[1]);
            transpose_s8(a[0].data, out, p[0], p[1]);
            break;
        case OP_SOFTMAX: /* rows, cols, mult, shift, lut_len; x, lut */
            NEED(5, 2);
            expect(&a[0], 4, (int64_t)p[0] * p[1], "x");
            expect(&a[1], 2, p[4], "lut");
            OUT(int8_t, (int64_t)p[0] * p[1]);
            softmax_s32_s8(a[0].data, out, p[0], p[1], p[2], p[3], a[1].data, p[4]);
            break;
        case OP_RMSNORM: /* rows, cols, mult, shift; x, gain */
            NEED(4, 2);
            expect(&a[0], 1, (int64_t)p[0] * p[1], "x");
            expect(&a[1], 1, p[1], "gain");
            OUT(int8_t, (int64_t)p[0] * p[1]);
            rmsnorm_s8(a[0].data, a[1].data, out, p[0], p[1], p[2], p[3]);
            break;
        case OP_ISQRT: /* ; v (uint64) -- the shared helper, on its full domain */
            NEED(0, 1);
            expect(&a[0], 8, a[0].count, "v");
            OUT(uint64_t, a[0].count);
            for (i = 0; i < a[0].count; ++i) {
                ((uint64_t *)out)[i] = tinylm_isqrt_u64(((const uint64_t *)a[0].data)[i]);
            }
            break;
        case OP_SEGMENT_IDS: /* n; ids */
            NEED(1, 1);
            expect(&a[0], 4, p[0], "ids");
            OUT(int32_t, p[0]);
            segment_ids_s32(a[0].data, p[0], out);
            break;
        case OP_ATTENTION: { /* m, n, d, mult, shift, lut_len, out_mult, out_shift; q, kv, lut */
            int32_t *scratch;
            NEED(8, 3);
            expect(&a[0], 1, (int64_t)p[0] * p[2], "q");
            expect(&a[1], 1, (int64_t)p[1] * p[2], "kv");
            expect(&a[2], 2, p[5], "lut");
            OUT(int8_t, (int64_t)p[0] * p[2]);
            /* exactly the bytes the helper asks for: ASan catches a kernel that uses more */
            scratch = xmalloc((size_t)attention_s8_scratch_bytes(p[1], p[2]));
            attention_s8(a[0].data, a[1].data, out, p[0], p[1], p[2], p[3], p[4], a[2].data, p[5],
                         p[6], p[7], scratch);
            free(scratch);
            break;
        }
        case OP_CAUSAL_DWCONV: /* n, d, k, t0, rows; x (all n rows), w, bias */
            NEED(5, 3);
            expect(&a[0], 1, (int64_t)p[0] * p[1], "x");
            expect(&a[1], 1, (int64_t)p[2] * p[1], "w");
            expect(&a[2], 4, p[1], "bias");
            if (p[3] < 0 || p[4] < 0 || p[3] + p[4] > p[0]) {
                die("conv tile outside the input");
            }
            OUT(int32_t, (int64_t)p[4] * p[1]);
            causal_dwconv_s8_s32(a[0].data, a[1].data, a[2].data, out, p[3], p[4], p[1], p[2]);
            break;
        case OP_FULLY_CONNECTED: /* m, k, n, channels, has_bias, has_lut; x, packed w, bias, mult, shift, lut */
            NEED(6, 6);
            expect(&a[0], 1, (int64_t)p[0] * p[1], "x");
            expect(&a[1], 1, (int64_t)p[1] * p[2], "w");
            expect(&a[2], 4, p[2], "bias");
            expect(&a[3], 4, p[3], "mult");
            expect(&a[4], 4, p[3], "shift");
            expect(&a[5], 1, 256, "lut");
            OUT(int8_t, (int64_t)p[0] * p[2]);
            fully_connected_s8(a[0].data, a[1].data, p[4] ? a[2].data : NULL, a[3].data, a[4].data, p[3],
                               p[5] ? a[5].data : NULL, out, p[0], p[1], p[2]);
            break;
        case OP_BINARIZE: /* rows, k, channels, out_words; x, beta */
            NEED(4, 2);
            expect(&a[0], 1, (int64_t)p[0] * p[1], "x");
            expect(&a[1], 4, p[2], "beta");
            if (p[3] < TINYLM_B32_WORDS(p[1])) {
                die("out_words too small");
            }
            OUT(uint32_t, (int64_t)p[0] * p[3]);
            binarize_s8_b32(a[0].data, a[1].data, p[2], out, p[0], p[1], p[3]);
            break;
        case OP_BINARY_DENSE: /* m, n, k; a (packed), w (packed), thresholds */
            NEED(3, 3);
            expect(&a[0], 4, (int64_t)p[0] * TINYLM_B32_WORDS(p[2]), "a");
            expect(&a[1], 4, (int64_t)p[1] * TINYLM_B32_WORDS(p[2]), "w");
            expect(&a[2], 4, p[1], "thr");
            OUT(uint32_t, (int64_t)p[0] * TINYLM_B32_WORDS(p[1]));
            binary_dense_b32_b32(a[0].data, a[1].data, a[2].data, out, p[0], p[1], p[2]);
            break;
        case OP_BINARY_MASK_MATMUL: /* m, d, words; mask, v */
            NEED(3, 2);
            expect(&a[0], 4, (int64_t)p[0] * p[2], "mask");
            expect(&a[1], 4, (int64_t)p[1] * p[2], "v");
            OUT(int32_t, (int64_t)p[0] * p[1]);
            binary_mask_matmul_b32_s32(a[0].data, a[1].data, out, p[0], p[1], p[2]);
            break;
        case OP_BINARY_MATMUL: /* m, n, k; a (packed), w (packed) */
            NEED(3, 2);
            expect(&a[0], 4, (int64_t)p[0] * TINYLM_B32_WORDS(p[2]), "a");
            expect(&a[1], 4, (int64_t)p[1] * TINYLM_B32_WORDS(p[2]), "w");
            OUT(int32_t, (int64_t)p[0] * p[1]);
            binary_matmul_b32_s32(a[0].data, a[1].data, out, p[0], p[1], p[2]);
            break;
        default:
            die("unknown op");
        }
        reply(out, out_bytes);
        free(out);
        for (i = 0; i < na; ++i) {
            free(a[i].data);
        }
    }
    return 0;
}
