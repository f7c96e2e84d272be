/*
 * Circuit breaker (include/evbus/breaker.h): the resilience4j state machine
 * over a count-based sliding window, guarded by one recursive mutex so the
 * state-change callback can look at the breaker it is called for.
 *
 * Log lines about state changes are formatted under the lock and handed to
 * the application's log callback only once the outermost lock is released:
 * a log callback must never run inside the library's locks.
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/patterns.h"
#include "support/clock.h"
#include "support/errstr.h"
#include "support/structs.h"

#include "evbus/breaker.h"

/* Log lines waiting for the lock to be released. A call changes the state
 * at most twice (OPEN -> HALF_OPEN -> OPEN/CLOSED), a callback nesting
 * calls a few times more. */
#define PENDING_LOGS 8

typedef struct {
    int level;
    char msg[200];
} pending_log_t;

struct evbus_breaker {
    pthread_mutex_t lock; /* recursive; guards everything below */
    int depth;            /* how deep the lock is held */
    pending_log_t logs[PENDING_LOGS];
    int nlogs;
    evbus_breaker_opts_t o; /* validated copy */
    char *name;
    evbus_breaker_state_fn on_state;
    void *on_state_opaque;
    int min_calls;          /* minimum_calls clamped to 1..window_size */

    evbus_breaker_state_t state;
    uint64_t opened_at_ms;  /* when the breaker last went OPEN */

    /* CLOSED: ring of the last window_size outcomes (1 = failure). */
    unsigned char *ring;
    int ring_next;          /* slot the next outcome goes into */
    int win_calls;
    int win_failures;
    int consecutive;        /* failures in a row */

    /* HALF_OPEN */
    int probes_admitted;
    int probes_recorded;
    int probe_failures;

    evbus_breaker_stats_t st; /* calls, rejected, successes, failures, opened */
};

void evbus_breaker_opts_init_sized(evbus_breaker_opts_t *out, size_t size)
{
    evbus_breaker_opts_t defaults, *o = &defaults;
    *o = (evbus_breaker_opts_t){
        .struct_size = sizeof *o,
        .window_size = 20,
        .minimum_calls = 10,
        .failure_rate_pct = 50,
        .consecutive_failures = 5,
        .open_ms = 10000,
        .half_open_calls = 3,
    };
    evbus__struct_defaults(out, size, o, sizeof *o);
}

const char *evbus_breaker_state_name(evbus_breaker_state_t state)
{
    switch (state) {
    case EVBUS_BREAKER_CLOSED: return "CLOSED";
    case EVBUS_BREAKER_OPEN: return "OPEN";
    case EVBUS_BREAKER_HALF_OPEN: return "HALF_OPEN";
    default: return "UNKNOWN";
    }
}

static uint64_t now_ms(const evbus_breaker_t *b)
{
    return b->o.now_ms ? b->o.now_ms(b->o.clock_opaque) : evbus__mono_ms();
}

static void lock(evbus_breaker_t *b)
{
    pthread_mutex_lock(&b->lock);
    b->depth++;
}

/* Releases the lock; the outermost release also emits the log lines the
 * locked section queued. */
static void unlock(evbus_breaker_t *b)
{
    pending_log_t logs[PENDING_LOGS];
    int n = 0;
    if (--b->depth == 0 && b->nlogs) {
        n = b->nlogs;
        memcpy(logs, b->logs, (size_t)n * sizeof logs[0]);
        b->nlogs = 0;
    }
    pthread_mutex_unlock(&b->lock);
    for (int i = 0; i < n; i++)
        evbus__log(logs[i].level, "breaker", "%s", logs[i].msg);
}

static void clear_window(evbus_breaker_t *b)
{
    memset(b->ring, 0, (size_t)b->o.window_size);
    b->ring_next = 0;
    b->win_calls = 0;
    b->win_failures = 0;
    b->consecutive = 0;
}

/* Lock held. Changes state, resets what the new state starts from, logs,
 * then tells the callback (still under the lock, so callbacks are ordered). */
static void transition(evbus_breaker_t *b, evbus_breaker_state_t to,
                       const char *why)
{
    evbus_breaker_state_t from = b->state;
    if (from == to)
        return;
    b->state = to;
    switch (to) {
    case EVBUS_BREAKER_OPEN:
        b->opened_at_ms = now_ms(b);
        b->st.opened++;
        break;
    case EVBUS_BREAKER_HALF_OPEN:
        b->probes_admitted = 0;
        b->probes_recorded = 0;
        b->probe_failures = 0;
        break;
    case EVBUS_BREAKER_CLOSED:
        clear_window(b);
        break;
    }
    if (b->nlogs < PENDING_LOGS) {
        pending_log_t *l = &b->logs[b->nlogs++];
        l->level = to == EVBUS_BREAKER_OPEN ? EVBUS_LOG_WARN : EVBUS_LOG_INFO;
        snprintf(l->msg, sizeof l->msg, "%s: %s -> %s (%s)", b->name,
                 evbus_breaker_state_name(from), evbus_breaker_state_name(to),
                 why);
    }
    if (b->on_state)
        b->on_state(from, to, b->on_state_opaque);
}

