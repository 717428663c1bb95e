/* STM32L476RG port (NUCLEO-L476RG), bare metal, no vendor HAL. Register addresses and values
 * are from RM0351 (STM32L4x5/L4x6 reference manual) and the Armv7-M ARM.
 *
 *   clock   HSI16 -> PLL (M=1, N=10, R=2) -> 80 MHz SYSCLK; flash 4 wait states (range 1)
 *   serial  USART2, 115200 8N1, PA2 TX / PA3 RX (AF7): the ST-LINK/V2-1 virtual COM port
 *   time    DWT CYCCNT / 80 (m-lap-us); 64-bit extension in software
 *   cost    DWT CYCCNT core cycles of one inference, calibrated overhead subtracted
 *           (m-tinylm-cycles-[N]); one inference must take under 2^32 cycles (53 s) */
#include "board.h"
#include "board_dwt.h"

#ifndef TINYLM_BOARD_NAME
#define TINYLM_BOARD_NAME "nucleo-l476rg"
#endif
#ifndef TINYLM_CPU_HZ
#define TINYLM_CPU_HZ 80000000u
#endif

#define REG(addr) (*(volatile uint32_t *)(addr))

#define FLASH_ACR REG(0x40022000u)
#define RCC_BASE 0x40021000u
#define RCC_CR REG(RCC_BASE + 0x00u)
#define RCC_CFGR REG(RCC_BASE + 0x08u)
#define RCC_PLLCFGR REG(RCC_BASE + 0x0Cu)
#define RCC_AHB2ENR REG(RCC_BASE + 0x4Cu)
#define RCC_APB1ENR1 REG(RCC_BASE + 0x58u)

#define GPIOA_BASE 0x48000000u
#define GPIOA_MODER REG(GPIOA_BASE + 0x00u)
#define GPIOA_OSPEEDR REG(GPIOA_BASE + 0x08u)
#define GPIOA_PUPDR REG(GPIOA_BASE + 0x0Cu)
#define GPIOA_AFRL REG(GPIOA_BASE + 0x20u)

#define USART2_BASE 0x40004400u
#define USART_CR1 REG(USART2_BASE + 0x00u)
#define USART_BRR REG(USART2_BASE + 0x0Cu)
#define USART_ISR REG(USART2_BASE + 0x1Cu)
#define USART_ICR REG(USART2_BASE + 0x20u)
#define USART_RDR REG(USART2_BASE + 0x24u)
#define USART_TDR REG(USART2_BASE + 0x28u)
#define ISR_ORE (1u << 3)
#define ISR_RXNE (1u << 5)
#define ISR_TXE (1u << 7)

static void clock_80mhz(void)
{
    /* 4 wait states plus prefetch and caches before raising the clock. */
    FLASH_ACR = (FLASH_ACR & ~7u) | 4u | (1u << 8) | (1u << 9) | (1u << 10);
    while ((FLASH_ACR & 7u) != 4u) {}
    RCC_CR |= 1u << 8;                          /* HSION */
    while (!(RCC_CR & (1u << 10))) {}           /* HSIRDY */
    RCC_CR &= ~(1u << 24);                      /* PLL off before configuring it */
    while (RCC_CR & (1u << 25)) {}
    /* PLLSRC = HSI16 (2), PLLM = 1 (field 0), PLLN = 10, PLLR = 2 (field 0), PLLREN */
    RCC_PLLCFGR = 2u | (0u << 4) | (10u << 8) | (0u << 25) | (1u << 24);
    RCC_CR |= 1u << 24;                         /* PLLON */
    while (!(RCC_CR & (1u << 25))) {}           /* PLLRDY */
    RCC_CFGR = (RCC_CFGR & ~3u) | 3u;           /* SW = PLL; AHB/APB prescalers stay 1 */
    while (((RCC_CFGR >> 2) & 3u) != 3u) {}     /* SWS = PLL */
}

static void usart2_init(void)
{
    RCC_AHB2ENR |= 1u << 0;                     /* GPIOAEN */
    RCC_APB1ENR1 |= 1u << 17;                   /* USART2EN */
    (void)RCC_APB1ENR1;
    GPIOA_MODER = (GPIOA_MODER & ~(0xFu << 4)) | (0xAu << 4);       /* PA2, PA3 alternate */
    GPIOA_OSPEEDR |= 0xFu << 4;
    GPIOA_PUPDR = (GPIOA_PUPDR & ~(0xFu << 4)) | (0x4u << 4);       /* pull-up on PA3 */
    GPIOA_AFRL = (GPIOA_AFRL & ~(0xFFu << 8)) | (0x77u << 8);       /* AF7 = USART2 */
    USART_CR1 = 0;
    USART_BRR = (TINYLM_CPU_HZ + 115200u / 2) / 115200u;            /* PCLK1 = SYSCLK, oversampling 16 */
    USART_CR1 = (1u << 3) | (1u << 2) | 1u;                         /* TE, RE, UE */
}

void board_init(void)
{
    clock_80mhz();
    usart2_init();
    dwt_init();
}

void board_putc(char c)
{
    while (!(USART_ISR & ISR_TXE)) {}
    USART_TDR = (uint8_t)c;
}

void board_write(const char *s)
{
    while (*s) board_putc(*s++);
}

int board_rx_ready(void)
{
    uint32_t isr = USART_ISR;
    if (isr & ISR_ORE) USART_ICR = ISR_ORE;     /* an overrun would stop reception */
    return (isr & ISR_RXNE) != 0;
}

int board_getc(void)
{
    while (!board_rx_ready()) {}
    return (int)(USART_RDR & 0xFFu);
}

const char *board_name(void) { return TINYLM_BOARD_NAME; }
