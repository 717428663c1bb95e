/* Firmware entry: bring up the board, announce readiness, then serve commands forever. */
#include "board.h"
#include "protocol.h"

int main(void)
{
    board_init();
    protocol_boot();
    for (;;)
        protocol_poll();
}
