/*
 * Repeated failures logged once, then as a count with a growing interval
 * (1 s doubling to a minute), so a broker or disk that stays broken does
 * not flood the application's log. Not thread-safe: one per caller.
 */
#ifndef EVBUS_SUPPORT_LOGRATE_H
#define EVBUS_SUPPORT_LOGRATE_H

#include <stdbool.h>
#include <stdint.h>

typedef struct evbus__lograte {
    int err;              /* the failure being counted, 0 = none */
    uint64_t count;       /* occurrences since it began */
    uint64_t logged;      /* count when it was last logged */
    uint64_t next_ms;     /* monotonic: when it may be logged again */
    uint64_t interval_ms; /* doubles up to a minute */
} evbus__lograte_t;
/* A failure err happened: true when it should be logged now (the first
 * time, or a different error, or its backoff passed); *repeats then says
 * how often it happened since it was last logged (0 the first time). */
bool evbus__lograte_fail(evbus__lograte_t *r, int err, uint64_t *repeats);
/* Success: how many failures preceded it (log a recovery when > 0), and
 * the state is reset. */
uint64_t evbus__lograte_ok(evbus__lograte_t *r);

#endif
