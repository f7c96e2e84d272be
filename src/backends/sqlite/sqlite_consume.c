/*
 * sqlite:// backend - consumer groups with leases.
 *
 * fetch leases a batch in one BEGIN IMMEDIATE transaction: first pending
 * events of the group that are visible again (lease expired because a
 * member died, retry delay over, released), then new events after the
 * group's cursor, which moves past them. Each leased event is invisible to
 * the other members for visibility_timeout_ms.
 *
 * settle does not write at once: ACK/RETRY/RELEASE are buffered and written
 * in the next fetch's or record_attempts' transaction (or by the watcher
 * within ~100 ms when neither comes). A crash before that only means the lease
 * expires and the event is delivered again: at-least-once, and only for events
 * this member held a lease on.
 *
 * Lease renewal: while the polling thread makes progress (a fetch or settle
 * within the last visibility timeout) the watcher renews the leases of
 * everything fetched and not yet settled every third of the timeout, so a
 * slow but working member keeps its whole batch. A dead process, or a
 * handler stuck longer than the timeout, stops the renewal and the events
 * go to other members.
 *
 * Attempt counting: an attempt is a handler call, not a lease. Before the
 * core runs handlers it calls record_attempts, which stores each event's
 * attempt number, first-attempt time and previous delay in evbus_pending
 * and commits (with the buffered settles) before returning, so a crash in
 * the handler cannot lose it. fetch reports what is stored; RETRY keeps
 * it and stores the delay as prev_delay_ms; RELEASE and an expired lease
 * leave it as it was, so events fetched but never handed to a handler are
 * not charged. evbus_pending.deliveries counts leases and, with owner,
 * names the current one: a member that lost its lease changes nothing.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include "sqlite_internal.h"

/* A failing fetch is tried again after this, doubling up to the max. */
#define FETCH_BACKOFF_MS 50
#define FETCH_BACKOFF_MAX_MS 1000

static uint64_t random_owner(void)
{
    uint64_t v = 0;
    while (v == 0) {
        if (getrandom(&v, sizeof v, 0) != (ssize_t)sizeof v)
            v = (uint64_t)evbus__wall_ms() ^ (uint64_t)(uintptr_t)&v;
        v &= INT64_MAX; /* stored as a SQLite integer */
    }
    return v;
}

int evbus__sqlite_subscribe(void *priv, const char *topic, const char *group,
                            void **bsub, char *errstr, size_t n)
{
    sq_bus_t *b = priv;
    if (!group || !*group)
        group = "default";
    sq_sub_t *s = calloc(1, sizeof *s);
    if (!s || !(s->topic = strdup(topic)) || !(s->group = strdup(group))) {
        if (s)
            free(s->topic);
        free(s);
        snprintf(errstr, n, "sqlite: out of memory");
        return EVBUS_ENOMEM;
    }
    s->bus = b;
    s->owner = random_owner();

    pthread_mutex_lock(&b->sub_mu);
    sq_conn_t *c = &b->sub;
    int err = evbus__sqlite_topic_id(c, topic, &s->topic_id);
    if (err == EVBUS_OK)
        err = evbus__sqlite_begin(c);
    if (err == EVBUS_OK) {
        sqlite3_stmt *st = evbus__sqlite_stmt(c, SQ_GROUP_INS);
        int rc = st ? SQLITE_OK : sqlite3_errcode(c->db);
        if (st) {
            sqlite3_bind_int64(st, 1, s->topic_id);
            sqlite3_bind_text(st, 2, group, -1, SQLITE_STATIC);
            rc = sqlite3_step(st);
            sqlite3_reset(st);
            rc = rc == SQLITE_DONE ? SQLITE_OK : rc;
        }
        if (rc == SQLITE_OK && !(st = evbus__sqlite_stmt(c, SQ_GROUP_GET)))
            rc = sqlite3_errcode(c->db);
        if (rc == SQLITE_OK) {
            sqlite3_bind_int64(st, 1, s->topic_id);
            sqlite3_bind_text(st, 2, group, -1, SQLITE_STATIC);
            rc = evbus__sqlite_step_int(st, 0, &s->gid);
            sqlite3_clear_bindings(st);
        }
        err = rc == SQLITE_OK && s->gid > 0 ? evbus__sqlite_commit(c)
                                            : evbus__sqlite_fail(c, rc);
        if (err != EVBUS_OK)
            evbus__sqlite_rollback(c);
    }
    if (err == EVBUS_OK) {
        s->next = b->subs;
        b->subs = s;
        atomic_fetch_add(&b->nsubs, 1);
        b->sub_gen++;
    }
    pthread_mutex_unlock(&b->sub_mu);
    if (err != EVBUS_OK) {
        snprintf(errstr, n, "sqlite: cannot subscribe to %s as %s: %s", topic,
                 group, evbus_strerror(err));
        free(s->topic);
        free(s->group);
        free(s);
        return err;
    }
    evbus__sqlite_watcher_poke(b); /* start watching the file */
    *bsub = s;
    return EVBUS_OK;
}

