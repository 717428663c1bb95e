/* Time and cost from the DWT cycle counter (Armv7-M/Armv8-M debug unit), shared by the hardware
 * ports: m-lap-us is cycles / (TINYLM_CPU_HZ / 1e6), tinylm-cost is core cycles of one inference
 * with the overhead of an empty begin/end pair subtracted. (DWT CYCCNT reads 0 in QEMU, so the
 * QEMU port counts instructions with SysTick instead.) */
#include "board.h"
#include "board_dwt.h"

#define REG(addr) (*(volatile uint32_t *)(addr))
#define DEMCR REG(0xE000EDFCu)          /* bit 24 TRCENA */
#define DWT_CTRL REG(0xE0001000u)       /* bit 0 CYCCNTENA */
#define DWT_CYCCNT REG(0xE0001004u)

static uint32_t cost_overhead;          /* cycles of an empty begin/end pair */
static uint32_t cost_start;

void dwt_init(void)
{
    DEMCR |= 1u << 24;
    DWT_CYCCNT = 0;
    DWT_CTRL |= 1u;
    board_cost_begin();
    cost_overhead = 0;
    cost_overhead = (uint32_t)board_cost_end();
}

/* CYCCNT wraps every minute or so; extend it with each read (reads happen far more often). */
static uint64_t cycles64(void)
{
    static uint32_t last;
    static uint64_t total;
    uint32_t now = DWT_CYCCNT;
    total += (uint32_t)(now - last);
    last = now;
    return total;
}

uint32_t board_time_us(void)
{
    return (uint32_t)(cycles64() / (TINYLM_CPU_HZ / 1000000u));
}

__attribute__((noinline)) void board_cost_begin(void)
{
    cost_start = DWT_CYCCNT;
}

__attribute__((noinline)) uint64_t board_cost_end(void)
{
    uint32_t cycles = DWT_CYCCNT - cost_start;
    return cycles > cost_overhead ? cycles - cost_overhead : 0;
}

const char *board_cost_unit(void) { return "cycles"; }
