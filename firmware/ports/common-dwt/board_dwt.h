/* DWT cycle counter: the hardware ports' time base and cost counter (board_dwt.c). */
#ifndef TINYLM_BOARD_DWT_H
#define TINYLM_BOARD_DWT_H

void dwt_init(void);   /* enable CYCCNT and calibrate the begin/end overhead; call last in board_init */

#endif
