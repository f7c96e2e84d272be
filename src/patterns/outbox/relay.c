/*
 * The outbox relay: reads evbus_outbox in seq (= commit) order on its own
 * connection, publishes a batch with evbus_publish_async, waits with one
 * evbus_flush, and marks the rows the broker accepted as delivered in one
 * transaction. Killing it anywhere only means rows not yet marked are
 * published again (same event id) by the next relay.
 *
 * Delivery callbacks may run on any thread that flushes or polls the bus,
 * and may even arrive after our flush timed out, so each batch's result
 * slots live in a reference-counted block that the last user frees.
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "evbus/outbox.h"
#include "relay_lock.h"
#include "sql_util.h"

#define RESULT_PENDING 1 /* callback not run yet (errors are negative) */
#define PURGE_CHUNK 5000

/* ---------------------------------------------------------- batch slots */

typedef struct batch batch_t;

typedef struct slot {
    batch_t *batch;
    atomic_int result;
} slot_t;

struct batch {
    atomic_int refs;
    slot_t slots[];
};

static void batch_unref(batch_t *b)
{
    if (atomic_fetch_sub_explicit(&b->refs, 1, memory_order_acq_rel) == 1)
        free(b);
}

static void on_delivery(const evbus_event_t *ev, int err, void *opaque)
{
    (void)ev;
    slot_t *s = opaque;
    atomic_store_explicit(&s->result, err, memory_order_release);
    batch_unref(s->batch);
}

/* What became of each fetched row of a batch. */
typedef enum {
    ROW_SENT,   /* handed to publish_async; see the slot */
    ROW_PARK,   /* can never be published; reason in park_why */
    ROW_FAILED  /* not accepted; stays pending */
} row_state_t;

typedef struct row {
    int64_t seq;
    row_state_t state;
    char park_why[160];
} row_t;

/* ---------------------------------------------------------------- relay */

struct evbus_relay {
    evbus_t *bus;
    evbus_relay_opts_t o;
    sqlite3 *db;
    sqlite3_stmt *fetch, *mark, *del, *park, *purge_scan, *purge_del;
    sqlite3_stmt *begin, *commit, *rollback;
    relay_lock_t lock;
    atomic_bool active;      /* holds the lock */
    int64_t cursor;          /* every row with seq <= cursor is settled */
    int64_t next_purge_ms;   /* monotonic */
    row_t *rows;             /* batch_size scratch rows */

    pthread_mutex_t run_mu;  /* one round at a time */

    pthread_mutex_t mu;      /* thread control */
    pthread_cond_t cv;
    pthread_t thread;
    bool running, stop, notified;

    atomic_uint_fast64_t published, failed, parked, purged;
};

void evbus_relay_opts_init(evbus_relay_opts_t *o)
{
    if (!o)
        return;
    memset(o, 0, sizeof *o);
    o->batch_size = 512;
    o->poll_interval_ms = 100;
    o->retention_ms = 3600000;
    o->purge_interval_ms = 10000;
    o->flush_timeout_ms = 10000;
    o->busy_timeout_ms = 5000;
    evbus_retry_policy_init(&o->retry);
    o->retry.initial_ms = 100;
    o->retry.max_ms = 5000;
    o->retry.max_attempts = 0;
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
        ob__seterr(errstr, n, "relay: %s", bad);
        return EVBUS_EOPTION;
    }
    return EVBUS_OK;
}

static int prepare_all(evbus_relay_t *r, char *why, size_t n)
{
    struct {
        sqlite3_stmt **st;
        const char *sql;
    } list[] = {
        {&r->fetch, "SELECT seq, topic, event FROM evbus_outbox"
                    " WHERE seq > ?1 AND delivered_at IS NULL"
                    " AND failed IS NULL ORDER BY seq LIMIT ?2"},
        {&r->mark, "UPDATE evbus_outbox SET delivered_at = ?2 WHERE seq = ?1"},
        {&r->del, "DELETE FROM evbus_outbox WHERE seq = ?1"},
        {&r->park, "UPDATE evbus_outbox SET failed = ?2 WHERE seq = ?1"},
        {&r->purge_scan, "SELECT seq, delivered_at, failed IS NOT NULL"
                         " FROM evbus_outbox WHERE seq > ?1 ORDER BY seq"
                         " LIMIT ?2"},
        {&r->purge_del, "DELETE FROM evbus_outbox WHERE seq > ?1"
                        " AND seq <= ?2 AND delivered_at IS NOT NULL"
                        " AND delivered_at < ?3"},
        {&r->begin, "BEGIN IMMEDIATE"},
        {&r->commit, "COMMIT"},
        {&r->rollback, "ROLLBACK"},
    };
    for (size_t i = 0; i < sizeof list / sizeof list[0]; i++) {
        int rc = ob__prepare(r->db, list[i].sql, list[i].st, why, n);
        if (rc != EVBUS_OK)
            return rc;
    }
    return EVBUS_OK;
}

