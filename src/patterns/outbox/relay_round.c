/*
 * One relay round: read pending rows in seq (= commit) order, publish them
 * with evbus_publish_async, wait with one evbus_flush, then advance the
 * delivered mark over the rows the broker accepted, in one transaction.
 * Killing the relay anywhere only means rows above the mark are published
 * again (same event id) by the next relay.
 *
 * Delivery callbacks may run on any thread that flushes or polls the bus,
 * and may even arrive after our flush timed out, so each batch's result
 * slots live in a reference-counted block that the last user frees.
 */
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "relay_internal.h"
#include "sql_util.h"

#define RESULT_PENDING 1 /* callback not run yet (errors are negative) */
#define PURGE_CHUNK 5000

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

int relay_prepare(evbus_relay_t *r, char *why, size_t n)
{
    struct {
        sqlite3_stmt **st;
        const char *sql;
    } list[] = {
        {&r->fetch, "SELECT seq, topic, event FROM evbus_outbox"
                    " WHERE seq > ?1 AND failed IS NULL ORDER BY seq"
                    " LIMIT ?2"},
        {&r->load_mark, "SELECT delivered_seq FROM evbus_outbox_relay"
                        " WHERE id = 1"},
        {&r->save_mark, "UPDATE evbus_outbox_relay SET delivered_seq = ?1,"
                        " delivered_at = ?2 WHERE id = 1"},
        {&r->park, "UPDATE evbus_outbox SET failed = ?2 WHERE seq = ?1"},
        /* never the newest row: it keeps seq values from being reused */
        {&r->del_upto, "DELETE FROM evbus_outbox WHERE seq <= ?1"
                       " AND failed IS NULL"
                       " AND seq < (SELECT max(seq) FROM evbus_outbox)"},
        {&r->purge_scan, "SELECT seq, created_at, failed IS NOT NULL"
                         " FROM evbus_outbox WHERE seq > ?1 AND seq <= ?2"
                         " ORDER BY seq LIMIT ?3"},
        {&r->purge_del, "DELETE FROM evbus_outbox WHERE seq > ?1"
                        " AND seq <= ?2 AND failed IS NULL"
                        " AND seq < (SELECT max(seq) FROM evbus_outbox)"},
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

void relay_finalize(evbus_relay_t *r)
{
    sqlite3_stmt *all[] = {r->fetch,      r->load_mark, r->save_mark,
                           r->park,       r->del_upto,  r->purge_scan,
                           r->purge_del,  r->begin,     r->commit,
                           r->rollback};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
        sqlite3_finalize(all[i]);
}

static bool park_worthy(int err)
{
    return err == EVBUS_EINVAL || err == EVBUS_ETOOBIG ||
           err == EVBUS_EDECODE || err == EVBUS_EREJECTED;
}

static void park_row(row_t *row, const char *why, const char *detail)
{
    row->state = ROW_PARK;
    snprintf(row->park_why, sizeof row->park_why, "%s: %s", why, detail);
}

/* Reads up to want rows above the mark and starts publishing them. Returns
 * how many rows it fetched; *err gets the error that stopped the batch. */
static int send_batch(evbus_relay_t *r, batch_t *b, int want, int *err)
{
    int n = 0, rc = SQLITE_DONE;
    sqlite3_bind_int64(r->fetch, 1, r->mark);
    sqlite3_bind_int(r->fetch, 2, want);
    while (n < want && (rc = sqlite3_step(r->fetch)) == SQLITE_ROW) {
        row_t *row = &r->rows[n];
        slot_t *s = &b->slots[n];
        n++;
        row->seq = sqlite3_column_int64(r->fetch, 0);
        const char *topic = (const char *)sqlite3_column_text(r->fetch, 1);
        const char *json = (const char *)sqlite3_column_text(r->fetch, 2);
        size_t len = (size_t)sqlite3_column_bytes(r->fetch, 2);
        char why[128] = "NULL";
        evbus_event_t *ev = json ? handoff_take(r->handoff, row->seq, json, len)
                                 : NULL;
        if (ev)
            atomic_fetch_add(&r->handed_off, 1);
        else if (json)
            ev = evbus_event_from_json_limit(json, len, 0, why, sizeof why);
        if (!ev) {
            park_row(row, "undecodable event", why);
            continue;
        }
        s->batch = b;
        atomic_store(&s->result, RESULT_PENDING);
        atomic_fetch_add(&b->refs, 1);
        int prc = evbus_publish_async(r->bus, topic ? topic : "", ev,
                                      on_delivery, s);
        if (prc == EVBUS_EAGAIN || prc == EVBUS_EBUSY) {
            /* the client's queue is full: let it drain, then once more */
            evbus_flush(r->bus, r->o.flush_timeout_ms);
            prc = evbus_publish_async(r->bus, topic ? topic : "", ev,
                                      on_delivery, s);
        }
        evbus_event_free(ev);
        if (prc == EVBUS_OK) {
            row->state = ROW_SENT;
            continue;
        }
        atomic_fetch_sub(&b->refs, 1); /* no callback will come */
        if (park_worthy(prc)) {
            park_row(row, "publish refused", evbus_strerror(prc));
            continue;
        }
        row->state = ROW_FAILED;
        *err = prc;
        break;
    }
    if (rc != SQLITE_DONE && rc != SQLITE_ROW && *err == EVBUS_OK)
        *err = ob__sqlite_err(rc);
    sqlite3_reset(r->fetch);
    return n;
}

/* Parks what must be parked and moves the mark to `upto`, in one
 * transaction. With retention 0 the delivered rows are deleted at once. */
static int settle(evbus_relay_t *r, int n, int64_t upto)
{
    int rc = ob__step_done(r->begin);
    if (rc != EVBUS_OK)
        return rc;
    for (int i = 0; i < n && rc == EVBUS_OK; i++) {
        if (r->rows[i].state != ROW_PARK)
            continue;
        sqlite3_bind_int64(r->park, 1, r->rows[i].seq);
        sqlite3_bind_text(r->park, 2, r->rows[i].park_why, -1, SQLITE_STATIC);
        rc = ob__step_done(r->park);
    }
    if (rc == EVBUS_OK && upto > r->mark) {
        sqlite3_bind_int64(r->save_mark, 1, upto);
        sqlite3_bind_int64(r->save_mark, 2, ob__wall_ms());
        rc = ob__step_done(r->save_mark);
        if (rc == EVBUS_OK && r->o.retention_ms == 0) {
            sqlite3_bind_int64(r->del_upto, 1, upto);
            rc = ob__step_done(r->del_upto);
        }
    }
    if (rc == EVBUS_OK)
        rc = ob__step_done(r->commit);
    if (rc != EVBUS_OK) {
        ob__log(EVBUS_LOG_WARN, "relay: recording a batch failed: %s",
                sqlite3_errmsg(r->db));
        if (!sqlite3_get_autocommit(r->db))
            ob__step_done(r->rollback);
    }
    return rc;
}

/* After a flush that saw every publish complete, the delivery callbacks may
 * still be running on another thread that polls the same bus (evbus_poll
 * also runs them). Wait for them rather than take an outcome for a failure:
 * they are already on their way, so this is short. */
static void await_callbacks(batch_t *b, int timeout_ms)
{
    int64_t deadline = ob__mono_ms() + timeout_ms;
    long pause_ns = 20000;
    while (atomic_load_explicit(&b->refs, memory_order_acquire) > 1 &&
           ob__mono_ms() < deadline) {
        struct timespec ts = {0, pause_ns};
        nanosleep(&ts, NULL);
        if (pause_ns < 1000000)
            pause_ns *= 2;
    }
}

/* One batch: fetch, publish, flush, settle. *published gets the count of
 * events the broker accepted, *fetched the rows read. */
static int relay_batch(evbus_relay_t *r, int want, int *published,
                       int *fetched)
{
    *published = 0;
    *fetched = 0;
    batch_t *b = malloc(sizeof *b + (size_t)want * sizeof(slot_t));
    if (!b)
        return EVBUS_ENOMEM;
    atomic_init(&b->refs, 1);
    int err = EVBUS_OK;
    int n = send_batch(r, b, want, &err);
    *fetched = n;
    if (n == 0) {
        batch_unref(b);
        return err;
    }
    bool sent = false;
    for (int i = 0; i < n; i++)
        sent |= r->rows[i].state == ROW_SENT;
    if (sent && evbus_flush(r->bus, r->o.flush_timeout_ms) != EVBUS_ETIMEDOUT)
        await_callbacks(b, r->o.flush_timeout_ms);

    /* Resolve the slots. The mark only moves over the settled prefix: after
     * the first row that did not make it everything is published again, so
     * the last copy of every event still arrives in commit order. */
    int64_t upto = r->mark;
    bool prefix = true;
    int ok = 0;
    uint64_t parked = 0, failed = 0;
    for (int i = 0; i < n; i++) {
        row_t *row = &r->rows[i];
        if (row->state == ROW_SENT) {
            int res = atomic_load_explicit(&b->slots[i].result,
                                           memory_order_acquire);
            if (res == RESULT_PENDING)
                res = EVBUS_ETIMEDOUT;
            if (res == EVBUS_OK)
                row->state = ROW_OK;
            else if (park_worthy(res))
                park_row(row, "broker refused the event", evbus_strerror(res));
            else {
                row->state = ROW_FAILED;
                if (err == EVBUS_OK)
                    err = res;
            }
        }
        if (row->state == ROW_FAILED) {
            prefix = false;
            failed++;
        }
        if (prefix) {
            upto = row->seq;
            ok += row->state == ROW_OK;
        }
        parked += row->state == ROW_PARK;
    }
    batch_unref(b);

    int rc = settle(r, n, upto);
    if (rc != EVBUS_OK)
        return rc; /* nothing recorded: the whole batch is published again */
    for (int i = 0; i < n; i++)
        if (r->rows[i].state == ROW_PARK)
            ob__log(EVBUS_LOG_ERROR, "relay: outbox row %lld parked: %s",
                    (long long)r->rows[i].seq, r->rows[i].park_why);
    r->mark = upto;
    atomic_fetch_add(&r->published, (uint64_t)ok);
    atomic_fetch_add(&r->parked, parked);
    atomic_fetch_add(&r->failed, failed);
    *published = ok;
    if (err != EVBUS_OK)
        ob__log(EVBUS_LOG_WARN, "relay: %llu event(s) not accepted: %s",
                (unsigned long long)failed, evbus_strerror(err));
    return err;
}

/* Deletes delivered rows written more than retention_ms ago, oldest first,
 * in short transactions. Parked rows stay for inspection. */
static void purge(evbus_relay_t *r)
{
    int64_t cutoff = ob__wall_ms() - r->o.retention_ms;
    int64_t floor = 0;
    for (;;) {
        int64_t last = floor;
        bool stopped = false;
        int seen = 0;
        sqlite3_bind_int64(r->purge_scan, 1, floor);
        sqlite3_bind_int64(r->purge_scan, 2, r->mark);
        sqlite3_bind_int(r->purge_scan, 3, PURGE_CHUNK);
        while (sqlite3_step(r->purge_scan) == SQLITE_ROW) {
            seen++;
            if (!sqlite3_column_int(r->purge_scan, 2) &&
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

static int load_mark(evbus_relay_t *r)
{
    int rc = sqlite3_step(r->load_mark);
    if (rc == SQLITE_ROW)
        r->mark = sqlite3_column_int64(r->load_mark, 0);
    sqlite3_reset(r->load_mark);
    return rc == SQLITE_ROW ? EVBUS_OK : ob__sqlite_err(rc);
}

int relay_round(evbus_relay_t *r, int max)
{
    if (!atomic_load(&r->active)) {
        int got = relay_lock_try(&r->lock);
        if (got <= 0)
            return got; /* 0: standby, another relay publishes */
        int rc = load_mark(r);
        if (rc != EVBUS_OK) {
            relay_lock_release(&r->lock);
            return rc;
        }
        /* same-process producers may now hand their events over */
        r->handoff = handoff_open(sqlite3_db_filename(r->db, "main"));
        atomic_store(&r->active, true);
        ob__log(EVBUS_LOG_INFO, "relay: lock taken, publishing after seq %lld",
                (long long)r->mark);
    }
    if (max <= 0)
        max = INT_MAX; /* everything pending */
    /* After a failure the next batches are small and grow back by doubling
     * (like TCP's slow start): a broker that fails now and then makes the
     * relay republish a few events, not a whole batch, and a broker that is
     * down is probed with one event rather than hundreds. */
    if (r->cur_batch < 1 || r->cur_batch > r->o.batch_size)
        r->cur_batch = r->o.batch_size;
    int total = 0, rc = EVBUS_OK;
    while (total < max) {
        int want = max - total < r->cur_batch ? max - total : r->cur_batch;
        int got = 0, fetched = 0;
        rc = relay_batch(r, want, &got, &fetched);
        total += got;
        if (rc != EVBUS_OK) {
            r->cur_batch = r->cur_batch / 8 > 1 ? r->cur_batch / 8 : 1;
            break;
        }
        if (r->cur_batch < r->o.batch_size)
            r->cur_batch = r->cur_batch * 2 < r->o.batch_size
                               ? r->cur_batch * 2
                               : r->o.batch_size;
        if (fetched < want)
            break; /* nothing more pending */
    }
    if (r->o.retention_ms > 0 && ob__mono_ms() >= r->next_purge_ms) {
        r->next_purge_ms = ob__mono_ms() + r->o.purge_interval_ms;
        purge(r);
    }
    return total > 0 ? total : rc;
}
