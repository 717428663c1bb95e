/* STM32L476 reset: vector table, FPU on, .data copy, .bss clear, then main(). No vendor SDK.
 * Symbols come from the linker script rendered by codegen/toolchain.py from boards/nucleo-l476rg.toml.
 * No peripheral interrupt is used (USART2 and clock are polled), so the table stops after the
 * 16 system entries; the NVIC never routes an interrupt that is not enabled. */
#include <stdint.h>

extern uint32_t __data_start, __data_end, __data_load, __bss_start, __bss_end, __stack_top;
int main(void);

void Reset_Handler(void);
void Default_Handler(void);

/* Faults just stop; the host sees no m-ready and reports a timeout. */
void Default_Handler(void)
{
    for (;;) {}
}

void Reset_Handler(void)
{
    /* -mfloat-abi=hard: enable CP10/CP11 (CPACR) before any FP instruction. */
    volatile uint32_t *cpacr = (volatile uint32_t *)0xE000ED88u;
    *cpacr |= 0xFu << 20;
    __asm volatile("dsb\n isb");

    uint32_t *src = &__data_load, *dst = &__data_start;
    while (dst < &__data_end) *dst++ = *src++;
    for (dst = &__bss_start; dst < &__bss_end; ) *dst++ = 0;

    main();
    for (;;) {}
}

__attribute__((section(".isr_vector"), used))
void (*const vector_table[16])(void) = {
    (void (*)(void))&__stack_top,
    Reset_Handler,
    Default_Handler,   /* NMI */
    Default_Handler,   /* HardFault */
    Default_Handler,   /* MemManage */
    Default_Handler,   /* BusFault */
    Default_Handler,   /* UsageFault */
    0, 0, 0, 0,
    Default_Handler,   /* SVCall */
    Default_Handler,   /* DebugMon */
    0,
    Default_Handler,   /* PendSV */
    Default_Handler,   /* SysTick (not enabled) */
};
