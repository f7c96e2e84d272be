/*
 * Idempotent consumer: one UPSERT per claim on the application's connection.
 * A row whose claim is older than the retention is treated as absent (the
 * UPSERT refreshes it and reports a change), so expiry is exact even before
 * the purge has deleted the row.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "evbus/inbox.h"
#include "sql_util.h"
#include "support/structs.h"

#define INBOX_DDL                                                              \
    "CREATE TABLE IF NOT EXISTS evbus_inbox("                                  \
    " consumer TEXT NOT NULL,"                                                 \
    " source TEXT NOT NULL,"                                                   \
    " id TEXT NOT NULL,"                                                       \
    " claimed_at INTEGER NOT NULL,"                                            \
    " PRIMARY KEY(consumer, source, id)) WITHOUT ROWID"

struct evbus_inbox {
    sqlite3 *db;
    char *consumer;
    evbus_inbox_opts_t o;
    sqlite3_stmt *claim;
    sqlite3_stmt *purge;
    int64_t next_purge_ms; /* monotonic */
};

/* The options as of the first release that carried struct_size. */
#define INBOX_OPTS_MIN_SIZE                                                    \
    EVBUS__SIZE_THROUGH(evbus_inbox_opts_t, purge_interval_ms)

void evbus_inbox_opts_init_sized(evbus_inbox_opts_t *out, size_t size)
{
    evbus_inbox_opts_t defaults, *o = &defaults;
    memset(o, 0, sizeof *o);
    o->struct_size = sizeof *o;
    o->retention_ms = INT64_C(7) * 24 * 3600 * 1000;
    o->purge_interval_ms = 60000;
    evbus__struct_defaults(out, size, o, sizeof *o);
}

evbus_inbox_t *evbus_inbox_open(sqlite3 *db, const char *consumer,
                                char *errstr, size_t n)
{
    return evbus_inbox_open_opts(db, consumer, NULL, errstr, n);
}

evbus_inbox_t *evbus_inbox_open_opts(sqlite3 *db, const char *consumer,
                                     const evbus_inbox_opts_t *o,
                                     char *errstr, size_t n)
{
    if (!db || !consumer || !*consumer) {
        evbus__seterr(errstr, n, "evbus_inbox_open: %s",
                      !db ? "db is NULL" : "consumer name is empty");
        return NULL;
    }
    evbus_inbox_opts_t opts;
    evbus_inbox_opts_init(&opts);
    if (o && evbus__struct_in(&opts, sizeof opts, o, INBOX_OPTS_MIN_SIZE)) {
        evbus__seterr(errstr, n, "evbus_inbox_open: options not initialised "
                      "with evbus_inbox_opts_init");
        return NULL;
    }
    if (opts.retention_ms < 0 || opts.purge_interval_ms < 0) {
        evbus__seterr(errstr, n,
                      "evbus_inbox_open: retention_ms and purge_interval_ms "
                      "must be >= 0");
        return NULL;
    }
    evbus_inbox_t *in = calloc(1, sizeof *in);
    if (!in || !(in->consumer = strdup(consumer))) {
        free(in);
        evbus__seterr(errstr, n, "out of memory");
        return NULL;
    }
    in->db = db;
    in->o = opts;
    char why[200] = "";
    if (evbus__sql_exec(db, INBOX_DDL, why, sizeof why) != EVBUS_OK ||
        evbus__sql_prepare(
            db,
            "INSERT INTO evbus_inbox(consumer, source, id, claimed_at)"
            " VALUES(?1, ?2, ?3, ?4)"
            " ON CONFLICT(consumer, source, id) DO UPDATE"
            " SET claimed_at = excluded.claimed_at"
            " WHERE evbus_inbox.claimed_at < ?5",
            &in->claim, why, sizeof why) != EVBUS_OK ||
        evbus__sql_prepare(db,
                           "DELETE FROM evbus_inbox"
                           " WHERE consumer = ?1 AND claimed_at < ?2",
                           &in->purge, why, sizeof why) != EVBUS_OK) {
        evbus__seterr(errstr, n, "inbox: cannot create evbus_inbox: %s", why);
        evbus_inbox_close(in);
        return NULL;
    }
    sqlite3_bind_text(in->claim, 1, in->consumer, -1, SQLITE_STATIC);
    sqlite3_bind_text(in->purge, 1, in->consumer, -1, SQLITE_STATIC);
    evbus__sql_default_busy_timeout(db, 5000);
    in->next_purge_ms = (int64_t)evbus__mono_ms() + in->o.purge_interval_ms;
    return in;
}

/* Claims older than this (wall clock) are expired; INT64_MIN = never. */
static int64_t cutoff_ms(const evbus_inbox_t *in, int64_t now)
{
    return in->o.retention_ms > 0 ? now - in->o.retention_ms : INT64_MIN;
}

int evbus_inbox_purge(evbus_inbox_t *in)
{
    if (!in)
        return EVBUS_EINVAL;
    if (in->o.retention_ms == 0)
        return 0;
    sqlite3_bind_int64(in->purge, 2, cutoff_ms(in, evbus__wall_ms()));
    int rc = evbus__sql_step_done(in->purge);
    if (rc != EVBUS_OK)
        return rc;
    return sqlite3_changes(in->db);
}

int evbus_inbox_claim(evbus_inbox_t *in, const evbus_event_t *ev)
{
    if (!in || !ev)
        return EVBUS_EINVAL;
    const char *source = evbus_event_source(ev), *id = evbus_event_id(ev);
    if (!source || !*source || !id || !*id)
        return EVBUS_EINVAL;
    if (in->o.purge_interval_ms > 0 && in->o.retention_ms > 0) {
        int64_t mono = (int64_t)evbus__mono_ms();
        if (mono >= in->next_purge_ms) {
            in->next_purge_ms = mono + in->o.purge_interval_ms;
            int purged = evbus_inbox_purge(in);
            if (purged < 0) /* not fatal: the claim itself still works */
                evbus__outbox_log(EVBUS_LOG_WARN, "inbox %s: purge failed: %s",
                                  in->consumer, sqlite3_errmsg(in->db));
        }
    }
    int64_t now = evbus__wall_ms();
    sqlite3_bind_text(in->claim, 2, source, -1, SQLITE_STATIC);
    sqlite3_bind_text(in->claim, 3, id, -1, SQLITE_STATIC);
    sqlite3_bind_int64(in->claim, 4, now);
    sqlite3_bind_int64(in->claim, 5, cutoff_ms(in, now));
    int rc = evbus__sql_step_done(in->claim);
    if (rc != EVBUS_OK) {
        evbus__outbox_log(EVBUS_LOG_WARN, "inbox %s: claim failed: %s",
                          in->consumer, sqlite3_errmsg(in->db));
        return rc;
    }
    return sqlite3_changes(in->db) > 0 ? 1 : 0;
}

sqlite3 *evbus_inbox_db(const evbus_inbox_t *in)
{
    return in ? in->db : NULL;
}

void evbus_inbox_close(evbus_inbox_t *in)
{
    if (!in)
        return;
    sqlite3_finalize(in->claim);
    sqlite3_finalize(in->purge);
    free(in->consumer);
    free(in);
}