evbus_relay_t *evbus_relay_new(const char *db_path, evbus_t *bus,
                               char *errstr, size_t n)
{
    return evbus_relay_new_opts(db_path, bus, NULL, errstr, n);
}

evbus_relay_t *evbus_relay_new_opts(const char *db_path, evbus_t *bus,
                                    const evbus_relay_opts_t *o,
                                    char *errstr, size_t n)
{
    if (!db_path || !*db_path || !bus) {
        ob__seterr(errstr, n, "evbus_relay_new: %s is NULL",
                   !bus ? "bus" : "db_path");
        return NULL;
    }
    evbus_relay_opts_t opts;
    if (o)
        opts = *o;
    else
        evbus_relay_opts_init(&opts);
    if (check_opts(&opts, errstr, n) != EVBUS_OK)
        return NULL;
    evbus_relay_t *r = calloc(1, sizeof *r);
    if (!r || !(r->rows = calloc((size_t)opts.batch_size, sizeof *r->rows))) {
        free(r);
        ob__seterr(errstr, n, "out of memory");
        return NULL;
    }
    r->bus = bus;
    r->o = opts;
    r->lock.fd = -1;
    pthread_mutex_init(&r->run_mu, NULL);
    pthread_mutex_init(&r->mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&r->cv, &ca);
    pthread_condattr_destroy(&ca);

    char why[256] = "";
    int rc = sqlite3_open_v2(db_path, &r->db,
                             SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE |
                                 SQLITE_OPEN_NOMUTEX | SQLITE_OPEN_URI,
                             NULL);
    if (rc != SQLITE_OK) {
        ob__seterr(errstr, n, "relay: cannot open %s: %s", db_path,
                   r->db ? sqlite3_errmsg(r->db) : sqlite3_errstr(rc));
        evbus_relay_free(r);
        return NULL;
    }
    sqlite3_busy_timeout(r->db, opts.busy_timeout_ms);
    if (ob__exec(r->db, OB_OUTBOX_DDL, why, sizeof why) != EVBUS_OK ||
        prepare_all(r, why, sizeof why) != EVBUS_OK) {
        ob__seterr(errstr, n, "relay: %s: %s", db_path, why);
        evbus_relay_free(r);
        return NULL;
    }
    if (relay_lock_open(&r->lock, sqlite3_db_filename(r->db, "main"), errstr,
                        n) != EVBUS_OK) {
        evbus_relay_free(r);
        return NULL;
    }
    r->next_purge_ms = ob__mono_ms();
    return r;
}

/* ---------------------------------------------------------------- rounds */

static bool park_worthy(int err)
{
    return err == EVBUS_EINVAL || err == EVBUS_ETOOBIG ||
           err == EVBUS_EDECODE || err == EVBUS_EREJECTED;
}

static void park_row(row_t *row, const char *fmt, const char *what)
{
    row->state = ROW_PARK;
    snprintf(row->park_why, sizeof row->park_why, fmt, what);
}

/* Reads up to want pending rows and starts publishing them. Returns how
 * many rows it fetched (*err: the error that stopped the batch). */
static int send_batch(evbus_relay_t *r, batch_t *b, int want, int *err)
{
    int n = 0;
    sqlite3_bind_int64(r->fetch, 1, r->cursor);
    sqlite3_bind_int(r->fetch, 2, want);
    int rc;
    while (n < want && (rc = sqlite3_step(r->fetch)) == SQLITE_ROW) {
        row_t *row = &r->rows[n++];
        row->seq = sqlite3_column_int64(r->fetch, 0);
        const char *topic = (const char *)sqlite3_column_text(r->fetch, 1);
        const char *json = (const char *)sqlite3_column_text(r->fetch, 2);
        size_t len = (size_t)sqlite3_column_bytes(r->fetch, 2);
        char why[128] = "";
        evbus_event_t *ev =
            json ? evbus_event_from_json_limit(json, len, 0, why, sizeof why)
                 : NULL;
        if (!ev) {
            park_row(row, "undecodable event: %s", json ? why : "NULL");
            continue;
        }
        slot_t *s = &b->slots[n - 1];
        s->batch = b;
        atomic_store(&s->result, RESULT_PENDING);
        atomic_fetch_add(&b->refs, 1);
        rc = evbus_publish_async(r->bus, topic ? topic : "", ev, on_delivery,
                                 s);
        evbus_event_free(ev);
        if (rc == EVBUS_OK) {
            row->state = ROW_SENT;
            continue;
        }
        atomic_fetch_sub(&b->refs, 1); /* no callback will come */
        if (park_worthy(rc)) {
            park_row(row, "publish refused: %s", evbus_strerror(rc));
            continue;
        }
        row->state = ROW_FAILED;
        *err = rc;
        break;
    }
    if (n < want && rc != SQLITE_DONE && rc != SQLITE_ROW && *err == EVBUS_OK)
        *err = ob__sqlite_err(rc);
    sqlite3_reset(r->fetch);
    return n;
}

