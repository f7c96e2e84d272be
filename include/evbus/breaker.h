/*
 * Circuit breaker with resilience4j semantics, for synchronous calls between
 * services (e.g. the todo service asking the user service whether a user
 * exists).
 *
 *   CLOSED    calls go ahead; outcomes fill a count-based sliding window of
 *             the last window_size calls. Goes OPEN when, with at least
 *             minimum_calls recorded, the window's failure rate is
 *             >= failure_rate_pct, or after consecutive_failures failures in
 *             a row (when that rule is on).
 *   OPEN      allow() answers 0 at once for open_ms. The first allow() or
 *             evbus_breaker_state() after that moves to HALF_OPEN.
 *   HALF_OPEN admits exactly half_open_calls probe calls; further allow()
 *             answer 0 until every probe has been recorded. Then the probes'
 *             failure rate decides: >= failure_rate_pct -> OPEN again, else
 *             CLOSED with an empty window. As in resilience4j, a failed probe
 *             does not re-open early: the verdict waits for all probes.
 *             With the rate rule off (failure_rate_pct 0) any failed probe
 *             re-opens.
 *
 * Outcomes recorded while OPEN (calls admitted before the breaker opened that
 * finish late) and records beyond the admitted probes in HALF_OPEN only count
 * in the statistics; they do not move the state. allow/record carry no
 * per-call token, so a late outcome that arrives in HALF_OPEN while probes
 * are outstanding is taken as a probe's outcome.
 *
 * Each state change is logged (component "breaker", WARN when opening, INFO
 * otherwise) with the breaker's name and the reason, e.g.
 * "users: CLOSED -> OPEN (6 of the last 10 calls failed (>= 50%))"; the log
 * callback runs after the breaker's lock is released.
 *
 * To bound how many calls run at once (a bulkhead), see bulkhead.h.
 *
 * Thread-safety: every function may be called from any thread at once; one
 * mutex per breaker serialises state changes.
 */
#ifndef EVBUS_BREAKER_H
#define EVBUS_BREAKER_H

#include <stddef.h>
#include <stdint.h>

#include "evbus/evbus.h" /* error codes: EVBUS_EBREAKER, EVBUS_EINVAL */
#include "evbus/export.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum evbus_breaker_state {
    EVBUS_BREAKER_CLOSED = 0,
    EVBUS_BREAKER_OPEN = 1,
    EVBUS_BREAKER_HALF_OPEN = 2
} evbus_breaker_state_t;

typedef struct evbus_breaker evbus_breaker_t;

/* Called after every state change, with the breaker's lock held, so calls
 * arrive one at a time and in the order the changes happened. The callback
 * may call any evbus_breaker_* function on the same breaker (the lock is
 * recursive) but should be quick: other callers wait meanwhile. */
typedef void (*evbus_breaker_state_fn)(evbus_breaker_state_t old_state,
                                       evbus_breaker_state_t new_state,
                                       void *opaque);

/* Initialise with evbus_breaker_opts_init (it sets struct_size) and change
 * what you need; fields added in later releases keep their defaults. */
typedef struct evbus_breaker_opts {
    size_t struct_size;       /* set by evbus_breaker_opts_init */
    int window_size;          /* calls in the count-based sliding window; >= 1 */
    int minimum_calls;        /* calls before the failure rate is judged;
                                 values < 1 mean 1, values above window_size
                                 mean window_size (as resilience4j) */
    int failure_rate_pct;     /* OPEN at or above this failure rate, 1..100;
                                 0 = rate rule off */
    int consecutive_failures; /* OPEN after this many in a row; 0 = off */
    int open_ms;              /* how long OPEN rejects calls; >= 0 */
    int half_open_calls;      /* probe calls admitted in HALF_OPEN; >= 1 */
    uint64_t (*now_ms)(void *clock_opaque); /* NULL = monotonic clock */
    void *clock_opaque;
} evbus_breaker_opts_t;
/* (The name and the state callback are set with evbus_breaker_set_name and
 * evbus_breaker_on_state.) */

/* Fills o with defaults sized for service-to-service calls (resilience4j's
 * are window 100 / minimum 100 / 50% / 60 s / 10 probes; these react sooner):
 * window_size 20, minimum_calls 10, failure_rate_pct 50,
 * consecutive_failures 5, open_ms 10000, half_open_calls 3,
 * monotonic clock; and sets struct_size. Thread-safe. */
EVBUS_API void evbus_breaker_opts_init_sized(
    evbus_breaker_opts_t *o, size_t struct_size);
static inline void evbus_breaker_opts_init(evbus_breaker_opts_t *o)
{
    evbus_breaker_opts_init_sized(o, sizeof *o);
}

/* Creates a CLOSED breaker named "breaker" without a state callback. o is
 * copied; the caller keeps it. o NULL = defaults. Returns NULL with a
 * one-line reason in errstr (may be NULL when errstr_size is 0) when an
 * option is out of range (see the field comments), o was not initialised by
 * evbus_breaker_opts_init, or memory runs out. Free with evbus_breaker_free.
 * Thread-safe. */