void evbus__sqlite_unsubscribe(void *priv, void *bsub)
{
    sq_bus_t *b = priv;
    sq_sub_t *s = bsub;
    pthread_mutex_lock(&b->sub_mu);
    /* Write what it settled; after a failure the leases simply expire. */
    for (int tries = 0; s->nops > 0 && tries < 3; tries++)
        evbus__sqlite_flush_ops_locked(b);
    if (s->nops > 0)
        evbus__sqlite_sub_log(
            b, EVBUS_LOG_WARN,
            "%zu settles on %s could not be written; those events are "
            "delivered again after their lease expires",
            s->nops, s->topic);
    for (sq_sub_t **pp = &b->subs; *pp; pp = &(*pp)->next)
        if (*pp == s) {
            *pp = s->next;
            break;
        }
    atomic_fetch_sub(&b->nsubs, 1);
    evbus__sqlite_sub_unlock(b);
    free(s->ops);
    free(s->topic);
    free(s->group);
    free(s);
}

static sq_lease_t *lease_new(int64_t seq, int64_t deliveries,
                             const void *payload, size_t len)
{
    sq_lease_t *l = malloc(sizeof *l + len + 1);
    if (!l)
        return NULL;
    l->seq = seq;
    l->deliveries = deliveries;
    l->len = len;
    if (len)
        memcpy(l->payload, payload, len);
    l->payload[len] = '\0';
    return l;
}

static int clamp_int(int64_t v)
{
    return v < 0 ? 0 : v > INT32_MAX ? INT32_MAX : (int)v;
}

static void fill_msg(sq_sub_t *s, evbus_msg_t *m, sq_lease_t *l)
{
    memset(m, 0, sizeof *m);
    m->topic = s->topic;
    m->payload = l->payload;
    m->len = l->len;
    m->cookie = l;
    m->cookie_u64 = (uint64_t)l->seq;
}

/* Leases pending events that are visible again. Returns how many were put
 * in out, or a negative error. */
static int lease_due(sq_sub_t *s, int64_t now, evbus_msg_t *out, int max)
{
    sq_conn_t *c = &s->bus->sub;
    sqlite3_stmt *st = evbus__sqlite_stmt(c, SQ_DUE_SEL);
    if (!st)
        return evbus__sqlite_fail(c, sqlite3_errcode(c->db));
    sqlite3_bind_int64(st, 1, s->gid);
    sqlite3_bind_int64(st, 2, now);
    sqlite3_bind_int64(st, 3, max);
    int n = 0, rc;
    int64_t orphans[64];
    int norphans = 0;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        int64_t seq = sqlite3_column_int64(st, 0);
        int64_t deliveries = sqlite3_column_int64(st, 1);
        if (sqlite3_column_type(st, 2) == SQLITE_NULL) {
            /* The event is gone (deleted by hand): forget the entry. */
            if (norphans < 64)
                orphans[norphans++] = seq;
            continue;
        }
        const void *p = sqlite3_column_blob(st, 2);
        size_t len = (size_t)sqlite3_column_bytes(st, 2);
        sq_lease_t *l = lease_new(seq, deliveries + 1, p, len);
        if (!l) {
            rc = SQLITE_NOMEM;
            break;
        }
        evbus_msg_t *m = &out[n++];
        fill_msg(s, m, l);
        /* The retry context as record_attempts and RETRY stored it. */
        m->attempts = clamp_int(sqlite3_column_int64(st, 3));
        m->prev_delay_ms = clamp_int(sqlite3_column_int64(st, 4));
        m->first_attempt_ms = sqlite3_column_int64(st, 5);
    }
    sqlite3_reset(st);
    int err = rc == SQLITE_DONE ? EVBUS_OK : evbus__sqlite_fail(c, rc);
    int64_t until = now + s->bus->o.visibility_timeout_ms;
    for (int i = 0; i < n && err == EVBUS_OK; i++)
        err = evbus__sqlite_exec_gid_seq(c, SQ_LEASE_UPD, s->gid,
                                         (int64_t)out[i].cookie_u64, until,
                                         (int64_t)s->owner, 0);
    for (int i = 0; i < norphans && err == EVBUS_OK; i++)
        err = evbus__sqlite_exec_gid_seq(c, SQ_PEND_DEL, s->gid, orphans[i], 0,
                                         0, 0);
    if (err != EVBUS_OK) {
        for (int i = 0; i < n; i++)
            free(out[i].cookie);
        return err;
    }
    return n;
}

