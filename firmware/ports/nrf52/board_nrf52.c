/* nRF52840 port (nRF52840-DK), bare metal, no vendor SDK. Register addresses and values are
 * from the nRF52840 Product Specification v1.7 and the Armv7-M ARM.
 *
 *   clock   HFXO started (the 64 MHz core clock then comes from the 32 MHz crystal, so the
 *           UART baud rate is crystal-accurate)
 *   serial  UARTE0, 115200 8N1, no flow control, TX P0.06 / RX P0.08: the DK's interface MCU
 *           (J-Link OB) bridges these to its USB CDC port (/dev/ttyACM0)
 *   time    DWT CYCCNT / 64 (m-lap-us); 64-bit extension in software
 *   cost    DWT CYCCNT core cycles of one inference, calibrated overhead subtracted
 *           (m-tinylm-cycles-[N]); one inference must take under 2^32 cycles (67 s)
 *
 * UARTE uses EasyDMA, which reads and writes RAM only: bytes go through small RAM buffers.
 * The protocol is strictly request/response (the host sends a command, then waits for
 * m-ready), so RX is started for one byte at a time inside board_getc; bytes that arrive
 * between two transfers wait in the UARTE's RX FIFO and are moved to RAM by the next STARTRX. */
#include "board.h"
#include "board_dwt.h"

#ifndef TINYLM_BOARD_NAME
#define TINYLM_BOARD_NAME "nrf52"
#endif
#ifndef TINYLM_CPU_HZ
#define TINYLM_CPU_HZ 64000000u
#endif
#ifndef TINYLM_UART_TX_PIN
#define TINYLM_UART_TX_PIN 6u     /* P0.06 */
#endif
#ifndef TINYLM_UART_RX_PIN
#define TINYLM_UART_RX_PIN 8u     /* P0.08 */
#endif

#define REG(addr) (*(volatile uint32_t *)(addr))

/* CLOCK */
#define CLOCK_BASE 0x40000000u
#define CLOCK_TASKS_HFCLKSTART REG(CLOCK_BASE + 0x000u)
#define CLOCK_EVENTS_HFCLKSTARTED REG(CLOCK_BASE + 0x100u)

/* GPIO P0 */
#define P0_BASE 0x50000000u
#define P0_OUTSET REG(P0_BASE + 0x508u)
#define P0_DIRSET REG(P0_BASE + 0x518u)
#define P0_PIN_CNF(n) REG(P0_BASE + 0x700u + 4u * (n))

/* UARTE0 */
#define UARTE0_BASE 0x40002000u
#define UARTE_TASKS_STARTRX REG(UARTE0_BASE + 0x000u)
#define UARTE_TASKS_STARTTX REG(UARTE0_BASE + 0x008u)
#define UARTE_EVENTS_RXDRDY REG(UARTE0_BASE + 0x108u)
#define UARTE_EVENTS_ENDRX REG(UARTE0_BASE + 0x110u)
#define UARTE_EVENTS_ENDTX REG(UARTE0_BASE + 0x120u)
#define UARTE_ENABLE REG(UARTE0_BASE + 0x500u)
#define UARTE_PSEL_RTS REG(UARTE0_BASE + 0x508u)
#define UARTE_PSEL_TXD REG(UARTE0_BASE + 0x50Cu)
#define UARTE_PSEL_CTS REG(UARTE0_BASE + 0x510u)
#define UARTE_PSEL_RXD REG(UARTE0_BASE + 0x514u)
#define UARTE_BAUDRATE REG(UARTE0_BASE + 0x524u)
#define UARTE_RXD_PTR REG(UARTE0_BASE + 0x534u)
#define UARTE_RXD_MAXCNT REG(UARTE0_BASE + 0x538u)
#define UARTE_TXD_PTR REG(UARTE0_BASE + 0x544u)
#define UARTE_TXD_MAXCNT REG(UARTE0_BASE + 0x548u)
#define UARTE_CONFIG REG(UARTE0_BASE + 0x56Cu)
#define UARTE_ENABLE_UARTE 8u
#define UARTE_BAUD_115200 0x01D7E000u
#define PSEL_DISCONNECTED 0xFFFFFFFFu

static void hfxo_start(void)
{
    CLOCK_EVENTS_HFCLKSTARTED = 0;
    CLOCK_TASKS_HFCLKSTART = 1;
    while (CLOCK_EVENTS_HFCLKSTARTED == 0) {}
}

static void uarte_init(void)
{
    P0_OUTSET = 1u << TINYLM_UART_TX_PIN;          /* idle high before the pin becomes an output */
    P0_DIRSET = 1u << TINYLM_UART_TX_PIN;
    P0_PIN_CNF(TINYLM_UART_RX_PIN) = 3u << 2;      /* input, buffer connected, pull-up */
    UARTE_PSEL_TXD = TINYLM_UART_TX_PIN;           /* port 0, connected (bit 31 clear) */
    UARTE_PSEL_RXD = TINYLM_UART_RX_PIN;
    UARTE_PSEL_RTS = PSEL_DISCONNECTED;
    UARTE_PSEL_CTS = PSEL_DISCONNECTED;
    UARTE_CONFIG = 0;                              /* no flow control, no parity, 1 stop bit */
    UARTE_BAUDRATE = UARTE_BAUD_115200;
    UARTE_ENABLE = UARTE_ENABLE_UARTE;
}

void board_init(void)
{
    hfxo_start();
    uarte_init();
    dwt_init();
}

static uint8_t tx_buf[64];       /* EasyDMA source: must be in RAM */

static void tx(uint32_t n)
{
    UARTE_TXD_PTR = (uint32_t)(uintptr_t)tx_buf;
    UARTE_TXD_MAXCNT = n;
    UARTE_EVENTS_ENDTX = 0;
    UARTE_TASKS_STARTTX = 1;
    while (UARTE_EVENTS_ENDTX == 0) {}
}

void board_putc(char c)
{
    tx_buf[0] = (uint8_t)c;
    tx(1);
}

void board_write(const char *s)
{
    while (*s) {
        uint32_t n = 0;
        while (*s && n < sizeof tx_buf) tx_buf[n++] = (uint8_t)*s++;
        tx(n);
    }
}

static volatile uint8_t rx_byte; /* EasyDMA destination */

int board_getc(void)
{
    UARTE_RXD_PTR = (uint32_t)(uintptr_t)&rx_byte;
    UARTE_RXD_MAXCNT = 1;
    UARTE_EVENTS_ENDRX = 0;
    UARTE_TASKS_STARTRX = 1;
    while (UARTE_EVENTS_ENDRX == 0) {}
    UARTE_EVENTS_RXDRDY = 0;   /* from here on, RXDRDY means a further byte reached the RX FIFO */
    return (int)rx_byte;
}

/* The receiver keeps running after ENDRX and raises RXDRDY for each byte it puts in its FIFO,
 * so RXDRDY since the last board_getc means a byte waits. (A byte that arrived between ENDRX and
 * the clear above goes unnoticed here, but is still read by the next board_getc; the runtime
 * only uses this to notice a host byte during a long infer loop.) */
int board_rx_ready(void) { return UARTE_EVENTS_RXDRDY != 0; }

const char *board_name(void) { return TINYLM_BOARD_NAME; }
