/* Cortex-M reset, shared by every port: vector table, .data copy, .bss clear, FPU on, then
 * main(). No vendor SDK. Symbols come from the linker script rendered by codegen/toolchain.py.
 * No peripheral interrupt is used (serial ports and clocks are polled), so the table stops
 * after the 16 system entries. A port that counts cost-timer wraps defines SysTick_Handler. */
#include <stdint.h>

extern uint32_t __data_start, __data_end, __data_load, __bss_start, __bss_end, __stack_top;
int main(void);

void Reset_Handler(void);
void Default_Handler(void);
void SysTick_Handler(void) __attribute__((weak, alias("Default_Handler")));

/* Faults just stop: the host sees no m-ready and reports a timeout. */
void Default_Handler(void)
{
    for (;;) {}
}

void Reset_Handler(void)
{
    /* The build is -mfloat-abi=hard, so CP10/CP11 must be enabled before any FP instruction. */
    volatile uint32_t *cpacr = (volatile uint32_t *)0xE000ED88u;
    *cpacr |= 0xFu << 20;
    __asm volatile("dsb\n isb");

    uint32_t *src = &__data_load, *dst = &__data_start;
    while (dst < &__data_end) *dst++ = *src++;
    for (dst = &__bss_start; dst < &__bss_end; ) *dst++ = 0;

    main();
    for (;;) {}
}

/* Initial SP, reset, then the 14 system exceptions (SysTick counts cost-timer
 * wraps); no peripheral interrupts are used. */
__attribute__((section(".isr_vector"), used))
void (*const vector_table[16])(void) = {
    (void (*)(void))&__stack_top,
    Reset_Handler,
    Default_Handler, Default_Handler, Default_Handler, Default_Handler, Default_Handler,
    0, 0, 0, 0,
    Default_Handler, Default_Handler, 0,
    Default_Handler, SysTick_Handler,
};