/* Leases new events after the group's cursor and moves the cursor. */
static int lease_fresh(sq_sub_t *s, int64_t now, evbus_msg_t *out, int max)
{
    sq_conn_t *c = &s->bus->sub;
    sqlite3_stmt *st = evbus__sqlite_stmt(c, SQ_CURSOR_GET);
    if (!st)
        return evbus__sqlite_fail(c, sqlite3_errcode(c->db));
    sqlite3_bind_int64(st, 1, s->gid);
    int64_t cursor;
    int rc = evbus__sqlite_step_int(st, 0, &cursor);
    if (rc != SQLITE_OK)
        return evbus__sqlite_fail(c, rc);
    if (!(st = evbus__sqlite_stmt(c, SQ_NEW_SEL)))
        return evbus__sqlite_fail(c, sqlite3_errcode(c->db));
    sqlite3_bind_int64(st, 1, s->topic_id);
    sqlite3_bind_int64(st, 2, cursor);
    sqlite3_bind_int64(st, 3, max);
    int n = 0;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        int64_t seq = sqlite3_column_int64(st, 0);
        const void *p = sqlite3_column_blob(st, 1);
        size_t len = (size_t)sqlite3_column_bytes(st, 1);
        sq_lease_t *l = lease_new(seq, 1, p, len);
        if (!l) {
            rc = SQLITE_NOMEM;
            break;
        }
        fill_msg(s, &out[n++], l);
    }
    sqlite3_reset(st);
    int err = rc == SQLITE_DONE ? EVBUS_OK : evbus__sqlite_fail(c, rc);
    int64_t until = now + s->bus->o.visibility_timeout_ms;
    for (int i = 0; i < n && err == EVBUS_OK; i++)
        err = evbus__sqlite_exec_gid_seq(c, SQ_PEND_INS, s->gid,
                                         (int64_t)out[i].cookie_u64, until,
                                         (int64_t)s->owner, 0);
    if (err == EVBUS_OK && n > 0)
        err = evbus__sqlite_exec_gid_seq(
            c, SQ_CURSOR_SET, s->gid, (int64_t)out[n - 1].cookie_u64, 0, 0, 0);
    if (err != EVBUS_OK) {
        for (int i = 0; i < n; i++)
            free(out[i].cookie);
        return err;
    }
    return n;
}

/* Remembers that s has nothing now: until dv or sub_gen change or
 * next_due passes, fetch can answer 0 without a query. Asks the watcher
 * to notify when the next lease or retry turns due. */
static void remember_idle(sq_sub_t *s, int64_t dv, int64_t now)
{
    sq_conn_t *c = &s->bus->sub;
    int64_t due = INT64_MAX;
    sqlite3_stmt *st = evbus__sqlite_stmt(c, SQ_NEXT_DUE);
    if (st) {
        sqlite3_bind_int64(st, 1, s->gid);
        sqlite3_bind_int64(st, 2, now);
        if (evbus__sqlite_step_int(st, INT64_MAX, &due) != SQLITE_OK)
            due = now + 1000; /* look again soon */
    }
    s->seen_dv = dv;
    s->seen_gen = s->bus->sub_gen;
    s->next_due_ms = due;
    s->idle_known = dv >= 0;
    if (due != INT64_MAX)
        evbus__sqlite_watch_due(s->bus, due);
}

static int ready(sq_sub_t *s, int64_t now, bool *yes)
{
    sq_conn_t *c = &s->bus->sub;
    sqlite3_stmt *st = evbus__sqlite_stmt(c, SQ_READY);
    if (!st)
        return evbus__sqlite_fail(c, sqlite3_errcode(c->db));
    sqlite3_bind_int64(st, 1, s->gid);
    sqlite3_bind_int64(st, 2, now);
    sqlite3_bind_int64(st, 3, s->topic_id);
    int64_t v;
    int rc = evbus__sqlite_step_int(st, 0, &v);
    *yes = v != 0;
    return evbus__sqlite_fail(c, rc);
}

