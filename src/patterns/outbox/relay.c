/*
 * The outbox relay's life cycle: options, its own SQLite connection and
 * lock file, the background thread and its wake-up/backoff policy. One
 * round of work is in relay_round.c.
 */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "core/patterns.h"
#include "relay_internal.h"
#include "support/cond.h"
#include "support/structs.h"
#include "sql_util.h"

/* The relay only writes its progress mark (and parks). Losing the last
 * marks in a power failure means republishing, which consumers absorb, so
 * in WAL mode - where NORMAL cannot corrupt the file - it does not pay an
 * fsync per batch. Other journal modes keep the connection's default. */
static void relay_relax_sync(sqlite3 *db)
{
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(db, "PRAGMA journal_mode", -1, &st, NULL) !=
        SQLITE_OK)
        return;
    int wal = sqlite3_step(st) == SQLITE_ROW &&
              sqlite3_stricmp((const char *)sqlite3_column_text(st, 0),
                              "wal") == 0;
    sqlite3_finalize(st);
    if (wal)
        sqlite3_exec(db, "PRAGMA synchronous=NORMAL", NULL, NULL, NULL);
}

void evbus_relay_opts_init_sized(evbus_relay_opts_t *out, size_t size)
{
    evbus_relay_opts_t defaults, *o = &defaults;
    memset(o, 0, sizeof *o);
    o->struct_size = sizeof *o;
    o->batch_size = 512;
    o->poll_interval_ms = 100;
    o->retention_ms = 3600000;
    o->purge_interval_ms = 10000;
    o->flush_timeout_ms = 10000;
    o->busy_timeout_ms = 5000;
    evbus__struct_defaults(out, size, o, sizeof *o);
}

/* The options as of the first release that carried struct_size. */
#define RELAY_OPTS_MIN_SIZE EVBUS__SIZE_THROUGH(evbus_relay_opts_t, retry)

/* The backoff the relay uses: the caller's, or its own default. */
static int relay_backoff(evbus_retry_policy_t *p,
                         const evbus_retry_policy_t *user)
{
    if (user)
        return evbus__retry_policy_copy(p, user);
    evbus_retry_policy_init(p);
    p->initial_ms = 100;
    p->max_ms = 5000;
    return EVBUS_OK;
}

static int check_opts(const evbus_relay_opts_t *o, char *errstr, size_t n)
{
    const char *bad = o->batch_size < 1 || o->batch_size > 100000
                          ? "batch_size must be 1..100000"
                      : o->poll_interval_ms < 1 ? "poll_interval_ms must be >= 1"
                      : o->retention_ms < 0     ? "retention_ms must be >= 0"
                      : o->purge_interval_ms < 1
                          ? "purge_interval_ms must be >= 1"
                      : o->flush_timeout_ms < 0 ? "flush_timeout_ms must be >= 0"
                      : o->busy_timeout_ms < 0 ? "busy_timeout_ms must be >= 0"
                                               : NULL;
    if (bad) {
        evbus__seterr(errstr, n, "relay: %s", bad);
        return EVBUS_EOPTION;
    }
    return EVBUS_OK;
}

evbus_relay_t *evbus_relay_open(const char *db_path, evbus_t *bus,
                               char *errstr, size_t n)
{
    return evbus_relay_open_opts(db_path, bus, NULL, errstr, n);
}

