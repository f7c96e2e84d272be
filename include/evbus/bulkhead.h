/*
 * Bulkhead: a bound on how many calls to one dependency run at once, so a
 * slow dependency ties up at most that many threads and the rest of the
 * service keeps its own. Past the bound a call is refused with EVBUS_EBUSY
 * at once, or after waiting up to max_wait_ms for a place.
 *
 * The bulkhead bounds synchronous calls your code makes; for the handlers
 * of a subscription the same bound is evbus_sub_opts_t.concurrency (with
 * max_inflight). Used with a breaker (breaker.h), put the bulkhead outside:
 * a rejected call then never counts as a failure of the dependency.
 *
 * Thread-safety: every function may be called from any thread at once.
 */
#ifndef EVBUS_BULKHEAD_H
#define EVBUS_BULKHEAD_H

#include <stddef.h>
#include <stdint.h>

#include "evbus/evbus.h"
#include "evbus/export.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct evbus_bulkhead evbus_bulkhead_t;

/* Initialise with evbus_bulkhead_opts_init (it sets struct_size). */
typedef struct evbus_bulkhead_opts {
    size_t struct_size;  /* set by evbus_bulkhead_opts_init */
    int max_concurrent;  /* calls at once; >= 1, default 10 */
    int max_wait_ms;     /* how long a call waits for a place before
                            EVBUS_EBUSY; 0 (default) = refuse at once */
} evbus_bulkhead_opts_t;

/* Fills o with the defaults and sets struct_size. Thread-safe. */
EVBUS_API void evbus_bulkhead_opts_init_sized(
    evbus_bulkhead_opts_t *o, size_t struct_size);
static inline void evbus_bulkhead_opts_init(evbus_bulkhead_opts_t *o)
{
    evbus_bulkhead_opts_init_sized(o, sizeof *o);
}

/* Creates a bulkhead named "bulkhead". o NULL = defaults; o is copied.
 * NULL with a one-line reason in errstr when an option is out of range or
 * memory runs out. Free with evbus_bulkhead_free. Thread-safe. */
EVBUS_API evbus_bulkhead_t *evbus_bulkhead_new(const evbus_bulkhead_opts_t *o,
                                               char *errstr,
                                               size_t errstr_size);

/* Takes a place: EVBUS_OK (then call evbus_bulkhead_leave when the call
 * is done), or EVBUS_EBUSY when all max_concurrent are taken (after
 * waiting up to max_wait_ms), or EVBUS_EINVAL for b NULL. */
EVBUS_API int evbus_bulkhead_enter(evbus_bulkhead_t *b);

/* Gives back a place taken by evbus_bulkhead_enter. */
EVBUS_API void evbus_bulkhead_leave(evbus_bulkhead_t *b);

/* Runs fn(opaque) inside the bulkhead: fn's result, or EVBUS_EBUSY when no
 * place was free (fn did not run). Thread-safe when fn is. */
EVBUS_API int evbus_bulkhead_call(evbus_bulkhead_t *b, int (*fn)(void *),
                                  void *opaque);

/* Counters since creation. Initialise with evbus_bulkhead_stats_init. */
typedef struct evbus_bulkhead_stats {
    size_t struct_size;
    uint64_t admitted;   /* enter answered EVBUS_OK */
    uint64_t rejected;   /* enter answered EVBUS_EBUSY */
    int in_use;          /* places taken now */
    int max_in_use;      /* most places taken at once so far */
} evbus_bulkhead_stats_t;

/* Zeroes out and sets its struct_size. Thread-safe. */
EVBUS_API void evbus_bulkhead_stats_init_sized(
    evbus_bulkhead_stats_t *out, size_t struct_size);
static inline void evbus_bulkhead_stats_init(evbus_bulkhead_stats_t *out)
{
    evbus_bulkhead_stats_init_sized(out, sizeof *out);
}

/* Copies a snapshot of the counters into out (initialised by
 * evbus_bulkhead_stats_init). EVBUS_OK or EVBUS_EINVAL. */
EVBUS_API int evbus_bulkhead_stats(evbus_bulkhead_t *b,
                                   evbus_bulkhead_stats_t *out);

/* Names the bulkhead for log lines (the first refusal after an admission
 * is logged at WARN, component "bulkhead"). name is copied. EVBUS_OK,
 * EVBUS_EINVAL or EVBUS_ENOMEM. Call it before sharing b. */
EVBUS_API int evbus_bulkhead_set_name(evbus_bulkhead_t *b, const char *name);

/* The name; owned by b. */
EVBUS_API const char *evbus_bulkhead_name(const evbus_bulkhead_t *b);

/* Frees b. No call may be inside it and no other thread may use it. */
EVBUS_API void evbus_bulkhead_free(evbus_bulkhead_t *b);

#ifdef __cplusplus
}
#endif

#endif /* EVBUS_BULKHEAD_H */
