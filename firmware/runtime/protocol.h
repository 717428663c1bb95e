/* The serial command protocol of docs/protocol.md (EEMBC runner commands + tinylm- commands). */
#ifndef TINYLM_PROTOCOL_H
#define TINYLM_PROTOCOL_H
#include <stdint.h>

#define TINYLM_CMD_MAX 256      /* command characters, excluding the terminating '%' */

/* Static buffers are sized at compile time (no malloc); a model that needs more is refused at
 * infer time. Codegen may raise them with -D. */
#ifndef TINYLM_INPUT_MAX
#define TINYLM_INPUT_MAX 512    /* tokens */
#endif
#ifndef TINYLM_LABELS_MAX
#define TINYLM_LABELS_MAX 256   /* logits */
#endif

void protocol_boot(void);       /* prints m-boot-[tinylm] and m-ready */
void protocol_poll(void);       /* reads one command (blocking) and replies to it */
void protocol_handle(char *cmd);/* replies to one command (no '%'); exposed for ports/tests */

#endif
