/*
 * One relay round: read pending rows in seq (= commit) order and publish
 * them, several batches in flight at once so the broker never waits for
 * the relay; as the oldest batch completes, advance the delivered mark over
 * the rows the broker accepted, in one transaction per batch. Killing the
 * relay anywhere only means rows above the mark are published again (same
 * event id) by the next relay.
 *
 * Rows are published with the JSON stored in them (evbus_outbox_add made it
 * and validated the event): no re-encoding. Outcomes arrive per event from
 * the backend's threads, possibly after the round gave up waiting, so each
 * batch's result slots live in a reference-counted block that the last
 * user frees.
 */
#include <limits.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/patterns.h"
#include "relay_internal.h"
#include "sql_util.h"

#define RESULT_PENDING 1 /* callback not run yet (errors are negative) */
#define PURGE_CHUNK 5000

typedef struct batch batch_t;

typedef struct slot {
    evbus__ticket_t ticket; /* first: the core hands it back to on_done */
    batch_t *batch;
    atomic_int result;
} slot_t;

struct batch {
    atomic_int refs;  /* the relay's own + one per publish in flight */
    int n;            /* rows fetched */
    row_t *rows;      /* the relay's scratch rows for this batch */
    slot_t slots[];
};

static void batch_unref(batch_t *b)
{
    if (atomic_fetch_sub_explicit(&b->refs, 1, memory_order_acq_rel) == 1)
        free(b);
}

static void on_done(evbus__ticket_t *t, int err)
{
    slot_t *s = (slot_t *)t;
    atomic_store_explicit(&s->result, err, memory_order_release);
    batch_unref(s->batch);
}

int evbus__relay_prepare(evbus_relay_t *r, char *why, size_t n)
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
        int rc = evbus__sql_prepare(r->db, list[i].sql, list[i].st, why, n);
        if (rc != EVBUS_OK)
            return rc;
    }
    return EVBUS_OK;
}

void evbus__relay_finalize(evbus_relay_t *r)
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
    free(row->park_why);
    if (asprintf(&row->park_why, "%s: %s", why, detail) < 0)
        row->park_why = NULL; /* recorded as "unknown" */
}

/* Publishes one row's event; EVBUS_EAGAIN/EBUSY (the client's queue is
 * full) are waited out once. */
static int publish_row(evbus_relay_t *r, const char *topic,
                       const evbus_event_t *ev, const char *json, size_t len,
                       slot_t *s)
{
    int rc = evbus__publish_encoded_async(r->bus, topic, ev, json, len,
                                          &s->ticket);
    if (rc == EVBUS_EAGAIN || rc == EVBUS_EBUSY) {
        evbus_flush(r->bus, r->o.flush_timeout_ms);
        rc = evbus__publish_encoded_async(r->bus, topic, ev, json, len,
                                          &s->ticket);
    }
    return rc;
}

/* Reads up to want rows above `after` into b and starts publishing them.
 * Sets b->n to how many rows it fetched; *err gets the error that stopped
 * the batch. */