evbus_relay_t *evbus_relay_open_opts(const char *db_path, evbus_t *bus,
                                    const evbus_relay_opts_t *o,
                                    char *errstr, size_t n)
{
    if (!db_path || !*db_path || !bus) {
        evbus__seterr(errstr, n, "evbus_relay_open: %s is NULL",
                      !bus ? "bus" : "db_path");
        return NULL;
    }
    evbus_relay_opts_t opts;
    evbus_relay_opts_init(&opts);
    evbus_retry_policy_t backoff;
    if ((o && evbus__struct_in(&opts, sizeof opts, o, RELAY_OPTS_MIN_SIZE)) ||
        relay_backoff(&backoff, opts.retry) != EVBUS_OK) {
        evbus__seterr(errstr, n,
                      "relay: options or retry policy not "
                      "initialised by their _init function");
        return NULL;
    }
    /* The policy lives in the relay; the caller's pointer is not kept. */
    backoff.max_attempts = 0;
    backoff.max_elapsed_ms = 0;
    opts.retry = NULL;
    if (check_opts(&opts, errstr, n) != EVBUS_OK)
        return NULL;
    evbus_relay_t *r = calloc(1, sizeof *r);
    if (!r || !(r->rows = calloc((size_t)opts.batch_size * RELAY_WINDOW,
                                 sizeof *r->rows))) {
        free(r);
        evbus__seterr(errstr, n, "out of memory");
        return NULL;
    }
    r->bus = bus;
    r->o = opts;
    r->backoff = backoff;
    r->lock.fd = -1;
    pthread_mutex_init(&r->run_mu, NULL);
    pthread_mutex_init(&r->mu, NULL);
    evbus__cond_init(&r->cv);

    char why[256] = "";
    int rc = sqlite3_open_v2(db_path, &r->db,
                             SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE |
                                 SQLITE_OPEN_NOMUTEX | SQLITE_OPEN_URI,
                             NULL);
    if (rc != SQLITE_OK) {
        evbus__seterr(errstr, n, "relay: cannot open %s: %s", db_path,
                      r->db ? sqlite3_errmsg(r->db) : sqlite3_errstr(rc));
        evbus_relay_close(r);
        return NULL;
    }
    sqlite3_busy_timeout(r->db, opts.busy_timeout_ms);
    relay_relax_sync(r->db);
    if (evbus__sql_exec(r->db, OB_OUTBOX_DDL, why, sizeof why) != EVBUS_OK ||
        evbus__sql_exec(r->db, OB_RELAY_DDL, why, sizeof why) != EVBUS_OK ||
        evbus__relay_prepare(r, why, sizeof why) != EVBUS_OK) {
        evbus__seterr(errstr, n, "relay: %s: %s", db_path, why);
        evbus_relay_close(r);
        return NULL;
    }
    if (evbus__relay_lock_open(&r->lock, sqlite3_db_filename(r->db, "main"),
                               errstr, n) != EVBUS_OK) {
        evbus_relay_close(r);
        return NULL;
    }
    r->next_purge_ms = (int64_t)evbus__mono_ms();
    return r;
}

int evbus_relay_run_once(evbus_relay_t *r, int max)
{
    if (!r)
        return EVBUS_EINVAL;
    pthread_mutex_lock(&r->run_mu);
    int rc = evbus__relay_round(r, max);
    pthread_mutex_unlock(&r->run_mu);
    return rc;
}

/* ---------------------------------------------------------------- thread */

static void wait_ms(evbus_relay_t *r, int ms)
{
    struct timespec until = evbus__deadline_in(ms);
    pthread_mutex_lock(&r->mu);
    while (!r->stop && !r->notified)
        if (evbus__cond_wait_until(&r->cv, &r->mu, &until) != 0)
            break;
    r->notified = false;
    pthread_mutex_unlock(&r->mu);
}

static bool stopping(evbus_relay_t *r)
{
    pthread_mutex_lock(&r->mu);
    bool s = r->stop;
    pthread_mutex_unlock(&r->mu);
    return s;
}

