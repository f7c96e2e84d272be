/*
 * Backoff policy: exponential delays with jitter, bounded by attempts and
 * elapsed time. The same policy drives the delivery pipeline's RETRY handling
 * (evbus_sub_opts_t.retry) and evbus_retry_call for synchronous calls.
 *
 * Determinism: every source of randomness and time is injectable, so tests
 * can replay exact delays under a fake clock.
 */
#ifndef EVBUS_RETRY_H
#define EVBUS_RETRY_H

#include <stddef.h>
#include <stdint.h>

#include "evbus/export.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum {
    EVBUS_JITTER_NONE = 0,    /* delay = min(max, initial * mult^(n-1)) */
    EVBUS_JITTER_FULL = 1,    /* uniform in [0, that] */
    EVBUS_JITTER_EQUAL = 2,   /* that/2 + uniform in [0, that/2] */
    EVBUS_JITTER_DECORRELATED = 3 /* min(max, uniform in [initial, prev*3]) */
} evbus_jitter_t;

/* Initialise with evbus_retry_policy_init (it sets struct_size) and change
 * what you need; fields added in later releases keep their defaults. */
typedef struct evbus_retry_policy {
    size_t struct_size;   /* set by evbus_retry_policy_init */
    int initial_ms;       /* first delay; default 100 */
    int max_ms;           /* cap on one delay; default 30000 */
    double multiplier;    /* growth per attempt; default 2.0 */
    evbus_jitter_t jitter; /* default EVBUS_JITTER_FULL */
    int max_attempts;     /* total attempts including the first; default 5;
                             0 = unlimited (then max_elapsed_ms should be set) */
    int max_elapsed_ms;   /* give up when the next attempt would start later
                             than this after the first; 0 = no limit */
    /* Random source: returns uniformly distributed 64-bit values.
     * NULL = the library's own thread-safe generator. */
    uint64_t (*rand_u64)(void *rand_opaque);
    void *rand_opaque;
    /* Clock in milliseconds and sleep, used by evbus_retry_call only.
     * NULL = monotonic clock / nanosleep. */
    uint64_t (*now_ms)(void *clock_opaque);
    void (*sleep_ms)(void *clock_opaque, int ms);
    void *clock_opaque;
} evbus_retry_policy_t;

/* Fills p with the defaults listed above and sets p->struct_size.
 * Thread-safe. Every function below refuses (EVBUS_EINVAL, or 0 / a zero
 * delay where it returns no error) a policy whose struct_size was not set
 * by this function. */
EVBUS_API void evbus_retry_policy_init_sized(
    evbus_retry_policy_t *p, size_t struct_size);
static inline void evbus_retry_policy_init(evbus_retry_policy_t *p)
{
    evbus_retry_policy_init_sized(p, sizeof *p);
}

/*
 * The delay before attempt number `attempt` + 1, after `attempt` attempts
 * (1-based) have failed. prev_delay_ms is the delay used before the previous
 * attempt (only decorrelated jitter uses it; pass 0 the first time).
 * Returns the delay in milliseconds (>= 0). Never exceeds max_ms.
 * Thread-safe when the random source is.
 */
EVBUS_API int evbus_retry_delay_ms(const evbus_retry_policy_t *p, int attempt,
                                   int prev_delay_ms);

/* 1 when another attempt is allowed after `attempt` failed attempts that
 * started elapsed_ms ago with next_delay_ms still to wait, else 0.
 * Thread-safe. */
EVBUS_API int evbus_retry_should_retry(const evbus_retry_policy_t *p,
                                       int attempt, uint64_t elapsed_ms,
                                       int next_delay_ms);

/* A call evbus_retry_call may repeat: returns 0 on success, or a negative
 * evbus error; the call is repeated only while evbus_err_retriable() says
 * the error is retriable. */
typedef int (*evbus_retry_fn)(void *opaque);

/*
 * Calls fn until it succeeds, fails with a non-retriable error, or the policy
 * gives up, sleeping the backoff delay between attempts (through the
 * policy's sleep_ms, so a fake clock makes it instant).
 * Returns 0 or the last error fn returned. Thread-safe when fn is.
 */
EVBUS_API int evbus_retry_call(const evbus_retry_policy_t *p, evbus_retry_fn fn,
                               void *opaque);

#ifdef __cplusplus
}
#endif

#endif /* EVBUS_RETRY_H */