/* Records the outcome of a batch in one transaction. */
static int settle_batch(evbus_relay_t *r, int n, int *ok_count)
{
    int rc = ob__step_done(r->begin);
    if (rc != EVBUS_OK)
        return rc;
    int64_t now = ob__wall_ms();
    *ok_count = 0;
    for (int i = 0; i < n && rc == EVBUS_OK; i++) {
        row_t *row = &r->rows[i];
        if (row->state == ROW_SENT) {
            if (r->o.retention_ms == 0) {
                sqlite3_bind_int64(r->del, 1, row->seq);
                rc = ob__step_done(r->del);
            } else {
                sqlite3_bind_int64(r->mark, 1, row->seq);
                sqlite3_bind_int64(r->mark, 2, now);
                rc = ob__step_done(r->mark);
            }
            ++*ok_count;
        } else if (row->state == ROW_PARK) {
            sqlite3_bind_int64(r->park, 1, row->seq);
            sqlite3_bind_text(r->park, 2, row->park_why, -1, SQLITE_STATIC);
            rc = ob__step_done(r->park);
        }
    }
    if (rc == EVBUS_OK)
        rc = ob__step_done(r->commit);
    if (rc != EVBUS_OK) {
        ob__log(EVBUS_LOG_WARN, "relay: marking a batch failed: %s",
                sqlite3_errmsg(r->db));
        if (!sqlite3_get_autocommit(r->db))
            ob__step_done(r->rollback);
        *ok_count = 0;
    }
    return rc;
}

/* One batch: fetch, publish, flush, settle. *published gets the count. */
static int relay_batch(evbus_relay_t *r, int want, int *published)
{
    *published = 0;
    batch_t *b = malloc(sizeof *b + (size_t)want * sizeof(slot_t));
    if (!b)
        return EVBUS_ENOMEM;
    atomic_init(&b->refs, 1);
    int err = EVBUS_OK;
    int n = send_batch(r, b, want, &err);
    if (n == 0) {
        batch_unref(b);
        return err;
    }
    bool sent = false;
    for (int i = 0; i < n; i++)
        sent |= r->rows[i].state == ROW_SENT;
    if (sent)
        evbus_flush(r->bus, r->o.flush_timeout_ms);

    /* Turn the slots into row states; the first row that did not make it
     * bounds the cursor so it is fetched again next time. */
    int64_t first_failed = 0;
    for (int i = 0; i < n; i++) {
        row_t *row = &r->rows[i];
        if (row->state == ROW_SENT) {
            int res = atomic_load_explicit(&b->slots[i].result,
                                           memory_order_acquire);
            if (res == RESULT_PENDING)
                res = EVBUS_ETIMEDOUT;
            if (res == EVBUS_OK)
                continue;
            if (park_worthy(res)) {
                park_row(row, "broker refused the event: %s",
                         evbus_strerror(res));
                continue;
            }
            row->state = ROW_FAILED;
            if (err == EVBUS_OK)
                err = res;
        }
        if (row->state == ROW_FAILED && !first_failed)
            first_failed = row->seq;
    }
    batch_unref(b);

    int ok = 0;
    int rc = settle_batch(r, n, &ok);
    if (rc != EVBUS_OK)
        return rc; /* nothing marked: the cursor stays, all is refetched */
    uint64_t parked = 0, failed = 0;
    for (int i = 0; i < n; i++) {
        parked += r->rows[i].state == ROW_PARK;
        failed += r->rows[i].state == ROW_FAILED;
        if (r->rows[i].state == ROW_PARK)
            ob__log(EVBUS_LOG_ERROR, "relay: outbox row %lld parked: %s",
                    (long long)r->rows[i].seq, r->rows[i].park_why);
    }
    atomic_fetch_add(&r->published, (uint64_t)ok);
    atomic_fetch_add(&r->parked, parked);
    atomic_fetch_add(&r->failed, failed);
    r->cursor = first_failed ? first_failed - 1 : r->rows[n - 1].seq;
    *published = ok;
    if (err != EVBUS_OK)
        ob__log(EVBUS_LOG_WARN, "relay: %llu event(s) not accepted: %s",
                (unsigned long long)failed, evbus_strerror(err));
    return err;
}

/* Deletes delivered rows older than the retention, oldest first, in short
 * transactions. Stops at the first row still pending or too young. */