/* Updates s's fetch backoff after a fetch (caller holds sub_mu). True
 * when the cause of a failure should be logged: why is filled then. */
static bool fetch_outcome(sq_sub_t *s, int err, uint64_t mono, char *why,
                          size_t n)
{
    if (err == EVBUS_OK) {
        if (s->fetch_err) {
            s->fetch_err = 0;
            s->fetch_backoff_ms = 0;
            evbus__lograte_ok(&s->fetch_log);
        }
        return false;
    }
    s->fetch_backoff_ms = s->fetch_backoff_ms
                              ? (s->fetch_backoff_ms * 2 > FETCH_BACKOFF_MAX_MS
                                     ? FETCH_BACKOFF_MAX_MS
                                     : s->fetch_backoff_ms * 2)
                              : FETCH_BACKOFF_MS;
    s->fetch_retry_ms = mono + s->fetch_backoff_ms;
    s->fetch_err = err;
    uint64_t repeats;
    if (!evbus__lograte_fail(&s->fetch_log, err, &repeats) || repeats > 0)
        return false;
    evbus__sqlite_why(s->bus, &s->bus->sub, err, why, n);
    return true;
}

int evbus__sqlite_fetch(void *priv, void *bsub, evbus_msg_t *out, int max)
{
    sq_bus_t *b = priv;
    sq_sub_t *s = bsub;
    if (max <= 0)
        return 0;
    uint64_t mono = evbus__mono_ms();
    atomic_store(&b->progress_ms, (int64_t)mono);
    /* The file is gone (logged once), or failing: answer the error
     * without touching the file until the backoff passed. */
    if (evbus__sqlite_file_ok(b) != EVBUS_OK)
        return EVBUS_EIO;
    pthread_mutex_lock(&b->sub_mu);
    if (s->fetch_err && mono < s->fetch_retry_ms) {
        int err = s->fetch_err;
        pthread_mutex_unlock(&b->sub_mu);
        return err;
    }
    sq_conn_t *c = &b->sub;
    int64_t now = evbus__wall_ms();
    int64_t dv = evbus__sqlite_data_version(c);
    /* Settles of every subscription of this bus go into this fetch's
     * transaction (they share the connection), so none waits for the
     * watcher. */
    size_t ops = evbus__sqlite_ops_buffered(b);
    /* Nothing changed since we last found nothing: no query at all. */
    if (ops == 0 && s->idle_known && dv == s->seen_dv &&
        s->seen_gen == b->sub_gen && now < s->next_due_ms) {
        pthread_mutex_unlock(&b->sub_mu);
        return 0;
    }
    s->idle_known = false;
    int err = EVBUS_OK;
    if (ops == 0) {
        bool yes = false;
        err = ready(s, now, &yes);
        if (err == EVBUS_OK && !yes) {
            remember_idle(s, dv, now);
            pthread_mutex_unlock(&b->sub_mu);
            return 0;
        }
    }
    int n = 0;
    if (err == EVBUS_OK)
        err = evbus__sqlite_begin(c);
    if (err == EVBUS_OK) {
        err = evbus__sqlite_apply_ops(b);
        int got = err == EVBUS_OK ? lease_due(s, now, out, max) : err;
        if (got >= 0) {
            n = got;
            got = lease_fresh(s, now, out + n, max - n);
        }
        if (got < 0) {
            err = got;
        } else {
            n += got;
            err = evbus__sqlite_commit(c);
        }
        if (err != EVBUS_OK) {
            evbus__sqlite_rollback(c);
            for (int i = 0; i < n; i++)
                free(out[i].cookie);
            n = 0;
        } else {
            for (int i = 0; i < n; i++) {
                sq_lease_t *l = out[i].cookie;
                l->prev = NULL;
                l->next = s->held;
                if (s->held)
                    s->held->prev = l;
                s->held = l;
            }
            if (ops > 0)
                evbus__sqlite_ops_written(b);
        }
    }
    if (err == EVBUS_OK && n == 0)
        remember_idle(s, dv, now);
    char why[600];
    bool log_cause = fetch_outcome(s, err, mono, why, sizeof why);
    pthread_mutex_unlock(&b->sub_mu);
    /* The core counts and logs repeated fetch failures; this line only
     * says why (disk full, which file), once per different error. */
    if (log_cause)
        evbus_host_log(b->host, EVBUS_LOG_WARN, "fetch from %s failed: %s",
                       s->topic, why);
    return err != EVBUS_OK ? err : n;
}