static void send_batch(evbus_relay_t *r, batch_t *b, int64_t after, int want,
                       int *err)
{
    int n = 0, rc = SQLITE_DONE;
    /* A broker that only stores bytes gets the row's JSON as it is: only
     * evbus_outbox_add writes rows, and it encoded a validated event. */
    bool bytes_only = evbus_features(r->bus) & EVBUS_FEAT_BYTES_ONLY;
    sqlite3_bind_int64(r->fetch, 1, after);
    sqlite3_bind_int(r->fetch, 2, want);
    while (n < want && (rc = sqlite3_step(r->fetch)) == SQLITE_ROW) {
        row_t *row = &b->rows[n];
        slot_t *s = &b->slots[n];
        n++;
        row->seq = sqlite3_column_int64(r->fetch, 0);
        const char *topic = (const char *)sqlite3_column_text(r->fetch, 1);
        const char *json = (const char *)sqlite3_column_text(r->fetch, 2);
        size_t len = (size_t)sqlite3_column_bytes(r->fetch, 2);
        char why[128] = "NULL";
        evbus_event_t *ev =
            json ? evbus__handoff_take(r->handoff, row->seq, json, len) : NULL;
        if (ev)
            atomic_fetch_add(&r->handed_off, 1);
        else if (json && !bytes_only)
            ev = evbus_event_from_json_limit(json, len, 0, why, sizeof why);
        if (!ev && !(json && bytes_only)) {
            park_row(row, "undecodable event", why);
            continue;
        }
        s->ticket.done = on_done;
        s->batch = b;
        atomic_store(&s->result, RESULT_PENDING);
        atomic_fetch_add(&b->refs, 1);
        int prc = publish_row(r, topic ? topic : "", ev, json, len, s);
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
        *err = evbus__sqlite_err(rc);
    sqlite3_reset(r->fetch);
    b->n = n;
}

/* Parks what must be parked and moves the mark to `upto`, in one
 * transaction. With retention 0 the delivered rows are deleted at once. */
static int settle(evbus_relay_t *r, const row_t *rows, int n, int64_t upto)
{
    int rc = evbus__sql_step_done(r->begin);
    if (rc != EVBUS_OK)
        return rc;
    for (int i = 0; i < n && rc == EVBUS_OK; i++) {
        if (rows[i].state != ROW_PARK)
            continue;
        sqlite3_bind_int64(r->park, 1, rows[i].seq);
        sqlite3_bind_text(r->park, 2,
                          rows[i].park_why ? rows[i].park_why : "unknown", -1,
                          SQLITE_STATIC);
        rc = evbus__sql_step_done(r->park);
    }
    if (rc == EVBUS_OK && upto > r->mark) {
        sqlite3_bind_int64(r->save_mark, 1, upto);
        sqlite3_bind_int64(r->save_mark, 2, evbus__wall_ms());
        rc = evbus__sql_step_done(r->save_mark);
        if (rc == EVBUS_OK && r->o.retention_ms == 0) {
            sqlite3_bind_int64(r->del_upto, 1, upto);
            rc = evbus__sql_step_done(r->del_upto);
        }
    }
    if (rc == EVBUS_OK)
        rc = evbus__sql_step_done(r->commit);
    if (rc != EVBUS_OK) {
        evbus__outbox_log(EVBUS_LOG_WARN, "relay: recording a batch failed: %s",
                          sqlite3_errmsg(r->db));
        if (!sqlite3_get_autocommit(r->db))
            evbus__sql_step_done(r->rollback);
    }
    return rc;
}

static bool batch_done(batch_t *b)
{
    return atomic_load_explicit(&b->refs, memory_order_acquire) == 1;
}

/* Waits (up to flush_timeout_ms) until every publish of b reported. While
 * later batches are in flight they keep the broker busy, so a short sleep
 * here costs nothing; for the last batch the client is first told to send
 * what it lingers on. An outcome still missing then counts as a timeout. */
static void await_batch(evbus_relay_t *r, batch_t *b, bool last)
{
    if (batch_done(b))
        return;
    if (last)
        evbus__nudge(r->bus);
    int64_t deadline = (int64_t)evbus__mono_ms() + r->o.flush_timeout_ms;
    long pause_ns = 10000;
    while (!batch_done(b) && (int64_t)evbus__mono_ms() < deadline) {
        struct timespec ts = {0, pause_ns};
        nanosleep(&ts, NULL);
        if (pause_ns < 500000)
            pause_ns *= 2;
    }
}

/* Resolves a completed (or given up) batch and records it: parks what must
 * be parked and moves the mark over the accepted rows - but only while no
 * row of this round failed (*broken): after a failure everything is
 * published again, so the last copy of every event still arrives in commit
 * order. *published gets the rows accepted and recorded. Returns the first
 * publish error of the batch, or the recording error. */
static int settle_batch(evbus_relay_t *r, batch_t *b, bool *broken,
                        int *published)
{
    *published = 0;
    int err = EVBUS_OK;
    int64_t upto = r->mark;
    int ok = 0;
    uint64_t parked = 0, failed = 0;
    for (int i = 0; i < b->n; i++) {
        row_t *row = &b->rows[i];
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
            *broken = true;
            failed++;
        }
        if (!*broken) {
            upto = row->seq;
            ok += row->state == ROW_OK;
        }
        parked += row->state == ROW_PARK;
    }
    int rc = settle(r, b->rows, b->n, upto);
    if (rc == EVBUS_OK) {
        for (int i = 0; i < b->n; i++)
            if (b->rows[i].state == ROW_PARK)
                evbus__outbox_log(
                    EVBUS_LOG_ERROR, "relay: outbox row %lld parked: %s",
                    (long long)b->rows[i].seq,
                    b->rows[i].park_why ? b->rows[i].park_why : "unknown");
        r->mark = upto;
        atomic_fetch_add(&r->published, (uint64_t)ok);
        atomic_fetch_add(&r->parked, parked);
        atomic_fetch_add(&r->failed, failed);
        *published = ok;
        if (err != EVBUS_OK)
            evbus__outbox_log(EVBUS_LOG_WARN,
                              "relay: %llu event(s) not accepted: %s",
                              (unsigned long long)failed, evbus_strerror(err));
    } else {
        *broken = true; /* nothing recorded: all published again */
        err = rc;
    }
    for (int i = 0; i < b->n; i++) {
        free(b->rows[i].park_why);
        b->rows[i].park_why = NULL;
    }
    return err;
}