static void purge(evbus_relay_t *r)
{
    int64_t cutoff = ob__wall_ms() - r->o.retention_ms;
    int64_t floor = 0;
    for (;;) {
        int64_t last = floor;
        bool stopped = false;
        int seen = 0;
        sqlite3_bind_int64(r->purge_scan, 1, floor);
        sqlite3_bind_int(r->purge_scan, 2, PURGE_CHUNK);
        while (sqlite3_step(r->purge_scan) == SQLITE_ROW) {
            seen++;
            if (sqlite3_column_int(r->purge_scan, 2)) { /* parked: keep */
                last = sqlite3_column_int64(r->purge_scan, 0);
                continue;
            }
            if (sqlite3_column_type(r->purge_scan, 1) == SQLITE_NULL ||
                sqlite3_column_int64(r->purge_scan, 1) >= cutoff) {
                stopped = true;
                break;
            }
            last = sqlite3_column_int64(r->purge_scan, 0);
        }
        sqlite3_reset(r->purge_scan);
        if (last > floor) {
            sqlite3_bind_int64(r->purge_del, 1, floor);
            sqlite3_bind_int64(r->purge_del, 2, last);
            sqlite3_bind_int64(r->purge_del, 3, cutoff);
            if (ob__step_done(r->purge_del) != EVBUS_OK) {
                ob__log(EVBUS_LOG_WARN, "relay: purge failed: %s",
                        sqlite3_errmsg(r->db));
                return;
            }
            atomic_fetch_add(&r->purged, (uint64_t)sqlite3_changes(r->db));
        }
        if (stopped || seen < PURGE_CHUNK || last == floor)
            return;
        floor = last;
    }
}

static int relay_round(evbus_relay_t *r, int max)
{
    if (!atomic_load(&r->active)) {
        int got = relay_lock_try(&r->lock);
        if (got < 0)
            return got;
        if (got == 0)
            return 0; /* standby: another relay publishes */
        r->cursor = 0; /* rescan: the previous holder may have left gaps */
        atomic_store(&r->active, true);
        ob__log(EVBUS_LOG_INFO, "relay: lock taken, publishing");
    }
    if (max <= 0)
        max = r->o.batch_size;
    int total = 0, rc = EVBUS_OK;
    while (total < max) {
        int want = max - total < r->o.batch_size ? max - total
                                                 : r->o.batch_size;
        int got = 0;
        rc = relay_batch(r, want, &got);
        total += got;
        if (rc != EVBUS_OK || got < want)
            break;
    }
    if (r->o.retention_ms > 0 && ob__mono_ms() >= r->next_purge_ms) {
        r->next_purge_ms = ob__mono_ms() + r->o.purge_interval_ms;
        purge(r);
    }
    return total > 0 ? total : rc;
}

int evbus_relay_run_once(evbus_relay_t *r, int max)
{
    if (!r)
        return EVBUS_EINVAL;
    pthread_mutex_lock(&r->run_mu);
    int rc = relay_round(r, max);
    pthread_mutex_unlock(&r->run_mu);
    return rc;
}

/* ---------------------------------------------------------------- thread */

static void wait_ms(evbus_relay_t *r, int ms)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    ts.tv_sec += ms / 1000;
    ts.tv_nsec += (long)(ms % 1000) * 1000000L;
    if (ts.tv_nsec >= 1000000000L) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000L;
    }
    pthread_mutex_lock(&r->mu);
    while (!r->stop && !r->notified)
        if (pthread_cond_timedwait(&r->cv, &r->mu, &ts) != 0)
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
        int got = evbus_relay_run_once(r, r->o.batch_size);
        int delay;
        if (got < 0) {
            failures += failures < 30;
            delay = evbus_retry_delay_ms(&r->o.retry, failures, prev_delay);
            prev_delay = delay;
            idle_ms = 0;
        } else {
            failures = 0;
            prev_delay = 0;
            if (got >= r->o.batch_size)
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

void evbus_relay_stats(const evbus_relay_t *r, evbus_relay_stats_t *out)
{
    if (!out)
        return;
    memset(out, 0, sizeof *out);
    if (!r)
        return;
    evbus_relay_t *m = (evbus_relay_t *)r; /* atomics: loads only */
    out->published = atomic_load(&m->published);
    out->failed = atomic_load(&m->failed);
    out->parked = atomic_load(&m->parked);
    out->purged = atomic_load(&m->purged);
}

void evbus_relay_free(evbus_relay_t *r)
{
    if (!r)
        return;
    evbus_relay_stop(r);
    sqlite3_stmt *all[] = {r->fetch, r->mark, r->del, r->park,
                           r->purge_scan, r->purge_del, r->begin, r->commit,
                           r->rollback};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
        sqlite3_finalize(all[i]);
    sqlite3_close(r->db);
    relay_lock_close(&r->lock);
    pthread_mutex_destroy(&r->run_mu);
    pthread_mutex_destroy(&r->mu);
    pthread_cond_destroy(&r->cv);
    free(r->rows);
    free(r);
}
