/*
 * Bulkhead (include/evbus/bulkhead.h): a counting semaphore with a bounded
 * wait, counters, and a log line when it starts refusing - emitted after
 * the lock is released.
 */
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/patterns.h"
#include "evbus/bulkhead.h"
#include "support/cond.h"
#include "support/errstr.h"
#include "support/structs.h"

struct evbus_bulkhead {
    pthread_mutex_t mu;
    pthread_cond_t freed;   /* a place was given back */
    evbus_bulkhead_opts_t o;
    char *name;
    int in_use, max_in_use;
    uint64_t admitted, rejected;
    bool refusing;          /* the last enter was refused (log once) */
};

#define OPTS_MIN_SIZE EVBUS__SIZE_THROUGH(evbus_bulkhead_opts_t, max_wait_ms)
#define STATS_MIN_SIZE EVBUS__SIZE_THROUGH(evbus_bulkhead_stats_t, max_in_use)

void evbus_bulkhead_opts_init_sized(evbus_bulkhead_opts_t *out, size_t size)
{
    evbus_bulkhead_opts_t defaults, *o = &defaults;
    *o = (evbus_bulkhead_opts_t){sizeof *o, 10, 0};
    evbus__struct_defaults(out, size, o, sizeof *o);
}

evbus_bulkhead_t *evbus_bulkhead_new(const evbus_bulkhead_opts_t *opts,
                                     char *errstr, size_t n)
{
    evbus_bulkhead_opts_t o;
    evbus_bulkhead_opts_init(&o);
    if (opts && evbus__struct_in(&o, sizeof o, opts, OPTS_MIN_SIZE)) {
        evbus__seterr(errstr, n, "bulkhead options not initialised with "
                      "evbus_bulkhead_opts_init");
        return NULL;
    }
    if (o.max_concurrent < 1 || o.max_wait_ms < 0) {
        evbus__seterr(errstr, n, "bulkhead: max_concurrent must be >= 1 and "
                      "max_wait_ms >= 0 (got %d, %d)", o.max_concurrent,
                      o.max_wait_ms);
        return NULL;
    }
    evbus_bulkhead_t *b = calloc(1, sizeof *b);
    if (!b || !(b->name = strdup("bulkhead"))) {
        free(b);
        evbus__seterr(errstr, n, "out of memory");
        return NULL;
    }
    pthread_mutex_init(&b->mu, NULL);
    evbus__cond_init(&b->freed);
    b->o = o;
    return b;
}

void evbus_bulkhead_free(evbus_bulkhead_t *b)
{
    if (!b)
        return;
    pthread_mutex_destroy(&b->mu);
    pthread_cond_destroy(&b->freed);
    free(b->name);
    free(b);
}

int evbus_bulkhead_enter(evbus_bulkhead_t *b)
{
    if (!b)
        return EVBUS_EINVAL;
    pthread_mutex_lock(&b->mu);
    if (b->in_use >= b->o.max_concurrent && b->o.max_wait_ms > 0) {
        struct timespec until = evbus__deadline_in(b->o.max_wait_ms);
        while (b->in_use >= b->o.max_concurrent &&
               evbus__cond_wait_until(&b->freed, &b->mu, &until) == 0)
            ;
    }
    bool ok = b->in_use < b->o.max_concurrent;
    bool first_refusal = !ok && !b->refusing;
    char name[128] = "";
    if (ok) {
        if (++b->in_use > b->max_in_use)
            b->max_in_use = b->in_use;
        b->admitted++;
        b->refusing = false;
    } else {
        b->rejected++;
        b->refusing = true;
        snprintf(name, sizeof name, "%s", b->name);
    }
    int limit = b->o.max_concurrent;
    pthread_mutex_unlock(&b->mu);
    if (first_refusal)
        evbus__log(EVBUS_LOG_WARN, "bulkhead",
                   "%s: all %d places taken; refusing calls", name, limit);
    return ok ? EVBUS_OK : EVBUS_EBUSY;
}

void evbus_bulkhead_leave(evbus_bulkhead_t *b)
{
    if (!b)
        return;
    pthread_mutex_lock(&b->mu);
    if (b->in_use > 0)
        b->in_use--;
    pthread_cond_signal(&b->freed);
    pthread_mutex_unlock(&b->mu);
}

int evbus_bulkhead_call(evbus_bulkhead_t *b, int (*fn)(void *), void *opaque)
{
    if (!b || !fn)
        return EVBUS_EINVAL;
    int rc = evbus_bulkhead_enter(b);
    if (rc != EVBUS_OK)
        return rc;
    rc = fn(opaque);
    evbus_bulkhead_leave(b);
    return rc;
}

void evbus_bulkhead_stats_init_sized(evbus_bulkhead_stats_t *out, size_t size)
{
    evbus__struct_init(out, size);
}

int evbus_bulkhead_stats(evbus_bulkhead_t *b, evbus_bulkhead_stats_t *out)
{
    if (!b || !out)
        return EVBUS_EINVAL;
    evbus_bulkhead_stats_t st;
    evbus_bulkhead_stats_init(&st);
    pthread_mutex_lock(&b->mu);
    st.admitted = b->admitted;
    st.rejected = b->rejected;
    st.in_use = b->in_use;
    st.max_in_use = b->max_in_use;
    pthread_mutex_unlock(&b->mu);
    return evbus__struct_out(out, &st, sizeof st, STATS_MIN_SIZE);
}

int evbus_bulkhead_set_name(evbus_bulkhead_t *b, const char *name)
{
    if (!b || !name)
        return EVBUS_EINVAL;
    char *copy = strdup(name);
    if (!copy)
        return EVBUS_ENOMEM;
    pthread_mutex_lock(&b->mu);
    char *old = b->name;
    b->name = copy;
    pthread_mutex_unlock(&b->mu);
    free(old);
    return EVBUS_OK;
}

const char *evbus_bulkhead_name(const evbus_bulkhead_t *b)
{
    return b ? b->name : "bulkhead";
}