/* Lock held. OPEN whose wait is over becomes HALF_OPEN. */
static void maybe_half_open(evbus_breaker_t *b)
{
    if (b->state != EVBUS_BREAKER_OPEN)
        return;
    uint64_t now = now_ms(b);
    if (now >= b->opened_at_ms &&
        now - b->opened_at_ms >= (uint64_t)b->o.open_ms)
        transition(b, EVBUS_BREAKER_HALF_OPEN, "open time elapsed");
}

/* The options as of the first release that carried struct_size. */
#define OPTS_MIN_SIZE EVBUS__SIZE_THROUGH(evbus_breaker_opts_t, clock_opaque)
#define STATS_MIN_SIZE                                                         \
    EVBUS__SIZE_THROUGH(evbus_breaker_stats_t, window_failures)

evbus_breaker_t *evbus_breaker_new(const evbus_breaker_opts_t *opts,
                                   char *errstr, size_t n)
{
    evbus_breaker_opts_t o;
    evbus_breaker_opts_init(&o);
    if (opts && evbus__struct_in(&o, sizeof o, opts, OPTS_MIN_SIZE)) {
        evbus__seterr(errstr, n, "breaker options not initialised with "
                      "evbus_breaker_opts_init");
        return NULL;
    }
    const char *bad = o.window_size < 1 ? "window_size must be >= 1"
                      : o.failure_rate_pct < 0 || o.failure_rate_pct > 100
                          ? "failure_rate_pct must be 0..100"
                      : o.consecutive_failures < 0
                          ? "consecutive_failures must be >= 0"
                      : o.open_ms < 0         ? "open_ms must be >= 0"
                      : o.half_open_calls < 1 ? "half_open_calls must be >= 1"
                                              : NULL;
    if (bad) {
        evbus__seterr(errstr, n, "breaker: %s", bad);
        return NULL;
    }

    evbus_breaker_t *b = calloc(1, sizeof *b);
    if (!b) {
        evbus__seterr(errstr, n, "out of memory");
        return NULL;
    }
    b->name = strdup("breaker");
    b->ring = calloc((size_t)o.window_size, 1);
    pthread_mutexattr_t attr;
    int mutex_ok = 0;
    if (pthread_mutexattr_init(&attr) == 0) {
        pthread_mutexattr_settype(&attr, PTHREAD_MUTEX_RECURSIVE);
        mutex_ok = pthread_mutex_init(&b->lock, &attr) == 0;
        pthread_mutexattr_destroy(&attr);
    }
    if (!b->name || !b->ring || !mutex_ok) {
        if (mutex_ok)
            pthread_mutex_destroy(&b->lock);
        free(b->name);
        free(b->ring);
        free(b);
        evbus__seterr(errstr, n, "out of memory");
        return NULL;
    }
    b->o = o;
    b->min_calls = o.minimum_calls < 1 ? 1 : o.minimum_calls;
    if (b->min_calls > o.window_size)
        b->min_calls = o.window_size;
    b->state = EVBUS_BREAKER_CLOSED;
    return b;
}

void evbus_breaker_free(evbus_breaker_t *b)
{
    if (!b)
        return;
    pthread_mutex_destroy(&b->lock);
    free(b->name);
    free(b->ring);
    free(b);
}

int evbus_breaker_allow(evbus_breaker_t *b)
{
    if (!b)
        return 0;
    lock(b);
    maybe_half_open(b);
    int ok;
    switch (b->state) {
    case EVBUS_BREAKER_CLOSED:
        ok = 1;
        break;
    case EVBUS_BREAKER_HALF_OPEN:
        ok = b->probes_admitted < b->o.half_open_calls;
        if (ok)
            b->probes_admitted++;
        break;
    default:
        ok = 0;
        break;
    }
    if (ok)
        b->st.calls++;
    else
        b->st.rejected++;
    unlock(b);
    return ok;
}

/* Lock held. One outcome into the CLOSED window; may open the breaker. */
static void record_closed(evbus_breaker_t *b, int failed)
{
    int size = b->o.window_size;
    if (b->win_calls == size)
        b->win_failures -= b->ring[b->ring_next]; /* oldest drops out */
    else
        b->win_calls++;
    b->ring[b->ring_next] = (unsigned char)failed;
    b->win_failures += failed;
    b->ring_next = (b->ring_next + 1) % size;
    b->consecutive = failed ? b->consecutive + 1 : 0;

    char why[96];
    int limit = b->o.consecutive_failures;
    if (limit > 0 && b->consecutive >= limit) {
        snprintf(why, sizeof why, "%d consecutive failures", b->consecutive);
        transition(b, EVBUS_BREAKER_OPEN, why);
        return;
    }
    int pct = b->o.failure_rate_pct;
    /* failures/calls >= pct/100, in integers */
    if (pct > 0 && b->win_calls >= b->min_calls &&
        (int64_t)b->win_failures * 100 >= (int64_t)pct * b->win_calls) {
        snprintf(why, sizeof why, "%d of the last %d calls failed (>= %d%%)",
                 b->win_failures, b->win_calls, pct);
        transition(b, EVBUS_BREAKER_OPEN, why);
    }
}

