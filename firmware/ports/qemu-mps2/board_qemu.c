/* QEMU MPS2/MPS3 port: CMSDK UART0 (polled) for serial, the MPS2 FPGAIO counter for time
 * (m-lap-us, scaled to the board's nominal clock), SysTick for cost. Under -icount shift=0 one instruction is 1 ns of virtual time, so one tick of
 * a 25 MHz clock is exactly 40 instructions.
 *
 * The defaults are mps2-an386/an500 (UART0 0x40004000, FPGAIO 0x40028000, 25 MHz). Other QEMU
 * machines with the same CMSDK UART and FPGAIO pass their addresses and clock from the board
 * descriptor's [defines] table (e.g. boards/qemu-m33.toml: the an505's secure aliases, 20 MHz). */
#include "board.h"

#ifndef TINYLM_UART0_BASE
#define TINYLM_UART0_BASE 0x40004000u
#endif
#ifndef TINYLM_FPGAIO_BASE
#define TINYLM_FPGAIO_BASE 0x40028000u
#endif
#ifndef TINYLM_SYSCLK_HZ
#define TINYLM_SYSCLK_HZ 25000000u     /* CPU clock = SysTick clock */
#endif
#ifndef TINYLM_FPGAIO_HZ
#define TINYLM_FPGAIO_HZ TINYLM_SYSCLK_HZ   /* FPGAIO counter clock (20 MHz on the an547) */
#endif

#define UART0_BASE TINYLM_UART0_BASE
#define UART_DATA (*(volatile uint32_t *)(UART0_BASE + 0x00))
#define UART_STATE (*(volatile uint32_t *)(UART0_BASE + 0x04))  /* bit0 TX full, bit1 RX full */
#define UART_CTRL (*(volatile uint32_t *)(UART0_BASE + 0x08))   /* bit0 TX enable, bit1 RX enable */
#define UART_BAUDDIV (*(volatile uint32_t *)(UART0_BASE + 0x10))

#define FPGAIO_COUNTER (*(volatile uint32_t *)(TINYLM_FPGAIO_BASE + 0x18u))
#define COUNTER_HZ TINYLM_FPGAIO_HZ
/* Instructions per tick of the clock = 1e9 / Hz (40 at 25 MHz, 50 at 20 MHz, 31.25 at 32 MHz);
 * kept as the fraction NUM/DEN so that a non-integer ratio stays exact per tick. */
#define INSTR_NUM 1000000000ull
#define INSTR_DEN ((uint64_t)TINYLM_SYSCLK_HZ)

#ifndef TINYLM_BOARD_NAME
#define TINYLM_BOARD_NAME "qemu-m4"
#endif

static uint64_t cost_overhead;   /* ticks of an empty begin/end pair */
static uint64_t last_raw_ticks;  /* ticks of the last measurement before the overhead is subtracted */

void board_init(void)
{
    UART_BAUDDIV = TINYLM_SYSCLK_HZ / 115200u;  /* QEMU ignores the rate but checks it is >= 16 */
    UART_CTRL = 0x3u;
    /* Calibrate: the cost of an empty begin/end pair is subtracted from every measurement. */
    board_cost_begin();
    cost_overhead = 0;
    (void)board_cost_end();
    cost_overhead = last_raw_ticks;
}

void board_putc(char c)
{
    while (UART_STATE & 1u) {}
    UART_DATA = (uint8_t)c;
}

void board_write(const char *s)
{
    while (*s) board_putc(*s++);
}

int board_getc(void)
{
    while (!board_rx_ready()) {}
    return (int)(UART_DATA & 0xFFu);
}

int board_rx_ready(void) { return (UART_STATE & 2u) != 0; }

/* The 32-bit counter wraps every 172 s; extend it in software with each value read (reads
 * happen far more often than that). */
static uint64_t extend(uint32_t raw)
{
    static uint32_t last;
    static uint64_t ticks;
    ticks += (uint32_t)(raw - last);
    last = raw;
    return ticks;
}

/* Microseconds on the board's nominal clock, as a real core at TINYLM_SYSCLK_HZ retiring one
 * instruction per cycle would take: instructions / MHz. (QEMU's virtual time runs one
 * instruction per ns, a 1 GHz core: 40x fast for a 25 MHz board, so a benchmark window sized in
 * those microseconds took 40x longer on the host than the runner's timeouts allow.)
 * Instructions = counter ticks * 1e9 / COUNTER_HZ, so us = ticks * 1e9 / (COUNTER_HZ * MHz),
 * split into quotient and remainder so that the 64-bit product cannot overflow. */
#define US_NUM 1000000000ull
#define US_DEN ((uint64_t)COUNTER_HZ * (TINYLM_SYSCLK_HZ / 1000000u))

uint32_t board_time_us(void)
{
    uint64_t ticks = extend(FPGAIO_COUNTER);
    return (uint32_t)(ticks / US_DEN * US_NUM + ticks % US_DEN * US_NUM / US_DEN);
}

/* Cost comes from SysTick on the processor clock (25 MHz, so also 40 instructions per tick),
 * not from the FPGAIO counter: that counter's phase at the start of a measurement depends on
 * how long the firmware spun waiting for serial input, so differences of it jitter by a tick.
 * SysTick is restarted at cost_begin, so its tick grid starts at a fixed instruction and the
 * count is exactly repeatable under -icount. Resolution: 40 instructions. The 24-bit counter
 * wraps every 671 M instructions; the interrupt counts wraps. */
#define SYST_CSR (*(volatile uint32_t *)0xE000E010u)  /* bit0 enable, bit1 tickint, bit2 cpu clock */
#define SYST_RVR (*(volatile uint32_t *)0xE000E014u)
#define SYST_CVR (*(volatile uint32_t *)0xE000E018u)
#define SCB_ICSR (*(volatile uint32_t *)0xE000ED04u)  /* bit26 SysTick pending, bit25 clear it */
#define SYST_MAX 0xFFFFFFu

static volatile uint32_t systick_wraps;

void SysTick_Handler(void)
{
    systick_wraps++;
}

__attribute__((noinline)) void board_cost_begin(void)
{
    SYST_CSR = 0;
    SYST_RVR = SYST_MAX;
    SYST_CVR = 0;            /* any write clears the count */
    systick_wraps = 0;
    SYST_CSR = 0x7u;
    /* The count reads 0 until the first tick reloads it; start from there, 40 instructions
     * after the enable, so no special case is needed at the end. */
    while (SYST_CVR == 0) {}
}

/* Ticks since board_cost_begin, less the calibrated overhead. */
static uint64_t board_cost_end_ticks(void)
{
    uint32_t value = SYST_CVR;
    SYST_CSR = 0;
    if (SCB_ICSR & (1u << 26)) {   /* wrapped between the read and the stop: not yet counted */
        SCB_ICSR = 1u << 25;
        if (value > SYST_MAX / 2) systick_wraps++;
    }
    uint64_t ticks = ((uint64_t)systick_wraps << 24) + (SYST_MAX - value);
    last_raw_ticks = ticks;
    return ticks > cost_overhead ? ticks - cost_overhead : 0;
}

__attribute__((noinline)) uint64_t board_cost_end(void)
{
    return board_cost_end_ticks() * INSTR_NUM / INSTR_DEN;
}

const char *board_cost_unit(void) { return "instr"; }
const char *board_name(void) { return TINYLM_BOARD_NAME; }