/* Deletes delivered rows written more than retention_ms ago, oldest first,
 * in short transactions. Parked rows stay for inspection. */
static void purge(evbus_relay_t *r)
{
    int64_t cutoff = evbus__wall_ms() - r->o.retention_ms;
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
            if (evbus__sql_step_done(r->purge_del) != EVBUS_OK) {
                evbus__outbox_log(EVBUS_LOG_WARN, "relay: purge failed: %s",
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
    return rc == SQLITE_ROW ? EVBUS_OK : evbus__sqlite_err(rc);
}

int evbus__relay_round(evbus_relay_t *r, int max)
{
    if (!atomic_load(&r->active)) {
        int got = evbus__relay_lock_try(&r->lock);
        if (got <= 0)
            return got; /* 0: standby, another relay publishes */
        int rc = load_mark(r);
        if (rc != EVBUS_OK) {
            evbus__relay_lock_release(&r->lock);
            return rc;
        }
        /* same-process producers may now hand their events over */
        r->handoff = evbus__handoff_open(sqlite3_db_filename(r->db, "main"));
        atomic_store(&r->active, true);
        evbus__outbox_log(EVBUS_LOG_INFO,
                          "relay: lock taken, publishing after seq %lld",
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
    batch_t *q[RELAY_WINDOW]; /* in flight, oldest at q[head] */
    int head = 0, count = 0, total = 0, sent = 0, rc = EVBUS_OK;
    int64_t sent_upto = r->mark;
    bool more = true, broken = false;
    while (count > 0 || more) {
        if (more && count < RELAY_WINDOW) {
            int want = max - sent < r->cur_batch ? max - sent : r->cur_batch;
            int ring = (head + count) % RELAY_WINDOW;
            batch_t *b = malloc(sizeof *b + (size_t)want * sizeof(slot_t));
            if (!b) {
                rc = EVBUS_ENOMEM;
                more = false;
                continue;
            }
            atomic_init(&b->refs, 1);
            b->rows = r->rows + (size_t)ring * (size_t)r->o.batch_size;
            int err = EVBUS_OK;
            send_batch(r, b, sent_upto, want, &err);
            if (b->n == 0) {
                batch_unref(b);
                more = false;
                if (err != EVBUS_OK)
                    rc = err;
                continue;
            }
            sent += b->n;
            sent_upto = b->rows[b->n - 1].seq;
            q[ring] = b;
            count++;
            if (err != EVBUS_OK)
                rc = err;
            more = err == EVBUS_OK && b->n == want && sent < max;
            /* keep sending while the oldest batch is still on its way */
            if (more && count < RELAY_WINDOW && !batch_done(q[head]))
                continue;
        }
        if (count == 0)
            break;
        batch_t *b = q[head];
        head = (head + 1) % RELAY_WINDOW;
        count--;
        await_batch(r, b, !more);
        int got = 0;
        int err = settle_batch(r, b, &broken, &got);
        batch_unref(b);
        total += got;
        if (err != EVBUS_OK && rc == EVBUS_OK)
            rc = err;
        if (broken)
            more = false; /* drain what is in flight, then stop */
    }
    if (broken || rc != EVBUS_OK)
        r->cur_batch = r->cur_batch / 8 > 1 ? r->cur_batch / 8 : 1;
    else if (r->cur_batch < r->o.batch_size)
        r->cur_batch = r->cur_batch * 2 < r->o.batch_size ? r->cur_batch * 2
                                                          : r->o.batch_size;
    if (r->o.retention_ms > 0 &&
        (int64_t)evbus__mono_ms() >= r->next_purge_ms) {
        r->next_purge_ms = (int64_t)evbus__mono_ms() + r->o.purge_interval_ms;
        purge(r);
    }
    return total > 0 ? total : rc;
}