/* Lock held. One probe outcome; the verdict comes with the last probe. */
static void record_half_open(evbus_breaker_t *b, int failed)
{
    if (b->probes_recorded >= b->probes_admitted)
        return; /* not a probe: a call admitted before the breaker opened */
    b->probes_recorded++;
    b->probe_failures += failed;
    int n = b->o.half_open_calls;
    if (b->probes_recorded < n)
        return;
    /* With the rate rule off, one failed probe is enough to re-open. */
    int pct = b->o.failure_rate_pct > 0 ? b->o.failure_rate_pct : 1;
    char why[96];
    snprintf(why, sizeof why, "%d of %d probe calls failed", b->probe_failures,
             n);
    if ((int64_t)b->probe_failures * 100 >= (int64_t)pct * n)
        transition(b, EVBUS_BREAKER_OPEN, why);
    else
        transition(b, EVBUS_BREAKER_CLOSED, why);
}

void evbus_breaker_record(evbus_breaker_t *b, int ok)
{
    if (!b)
        return;
    int failed = ok ? 0 : 1;
    lock(b);
    if (failed)
        b->st.failures++;
    else
        b->st.successes++;
    switch (b->state) {
    case EVBUS_BREAKER_CLOSED:
        record_closed(b, failed);
        break;
    case EVBUS_BREAKER_HALF_OPEN:
        record_half_open(b, failed);
        break;
    default:
        break; /* OPEN: a late outcome; counted above, no state effect */
    }
    unlock(b);
}

evbus_breaker_state_t evbus_breaker_state(evbus_breaker_t *b)
{
    if (!b)
        return EVBUS_BREAKER_CLOSED;
    lock(b);
    maybe_half_open(b);
    evbus_breaker_state_t s = b->state;
    unlock(b);
    return s;
}

void evbus_breaker_stats_init_sized(evbus_breaker_stats_t *out, size_t size)
{
    evbus__struct_init(out, size);
}

int evbus_breaker_stats(evbus_breaker_t *b, evbus_breaker_stats_t *out)
{
    if (!b || !out)
        return EVBUS_EINVAL;
    evbus_breaker_stats_t st;
    lock(b);
    maybe_half_open(b);
    st = b->st;
    st.struct_size = sizeof st;
    st.state = b->state;
    st.window_calls = b->win_calls;
    st.window_failures = b->win_failures;
    unlock(b);
    return evbus__struct_out(out, &st, sizeof st, STATS_MIN_SIZE);
}

const char *evbus_breaker_name(const evbus_breaker_t *b)
{
    return b ? b->name : "breaker";
}

void evbus_breaker_on_state(evbus_breaker_t *b, evbus_breaker_state_fn fn,
                            void *opaque)
{
    if (!b)
        return;
    lock(b);
    b->on_state = fn;
    b->on_state_opaque = fn ? opaque : NULL;
    unlock(b);
}

int evbus_breaker_set_name(evbus_breaker_t *b, const char *name)
{
    if (!b || !name)
        return EVBUS_EINVAL;
    char *copy = strdup(name);
    if (!copy)
        return EVBUS_ENOMEM;
    lock(b);
    char *old = b->name;
    b->name = copy;
    unlock(b);
    free(old);
    return EVBUS_OK;
}

void evbus_breaker_reset(evbus_breaker_t *b)
{
    if (!b)
        return;
    lock(b);
    if (b->state == EVBUS_BREAKER_CLOSED)
        clear_window(b);
    else
        transition(b, EVBUS_BREAKER_CLOSED, "reset");
    unlock(b);
}

int evbus_breaker_call_ex(evbus_breaker_t *b, int (*fn)(void *),
                          int (*fallback)(void *opaque, int err), void *opaque)
{
    if (!b || !fn)
        return EVBUS_EINVAL;
    if (!evbus_breaker_allow(b))
        return fallback ? fallback(opaque, EVBUS_EBREAKER) : EVBUS_EBREAKER;
    int rc = fn(opaque);
    evbus_breaker_record(b, rc == 0);
    if (rc != 0 && fallback)
        return fallback(opaque, rc);
    return rc;
}

int evbus_breaker_call(evbus_breaker_t *b, int (*fn)(void *),
                       int (*fallback)(void *), void *opaque)
{
    if (!b || !fn)
        return EVBUS_EINVAL;
    if (!evbus_breaker_allow(b))
        return fallback ? fallback(opaque) : EVBUS_EBREAKER;
    int rc = fn(opaque);
    evbus_breaker_record(b, rc == 0);
    if (rc != 0 && fallback)
        return fallback(opaque);
    return rc;
}
