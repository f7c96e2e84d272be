/* The retry context of one delivery: which attempt, since when, after
 * which delay. Travels with the event through retries and crashes (see
 * evbus_msg_t's version 2 members). */
#ifndef EVBUS_CORE_RETRY_CTX_H
#define EVBUS_CORE_RETRY_CTX_H

#include <stdint.h>

typedef struct evbus_retry_ctx {
    int attempt;        /* the attempt that runs or ran (1 = first) */
    int prev_delay_ms;  /* the backoff delay before it */
    int64_t first_ms;   /* wall-clock ms of the first attempt, 0 = none */
} evbus_retry_ctx_t;

#endif
