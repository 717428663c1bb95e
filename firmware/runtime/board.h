/* The port interface: everything the runtime needs from a board. One implementation per
 * firmware/ports/<port>/; the runtime never touches hardware registers itself. */
#ifndef TINYLM_BOARD_H
#define TINYLM_BOARD_H
#include <stdint.h>

void board_init(void);                 /* clocks, serial port, counters */
void board_putc(char c);               /* blocking write of one byte to the serial port */
void board_write(const char *s);       /* board_putc for each byte of a NUL-terminated string */
int board_getc(void);                  /* blocking read of one byte (0..255) */
int board_rx_ready(void);              /* nonzero when a received byte waits (board_getc won't block) */
uint32_t board_time_us(void);          /* free-running microseconds; wraps, so use differences */

/* Cost of the code between begin and end, in the board's unit: retired instructions on QEMU
 * (exact under -icount), core cycles on hardware. The measurement overhead is subtracted. */
void board_cost_begin(void);
uint64_t board_cost_end(void);
const char *board_cost_unit(void);     /* "instr" or "cycles": the word in m-tinylm-<unit>-[N] */

const char *board_name(void);          /* the board descriptor's name, e.g. "qemu-m4" */

#endif
