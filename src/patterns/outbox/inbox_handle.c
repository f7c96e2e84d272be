/*
 * The transaction helper: claim + user work + follow-up outbox events in one
 * SQLite transaction, mapped to the handler results ACK / RETRY / DROP.
 * When the caller already has a transaction open, a SAVEPOINT nests inside
 * it, so the helper's part still rolls back alone on failure.
 */
#include "evbus/inbox.h"
#include "sql_util.h"

static int run(sqlite3 *db, const char *sql)
{
    return evbus__sql_exec(db, sql, NULL, 0);
}

evbus_result_t evbus_inbox_handle(evbus_inbox_t *in, evbus_outbox_t *ob,
                                  const evbus_event_t *ev,
                                  evbus_inbox_work_fn work, void *opaque)
{
    sqlite3 *db = evbus_inbox_db(in);
    if (!db || !ev)
        return EVBUS_RETRY;
    if (ob && evbus_outbox_db(ob) != db) {
        evbus__outbox_log(
            EVBUS_LOG_ERROR,
            "inbox_handle: the outbox uses another connection than the "
            "inbox; they cannot share a transaction");
        return EVBUS_RETRY;
    }
    /* IMMEDIATE takes the write lock up front: a deferred transaction that
     * upgrades later can fail with SQLITE_BUSY without waiting. */
    int nested = !sqlite3_get_autocommit(db);
    const char *begin = nested ? "SAVEPOINT evbus_inbox_handle"
                               : "BEGIN IMMEDIATE";
    const char *commit = nested ? "RELEASE evbus_inbox_handle" : "COMMIT";
    const char *rollback = nested ? "ROLLBACK TO evbus_inbox_handle;"
                                    " RELEASE evbus_inbox_handle"
                                  : "ROLLBACK";
    int rc = run(db, begin);
    if (rc != EVBUS_OK) {
        evbus__outbox_log(EVBUS_LOG_WARN, "inbox_handle: %s failed: %s", begin,
                          sqlite3_errmsg(db));
        return EVBUS_RETRY;
    }
    int claimed = evbus_inbox_claim(in, ev);
    int result;
    if (claimed < 0)
        result = EVBUS_RETRY;
    else if (claimed == 0)
        result = EVBUS_ACK; /* duplicate: already applied, nothing to do */
    else if (!work)
        result = EVBUS_ACK;
    else {
        evbus_result_t w = work(db, ev, ob, opaque);
        result = w == EVBUS_ACK ? EVBUS_ACK
               : w == EVBUS_DROP ? EVBUS_DROP
                                 : EVBUS_RETRY;
    }
    if (result == EVBUS_ACK) {
        rc = run(db, commit);
        if (rc == EVBUS_OK)
            return EVBUS_ACK;
        evbus__outbox_log(EVBUS_LOG_WARN, "inbox_handle: commit failed: %s",
                          sqlite3_errmsg(db));
        result = EVBUS_RETRY;
    }
    /* A failed COMMIT may already have rolled back; then this fails
     * harmlessly. */
    if (!sqlite3_get_autocommit(db) || nested)
        run(db, rollback);
    return (evbus_result_t)result;
}