static void *relay_main(void *arg)
{
    evbus_relay_t *r = arg;
    int failures = 0, prev_delay = 0, idle_ms = 0;
    while (!stopping(r)) {
        pthread_mutex_lock(&r->mu);
        r->notified = false; /* this round sees everything committed so far */
        pthread_mutex_unlock(&r->mu);
        /* several batches a round, so that they overlap in flight */
        int round_max = r->o.batch_size * RELAY_WINDOW * 2;
        int got = evbus_relay_run_once(r, round_max);
        int delay;
        if (got < 0) {
            failures += failures < 30;
            delay = evbus_retry_delay_ms(&r->backoff, failures, prev_delay);
            prev_delay = delay;
            idle_ms = 0;
        } else {
            failures = 0;
            prev_delay = 0;
            if (got >= round_max)
                continue; /* more may be waiting */
            if (!atomic_load(&r->active))
                delay = r->o.poll_interval_ms;
            else if (got > 0)
                delay = idle_ms = 0;
            else
                delay = idle_ms = idle_ms == 0 ? 1
                                  : idle_ms * 2 > r->o.poll_interval_ms
                                      ? r->o.poll_interval_ms
                                      : idle_ms * 2;
        }
        if (delay > 0)
            wait_ms(r, delay);
    }
    return NULL;
}

int evbus_relay_start(evbus_relay_t *r)
{
    if (!r)
        return EVBUS_EINVAL;
    pthread_mutex_lock(&r->mu);
    if (r->running) {
        pthread_mutex_unlock(&r->mu);
        return EVBUS_ESTATE;
    }
    r->stop = false;
    r->notified = false;
    int rc = pthread_create(&r->thread, NULL, relay_main, r);
    r->running = rc == 0;
    pthread_mutex_unlock(&r->mu);
    return rc == 0 ? EVBUS_OK : EVBUS_ENOMEM;
}

void evbus_relay_notify(evbus_relay_t *r)
{
    if (!r)
        return;
    pthread_mutex_lock(&r->mu);
    r->notified = true;
    pthread_cond_signal(&r->cv);
    pthread_mutex_unlock(&r->mu);
}

int evbus_relay_stop(evbus_relay_t *r)
{
    if (!r)
        return EVBUS_EINVAL;
    pthread_mutex_lock(&r->mu);
    if (!r->running) {
        pthread_mutex_unlock(&r->mu);
        return EVBUS_OK;
    }
    r->stop = true;
    pthread_cond_broadcast(&r->cv);
    pthread_mutex_unlock(&r->mu);
    pthread_join(r->thread, NULL);
    pthread_mutex_lock(&r->mu);
    r->running = false;
    pthread_mutex_unlock(&r->mu);
    return EVBUS_OK;
}

int evbus_relay_is_active(const evbus_relay_t *r)
{
    return r && atomic_load(&r->active) ? 1 : 0;
}

void evbus_relay_stats_init_sized(evbus_relay_stats_t *out, size_t size)
{
    evbus__struct_init(out, size);
}

#define RELAY_STATS_MIN_SIZE EVBUS__SIZE_THROUGH(evbus_relay_stats_t, handed_off)

int evbus_relay_stats(const evbus_relay_t *r, evbus_relay_stats_t *out)
{
    if (!r || !out)
        return EVBUS_EINVAL;
    evbus_relay_t *m = (evbus_relay_t *)r; /* atomics: loads only */
    evbus_relay_stats_t st;
    evbus_relay_stats_init(&st);
    st.published = atomic_load(&m->published);
    st.failed = atomic_load(&m->failed);
    st.parked = atomic_load(&m->parked);
    st.purged = atomic_load(&m->purged);
    st.handed_off = atomic_load(&m->handed_off);
    return evbus__struct_out(out, &st, sizeof st, RELAY_STATS_MIN_SIZE);
}

void evbus_relay_close(evbus_relay_t *r)
{
    if (!r)
        return;
    evbus_relay_stop(r);
    evbus__relay_finalize(r);
    evbus__handoff_close(r->handoff);
    sqlite3_close(r->db);
    evbus__relay_lock_close(&r->lock);
    pthread_mutex_destroy(&r->run_mu);
    pthread_mutex_destroy(&r->mu);
    pthread_cond_destroy(&r->cv);
    free(r->rows);
    free(r);
}
