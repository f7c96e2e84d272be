/*
 * The saga tables (created on open, versioned in evbus_saga_schema) and the
 * transaction boundaries every transition uses: BEGIN IMMEDIATE, or a
 * SAVEPOINT inside a transaction the application already has open.
 */
#include <stdio.h>
#include <string.h>

#include "saga_internal.h"

#define VERSION_DDL                                                            \
    "CREATE TABLE IF NOT EXISTS evbus_saga_schema("                            \
    " id INTEGER PRIMARY KEY CHECK (id = 1),"                                  \
    " version INTEGER NOT NULL)"

/* seq orders instances by creation (newest first in listings); the timer
 * index holds only instances that wait for a timer. The per-step results
 * are a JSON array in the row (saga_steps.c); the history is keyed by
 * (instance, number), so appending to it writes one b-tree. */
static const char saga_ddl[] =
    "CREATE TABLE IF NOT EXISTS evbus_saga("
    " seq INTEGER PRIMARY KEY,"
    " id TEXT NOT NULL UNIQUE,"
    " saga TEXT NOT NULL,"
    " state TEXT NOT NULL,"
    " step INTEGER NOT NULL,"
    " attempt INTEGER NOT NULL,"
    " waiting TEXT,"
    " data TEXT NOT NULL,"
    " reason TEXT,"
    " due_at INTEGER,"
    " prev_delay_ms INTEGER NOT NULL DEFAULT 0,"
    " comp_started_at INTEGER NOT NULL DEFAULT 0,"
    " steps TEXT NOT NULL DEFAULT '[]',"
    " hseq INTEGER NOT NULL DEFAULT 0,"
    " created_at INTEGER NOT NULL,"
    " updated_at INTEGER NOT NULL,"
    " ended_at INTEGER);"
    "CREATE INDEX IF NOT EXISTS evbus_saga_due ON evbus_saga(saga, due_at)"
    " WHERE due_at IS NOT NULL;"
    "CREATE INDEX IF NOT EXISTS evbus_saga_by_state ON evbus_saga(state, saga);"
    "CREATE TABLE IF NOT EXISTS evbus_saga_history("
    " saga_id TEXT NOT NULL,"
    " seq INTEGER NOT NULL,"
    " at INTEGER NOT NULL,"
    " step INTEGER,"
    " event TEXT NOT NULL,"
    " from_state TEXT,"
    " to_state TEXT,"
    " detail TEXT,"
    " PRIMARY KEY(saga_id, seq)) WITHOUT ROWID";

/* Purged by a scan once an hour (no index on the age: one b-tree less to
 * write per command). */
static const char part_ddl[] =
    "CREATE TABLE IF NOT EXISTS evbus_saga_part("
    " consumer TEXT NOT NULL,"
    " saga_id TEXT NOT NULL,"
    " step INTEGER NOT NULL,"
    " state TEXT NOT NULL,"
    " updated_at INTEGER NOT NULL,"
    " PRIMARY KEY(consumer, saga_id, step)) WITHOUT ROWID";

/* Creates the version table, records ours when there is none, and refuses
 * a database written by a newer schema. */
static int check_version(sqlite3 *db, char *why, size_t n)
{
    int rc = evbus__sql_exec(db, VERSION_DDL, why, n);
    if (rc == EVBUS_OK)
        rc = evbus__sql_exec(db,
                      "INSERT OR IGNORE INTO evbus_saga_schema VALUES(1, 1)",
                      why, n);
    if (rc != EVBUS_OK)
        return rc;
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(db, "SELECT version FROM evbus_saga_schema", -1,
                           &st, NULL) != SQLITE_OK) {
        evbus__seterr(why, n, "%s", sqlite3_errmsg(db));
        return EVBUS_EIO;
    }
    int version = sqlite3_step(st) == SQLITE_ROW ? sqlite3_column_int(st, 0)
                                                 : 0;
    sqlite3_finalize(st);
    if (version > SAGA_SCHEMA_VERSION) {
        evbus__seterr(why, n,
                   "the saga tables have schema version %d, newer than this "
                   "library's %d: use a newer libevbus",
                   version, SAGA_SCHEMA_VERSION);
        return EVBUS_ESTATE;
    }
    return EVBUS_OK;
}

int evbus__saga_schema(sqlite3 *db, char *why, size_t n)
{
    int rc = check_version(db, why, n);
    return rc != EVBUS_OK ? rc : evbus__sql_exec(db, saga_ddl, why, n);
}

int evbus__saga_part_schema(sqlite3 *db, char *why, size_t n)
{
    int rc = check_version(db, why, n);
    return rc != EVBUS_OK ? rc : evbus__sql_exec(db, part_ddl, why, n);
}

int evbus__saga_has_tables(sqlite3 *db)
{
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(db,
                           "SELECT count(*) FROM sqlite_master WHERE type ="
                           " 'table' AND name IN ('evbus_saga',"
                           " 'evbus_saga_history')",
                           -1, &st, NULL) != SQLITE_OK)
        return EVBUS_EIO;
    int rc = sqlite3_step(st);
    int have = rc == SQLITE_ROW ? sqlite3_column_int(st, 0) : -1;
    sqlite3_finalize(st);
    if (have < 0)
        return evbus__sqlite_err(rc);
    return have == 2;
}

int evbus__saga_tx_begin(sqlite3 *db, int *nested, const char *savepoint)
{
    char sql[96];
    *nested = !sqlite3_get_autocommit(db);
    if (*nested)
        snprintf(sql, sizeof sql, "SAVEPOINT %s", savepoint);
    /* IMMEDIATE takes the write lock now: a deferred transaction that
     * upgrades later can fail with SQLITE_BUSY without waiting. */
    return evbus__sql_exec(db, *nested ? sql : "BEGIN IMMEDIATE", NULL, 0);
}

int evbus__saga_tx_commit(sqlite3 *db, int nested, const char *savepoint)
{
    char sql[96];
    if (nested)
        snprintf(sql, sizeof sql, "RELEASE %s", savepoint);
    return evbus__sql_exec(db, nested ? sql : "COMMIT", NULL, 0);
}

void evbus__saga_tx_rollback(sqlite3 *db, int nested, const char *savepoint)
{
    char sql[160];
    if (nested)
        snprintf(sql, sizeof sql, "ROLLBACK TO %s; RELEASE %s", savepoint,
                 savepoint);
    /* A failed COMMIT may have rolled back already; then this is a no-op
     * that fails harmlessly. */
    if (nested || !sqlite3_get_autocommit(db))
        evbus__sql_exec(db, nested ? sql : "ROLLBACK", NULL, 0);
}
