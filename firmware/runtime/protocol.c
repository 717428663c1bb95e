/* Command parsing and replies, exactly as docs/protocol.md says. Bounded buffers, no malloc,
 * no printf: numbers are printed by the small helpers below. */
#include "protocol.h"
#include "board.h"
#include "tinylm_model.h"

/* Inputs longer than the model's L run as windows (windows.c) when codegen sets a stride
 * (`tinylm build --windows S --max-input N`); without one an input is at most L ids. */
#ifndef TINYLM_WINDOW_STRIDE
#define TINYLM_WINDOW_STRIDE 0
#endif
#if TINYLM_WINDOW_STRIDE > 0
#include "windows.h"
#endif

/* ---- output helpers ---- */
static void put_u64(uint64_t v)
{
    char buf[21];
    int i = 20;
    buf[i] = 0;
    do {
        buf[--i] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    board_write(&buf[i]);
}

static void put_i32(int32_t v)
{
    if (v < 0) {
        board_putc('-');
        put_u64((uint64_t)(-(int64_t)v)); /* via int64 so INT32_MIN works */
    } else {
        put_u64((uint64_t)v);
    }
}

static void put_hex8(uint8_t b)
{
    static const char digits[] = "0123456789abcdef";
    board_putc(digits[b >> 4]);
    board_putc(digits[b & 15]);
}

static void end_line(void) { board_write("\r\n"); }

/* "m-<key>[value]\r\n" pieces, used by almost every reply */
static void line_str(const char *key, const char *value)
{
    board_write(key);
    board_write(value);
    board_write("]\r\n");
}

static void line_int(const char *key, int32_t value)
{
    board_write(key);
    put_i32(value);
    board_write("]\r\n");
}

/* Text that came from the host goes back out only as printable ASCII (anything else as '?'), so
 * a reply can never carry a control byte, a CR/LF that splits its line, or a NUL. */
static void put_printable(const char *s)
{
    for (; *s; s++) board_putc(*s >= 0x20 && *s <= 0x7e ? *s : '?');
}

static void error_begin(const char *text) { board_write("e-["); board_write(text); }
static void error_end(void) { board_write("]\r\n"); }
static void error(const char *text) { error_begin(text); error_end(); }

/* ---- parsing helpers ---- */
static int streq(const char *a, const char *b)
{
    while (*a && *a == *b) { a++; b++; }
    return *a == *b;
}

/* Splits off the first space-separated word: returns it NUL-terminated, *rest points after it. */
static char *next_word(char **rest)
{
    char *w = *rest, *p = w;
    while (*p && *p != ' ') p++;
    if (*p) *p++ = 0;
    *rest = p;
    return w;
}

/* Unsigned decimal of 1..9 digits (so no overflow); -1 if not that. */
static int32_t parse_u32(const char *s)
{
    int32_t v = 0, n = 0;
    for (; *s; s++, n++) {
        if (*s < '0' || *s > '9' || n == 9) return -1;
        v = v * 10 + (*s - '0');
    }
    return n ? v : -1;
}

static int hex_value(char c)
{
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

/* ---- state ---- */
enum { DB_EMPTY, DB_LOADING, DB_READY };
static int db_state = DB_EMPTY;
static uint32_t db_expected, db_len;
static uint8_t db_buf[2 * TINYLM_INPUT_MAX];
static int32_t ids[TINYLM_INPUT_MAX];
static int32_t logits[TINYLM_LABELS_MAX];
static int32_t logits_len;   /* 0 until the first inference */
static uint64_t last_cost;

static int32_t max_tokens(void)   /* the longest input this build accepts */
{
#if TINYLM_WINDOW_STRIDE > 0
    return TINYLM_INPUT_MAX;
#else
    int32_t l = tinylm_model_info.max_tokens;
    return l < TINYLM_INPUT_MAX ? l : TINYLM_INPUT_MAX;
#endif
}

/* ---- commands ---- */
static void print_logits(const char *key)
{
    board_write(key);
    for (int32_t i = 0; i < logits_len; i++) {
        if (i) board_putc(',');
        put_i32(logits[i]);
    }
    board_write("]\r\n");
}

/* ---- EEMBC scores: softmax probabilities in integer arithmetic (codegen/scores.py is the
 * exact twin and says why). The MLPerf Tiny runner divides m-results by its sum before its
 * argmax, so it needs non-negative values whose argmax is the logits'. ---- */
#define ONE_Q30 (1ull << 30)
#define LOG2E_Q24 24204406ull          /* round(log2(e) * 2^24) */
#define LN2_Q30 744261118ull           /* round(ln(2) * 2^30) */
#define X_ZERO (22ull << 24)           /* e^-22 < 2^-31: score 0 beyond */
#define PPB 1000000000ull

static uint64_t exp_neg_q30(uint64_t x_q24)   /* e^-x in Q30, x >= 0 in Q24 */
{
    if (x_q24 >= X_ZERO) return 0;
    uint64_t y = (x_q24 * LOG2E_Q24) >> 24;   /* e^-x = 2^-y */
    uint64_t t = ((y & 0xFFFFFFu) * LN2_Q30) >> 24;   /* frac(y) * ln2 in Q30 */
    uint64_t r = ONE_Q30;
    for (uint64_t k = 9; k >= 1; k--) r = ONE_Q30 - ((t * r / k) >> 30);   /* Horner of exp(-t) */
    return r >> (y >> 24);
}

static uint64_t exps[TINYLM_LABELS_MAX];

static void print_scores(const char *key)
{
    int32_t top = logits[0];
    uint64_t total = 0, pmax = 0;
    for (int32_t i = 1; i < logits_len; i++) if (logits[i] > top) top = logits[i];
    for (int32_t i = 0; i < logits_len; i++) {
        uint64_t d = (uint64_t)((int64_t)top - logits[i]);   /* < 2^32, times mult < 2^31 */
        exps[i] = exp_neg_q30((d * (uint64_t)tinylm_model_info.logit_mult) >> tinylm_model_info.logit_shift);
        total += exps[i];
    }
    for (int32_t i = 0; i < logits_len; i++) {
        exps[i] = (exps[i] * PPB + total / 2) / total;
        if (exps[i] > pmax) pmax = exps[i];
    }
    board_write(key);
    for (int32_t i = 0; i < logits_len; i++) {
        uint64_t p = exps[i];
        if (logits[i] < top && p >= pmax) p = pmax - 1;   /* rounding never ties the argmax */
        if (i) board_putc(',');
        put_u64(p / PPB);
        board_putc('.');
        for (uint64_t div = PPB / 10; div; div /= 10) board_putc((char)('0' + p / div % 10));
    }
    board_write("]\r\n");
}

static void cmd_db_load(char *arg)
{
    int32_t n = parse_u32(arg);
    db_state = DB_EMPTY;   /* any db load starts over, even a bad one */
    db_len = 0;
    if (n < 2 || n > 2 * max_tokens() || (n & 1)) {
        error_begin("db load: N must be even and in 2..");
        put_i32(2 * max_tokens());
        error_end();
        return;
    }
    db_expected = (uint32_t)n;
    db_state = DB_LOADING;
    board_write("m-[Expecting ");
    put_i32(n);
    board_write(" bytes]\r\n");
}

static void cmd_db_print(void)
{
    board_write("m-buffer-[");
    for (uint32_t i = 0; i < db_len; i++) put_hex8(db_buf[i]);
    board_write("]\r\n");
}

static void cmd_db_hex(const char *hex)
{
    uint32_t digits = 0;
    if (db_state != DB_LOADING) { error("db: no load in progress"); return; }
    /* validate everything first, so a bad chunk never half-applies */
    for (const char *p = hex; *p; p++, digits++)
        if (hex_value(*p) < 0) break;
    if (hex[digits] || digits == 0 || (digits & 1)) {
        db_state = DB_EMPTY; db_len = 0;
        error("db: bad hex");
        return;
    }
    if (db_len + digits / 2 > db_expected) {
        db_state = DB_EMPTY; db_len = 0;
        error("db: more bytes than announced");
        return;
    }
    for (uint32_t i = 0; i < digits; i += 2)
        db_buf[db_len++] = (uint8_t)(hex_value(hex[i]) << 4 | hex_value(hex[i + 1]));
    if (db_len == db_expected) {
        db_state = DB_READY;
        board_write("m-load-done\r\n");
    }
}

/* "db load N", "db print", or "db HEX" (the whole rest is the hex, so spaces are bad hex) */
static void cmd_db(char *rest)
{
    const char *p = rest;
    if (p[0] == 'l' && p[1] == 'o' && p[2] == 'a' && p[3] == 'd' && (p[4] == ' ' || !p[4]))
        cmd_db_load(rest + (p[4] ? 5 : 4));
    else if (streq(rest, "print"))
        cmd_db_print();
    else
        cmd_db_hex(rest);
}

/* One inference on the loaded ids; its cost is what tinylm-cost% reports. */
static void run_once(int32_t n)
{
    board_cost_begin();
#if TINYLM_WINDOW_STRIDE > 0
    static int32_t window_logits[TINYLM_LABELS_MAX];
    static int64_t acc[TINYLM_LABELS_MAX];
    tinylm_windows_run(ids, n, tinylm_model_info.max_tokens, TINYLM_WINDOW_STRIDE,
                       tinylm_model_info.num_labels, logits, window_logits, acc);
#else
    tinylm_model_run(ids, n, logits);
#endif
    last_cost = board_cost_end();
}

/* board_time_us wraps (32 bits of microseconds: 71 minutes); extended here to 64 bits with
 * every read. Reads happen after every inference of an infer loop, and one inference is far
 * shorter than a wrap, so the difference of two m-lap-us values is exact however long the
 * window (the ports' own counter extensions rely on the same reads). */
static uint64_t now_us(void)
{
    static uint32_t last;
    static uint64_t total;
    uint32_t t = board_time_us();
    total += (uint32_t)(t - last);
    last = t;
    return total;
}

static void line_num(const char *key, uint64_t value)   /* "m-key-N", no brackets */
{
    board_write(key);
    put_u64(value);
    end_line();
}

/* Checks the loaded input and converts it to int32 ids; prints the error and returns -1 if bad. */
static int32_t prepare_ids(void)
{
    if (db_state != DB_READY) { error("infer: no input loaded"); return -1; }
    if (tinylm_model_info.num_labels > TINYLM_LABELS_MAX) {
        error("infer: model has more labels than TINYLM_LABELS_MAX");
        return -1;
    }
    int32_t n = (int32_t)(db_len / 2);
    for (int32_t i = 0; i < n; i++) {
        int32_t id = db_buf[2 * i] | db_buf[2 * i + 1] << 8; /* little-endian uint16 */
        if (id >= tinylm_model_info.vocab) {
            error_begin("infer: token id ");
            put_i32(id); board_write(" at "); put_i32(i);
            board_write(" >= vocab "); put_i32(tinylm_model_info.vocab);
            error_end();
            return -1;
        }
        ids[i] = id;
    }
    return n;
}

/* A byte from the host during an infer loop aborts it (the byte is consumed): otherwise
 * `infer 999999999 999999999` would hold the device until reset. Checked between inferences,
 * outside the measured cost. Returns 1 if aborted, after printing the error. */
static int aborted(void)
{
    if (!board_rx_ready()) return 0;
    (void)board_getc();
    error("infer: aborted");
    return 1;
}

static void cmd_infer(char *rest)
{
    int32_t n_runs = parse_u32(next_word(&rest));
    int32_t warmup = parse_u32(next_word(&rest));
    if (n_runs < 1 || warmup < 0 || *rest) { error("infer: usage infer N W"); return; }
    int32_t n = prepare_ids();
    if (n < 0) return;
    line_num("m-warmup-start-", (uint32_t)warmup);
    for (int32_t i = 0; i < warmup; i++) {
        if (aborted()) return;
        run_once(n);
        logits_len = tinylm_model_info.num_labels;   /* results% = the last completed inference */
    }
    board_write("m-warmup-done\r\n");
    line_num("m-infer-start-", (uint32_t)n_runs);
    uint64_t t0 = now_us();
    for (int32_t i = 0; i < n_runs; i++) {
        if (aborted()) return;
        run_once(n);
        logits_len = tinylm_model_info.num_labels;
        (void)now_us();   /* keeps the 64-bit extension exact over any window (see now_us) */
    }
    uint64_t t1 = now_us();
    line_num("m-lap-us-", t0);
    line_num("m-lap-us-", t1);
    board_write("m-infer-done\r\n");
    print_scores("m-results-[");
    print_logits("m-tinylm-logits-[");   /* the integer logits too: the harness needs no extra round trip */
}

static void cmd_info(void)
{
    line_str("m-tinylm-model-[", tinylm_model_info.name);
    line_str("m-tinylm-hash-[", tinylm_model_info.hash);
    line_int("m-tinylm-vocab-[", tinylm_model_info.vocab);
    line_int("m-tinylm-maxlen-[", max_tokens());   /* what this build accepts */
#if TINYLM_WINDOW_STRIDE > 0
    line_int("m-tinylm-window-[", TINYLM_WINDOW_STRIDE);   /* inputs over L run as windows */
#endif
    line_int("m-tinylm-labels-[", tinylm_model_info.num_labels);
    line_int("m-tinylm-arena-[", tinylm_model_info.arena_bytes);
    board_write("m-tinylm-scale-[");   /* the scores' logit scale: (d * mult) >> shift = d*s in Q24 */
    put_i32(tinylm_model_info.logit_mult);
    board_putc(',');
    put_i32(tinylm_model_info.logit_shift);
    board_write("]\r\n");
    line_str("m-tinylm-board-[", board_name());
}

static void cmd_cost(void)
{
    board_write("m-tinylm-");
    board_write(board_cost_unit());
    board_write("-[");
    put_u64(last_cost);
    board_write("]\r\n");
}

void protocol_handle(char *cmd)
{
    char *rest = cmd;
    char *word = next_word(&rest);
    int bare = !*rest;   /* commands without arguments must have none */
    if (streq(word, "name") && bare) {
        board_write("m-name-dut-[tinylm-");   /* EEMBC's form: the runner matches m-name-dut-[...] */
        line_str("", tinylm_model_info.name);
    } else if (streq(word, "profile") && bare) {
        line_str("m-profile-[", "tinylm");
        line_str("m-model-[", tinylm_model_info.name);
        line_str("m-board-[", board_name());
    } else if (streq(word, "db")) {
        cmd_db(rest);
    } else if (streq(word, "infer")) {
        cmd_infer(rest);
    } else if (streq(word, "results") && bare) {
        if (logits_len) print_scores("m-results-[");
        else board_write("m-results-[]\r\n");
    } else if (streq(word, "tinylm-info") && bare) {
        cmd_info();
    } else if (streq(word, "tinylm-logits") && bare) {
        print_logits("m-tinylm-logits-[");
    } else if (streq(word, "tinylm-cost") && bare) {
        cmd_cost();
    } else {
        error_begin("unknown command: ");
        put_printable(word);
        error_end();
    }
    board_write("m-ready\r\n");
}

void protocol_boot(void)
{
    board_write("m-boot-[tinylm]\r\nm-ready\r\n");
}

/* Reads up to the next '%'. \r and \n are dropped wherever they appear (the EEMBC runner and
 * terminals add them); a command that overflows the buffer is read to its '%' and refused; so is
 * one with a byte outside printable ASCII (a NUL would otherwise cut it short unseen, and a
 * control byte could be echoed back into a reply). */
void protocol_poll(void)
{
    static char cmd[TINYLM_CMD_MAX + 1];
    uint32_t len = 0, pos = 0, bad_pos = 0;
    int too_long = 0, bad = -1;
    for (;;) {
        int c = board_getc();
        if (c == '\r' || c == '\n') continue;
        if (c == '%') break;
        if ((c < 0x20 || c > 0x7e) && bad < 0) { bad = c; bad_pos = pos; }
        pos++;
        if (len < TINYLM_CMD_MAX) cmd[len++] = (char)c;
        else too_long = 1;
    }
    cmd[len] = 0;
    if (bad >= 0) {
        error_begin("non-printable byte 0x");
        put_hex8((uint8_t)bad);
        board_write(" at ");
        put_u64(bad_pos);
        error_end();
    } else if (too_long) {
        error("command too long: max 256 chars");
    } else {
        protocol_handle(cmd);
        return;
    }
    board_write("m-ready\r\n");
}