EVBUS_API evbus_breaker_t *evbus_breaker_new(const evbus_breaker_opts_t *o,
                                             char *errstr,
                                             size_t errstr_size);

/* Asks permission for one call: 1 = the call may go ahead and its outcome
 * must then be given to evbus_breaker_record; 0 = rejected (OPEN, or all
 * HALF_OPEN probes are taken), do not call. Thread-safe. */
EVBUS_API int evbus_breaker_allow(evbus_breaker_t *b);

/* Records the outcome of a call that allow() admitted: ok != 0 success,
 * 0 failure. Thread-safe. */
EVBUS_API void evbus_breaker_record(evbus_breaker_t *b, int ok);

/* The current state (an OPEN breaker whose open_ms have passed moves to
 * HALF_OPEN here, which is why b is not const). b NULL answers
 * EVBUS_BREAKER_CLOSED. Thread-safe. */
EVBUS_API evbus_breaker_state_t evbus_breaker_state(evbus_breaker_t *b);

/* Runs fn through the breaker. fn returns 0 on success (anything else is a
 * recorded failure). fallback (graceful degradation; may be NULL) runs when
 * the breaker rejects the call or fn fails. Returns the result of what ran
 * last: fn's result when fn succeeded or failed without a fallback,
 * EVBUS_EBREAKER when rejected without a fallback, otherwise fallback's
 * result. fn NULL -> EVBUS_EINVAL. Thread-safe when fn and fallback are. */
EVBUS_API int evbus_breaker_call(evbus_breaker_t *b, int (*fn)(void *),
                                 int (*fallback)(void *), void *opaque);

/* Like evbus_breaker_call, but the fallback learns why it runs: err is
 * EVBUS_EBREAKER when the breaker rejected the call, else fn's result.
 * Thread-safe when fn and fallback are. */
EVBUS_API int evbus_breaker_call_ex(evbus_breaker_t *b, int (*fn)(void *),
                                    int (*fallback)(void *opaque, int err),
                                    void *opaque);

/* Sets (or with fn NULL clears) the state-change callback. Set it right
 * after evbus_breaker_new to see every change. Thread-safe. */
EVBUS_API void evbus_breaker_on_state(evbus_breaker_t *b,
                                      evbus_breaker_state_fn fn, void *opaque);

/* Counters since creation (reset() keeps them). Initialise with
 * evbus_breaker_stats_init before evbus_breaker_stats. */
typedef struct evbus_breaker_stats {
    size_t struct_size;
    uint64_t calls;       /* allow() answered 1 */
    uint64_t rejected;    /* allow() answered 0 */
    uint64_t successes;   /* record(ok != 0) */
    uint64_t failures;    /* record(0) */
    uint64_t opened;      /* transitions to OPEN */
    evbus_breaker_state_t state; /* state when read */
    int window_calls;     /* outcomes in the CLOSED window now */
    int window_failures;  /* failures among them */
} evbus_breaker_stats_t;

/* Zeroes out and sets its struct_size. Thread-safe. */
EVBUS_API void evbus_breaker_stats_init_sized(
    evbus_breaker_stats_t *out, size_t struct_size);
static inline void evbus_breaker_stats_init(evbus_breaker_stats_t *out)
{
    evbus_breaker_stats_init_sized(out, sizeof *out);
}

/* Copies a consistent snapshot of the counters into out (initialised by
 * evbus_breaker_stats_init; like evbus_breaker_state it may move an OPEN
 * breaker to HALF_OPEN). EVBUS_OK, or EVBUS_EINVAL for NULL arguments or an
 * uninitialised out. Thread-safe. */
EVBUS_API int evbus_breaker_stats(evbus_breaker_t *b,
                                  evbus_breaker_stats_t *out);

/* Names the breaker for log lines (e.g. the service it guards). name is
 * copied. Returns EVBUS_OK, EVBUS_EINVAL (b or name NULL) or EVBUS_ENOMEM.
 * Call it before sharing b between threads: the old name is freed. */
EVBUS_API int evbus_breaker_set_name(evbus_breaker_t *b, const char *name);

/* The breaker's name ("breaker" unless set); owned by b, valid until
 * evbus_breaker_set_name or evbus_breaker_free. Thread-safe while no
 * thread calls evbus_breaker_set_name. */
EVBUS_API const char *evbus_breaker_name(const evbus_breaker_t *b);

/* "CLOSED", "OPEN", "HALF_OPEN" or "UNKNOWN". Static string. Thread-safe. */
EVBUS_API const char *evbus_breaker_state_name(evbus_breaker_state_t state);

/* Back to CLOSED with an empty window (an operator's override); fires the
 * callback when the state changes. Counters are kept. Thread-safe. */
EVBUS_API void evbus_breaker_reset(evbus_breaker_t *b);

/* Frees b. No other thread may be using it. NULL is fine. */
EVBUS_API void evbus_breaker_free(evbus_breaker_t *b);

#ifdef __cplusplus
}
#endif

#endif /* EVBUS_BREAKER_H */
