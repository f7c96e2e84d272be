/*
 * sqlite:// backend - the tables, their version and the migration of files
 * written by older versions of the library.
 *
 * The version lives in evbus_meta('schema'). A connection that may create
 * (the bus's first) creates what is missing and migrates an older file in
 * the same BEGIN IMMEDIATE transaction, so concurrent openers see either the
 * old or the new layout, never half of it; the others only check it.
 *
 *   1  the first layout
 *   2  evbus_pending gains the retry context the core records before each
 *      handler call (attempts, prev_delay_ms, first_attempt_ms), so attempt
 *      counts and max_elapsed_ms survive crashes and delayed retries
 *
 * Older libraries refuse a file of a newer version at open (they check the
 * version), rather than misreading it.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sqlite_internal.h"

#define SCHEMA_VERSION 2

static const char schema_sql[] =
    "CREATE TABLE IF NOT EXISTS evbus_meta(key TEXT PRIMARY KEY, value TEXT)"
    " WITHOUT ROWID;"
    /* A new file starts at the current version; an old one keeps its
     * number here and is migrated below. */
    "INSERT OR IGNORE INTO evbus_meta VALUES('schema', '2');"
    "CREATE TABLE IF NOT EXISTS evbus_topics(id INTEGER PRIMARY KEY,"
    " name TEXT NOT NULL UNIQUE);"
    /* seq is the rowid: retention never deletes the newest row, so seqs
     * keep growing without AUTOINCREMENT's extra page write per insert. */
    "CREATE TABLE IF NOT EXISTS evbus_events(seq INTEGER PRIMARY KEY,"
    " topic_id INTEGER NOT NULL, created_ms INTEGER NOT NULL,"
    " payload BLOB NOT NULL);"
    "CREATE INDEX IF NOT EXISTS evbus_events_by_topic ON"
    " evbus_events(topic_id, seq);"
    "CREATE TABLE IF NOT EXISTS evbus_groups(id INTEGER PRIMARY KEY,"
    " topic_id INTEGER NOT NULL, name TEXT NOT NULL,"
    " cursor INTEGER NOT NULL DEFAULT 0, UNIQUE(topic_id, name));"
    /* deliveries counts hand-outs (leases) and identifies the current
     * lease with owner; attempts counts handler calls. */
    "CREATE TABLE IF NOT EXISTS evbus_pending(gid INTEGER NOT NULL,"
    " seq INTEGER NOT NULL, visible_at INTEGER NOT NULL,"
    " deliveries INTEGER NOT NULL, owner INTEGER NOT NULL,"
    " attempts INTEGER NOT NULL DEFAULT 0,"
    " prev_delay_ms INTEGER NOT NULL DEFAULT 0,"
    " first_attempt_ms INTEGER NOT NULL DEFAULT 0,"
    " PRIMARY KEY(gid, seq)) WITHOUT ROWID;"
    "CREATE INDEX IF NOT EXISTS evbus_pending_due ON"
    " evbus_pending(gid, visible_at);";

/* Version 1 -> 2. Rows leased before keep 0: their hand-outs were never
 * known to be handler calls. */
static const char migrate_1_to_2[] =
    "ALTER TABLE evbus_pending ADD COLUMN attempts INTEGER NOT NULL"
    " DEFAULT 0;"
    "ALTER TABLE evbus_pending ADD COLUMN prev_delay_ms INTEGER NOT NULL"
    " DEFAULT 0;"
    "ALTER TABLE evbus_pending ADD COLUMN first_attempt_ms INTEGER NOT NULL"
    " DEFAULT 0;"
    "UPDATE evbus_meta SET value='2' WHERE key='schema';";

/* The file's schema version: > 0, 0 when evbus_meta has no version, or a
 * negative error with the reason in errstr. */
static int schema_version(sq_conn_t *c, char *errstr, size_t n)
{
    sqlite3_stmt *st = NULL;
    int rc = sqlite3_prepare_v2(c->db,
                                "SELECT value FROM evbus_meta WHERE "
                                "key='schema'",
                                -1, &st, NULL);
    if (rc != SQLITE_OK) {
        snprintf(errstr, n, "sqlite: not an evbus database: %s",
                 sqlite3_errmsg(c->db));
        return EVBUS_EIO;
    }
    int v = 0;
    rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        const char *s = (const char *)sqlite3_column_text(st, 0);
        char *end = NULL;
        long l = s ? strtol(s, &end, 10) : 0;
        v = s && *s && !*end && l > 0 && l < 1000000 ? (int)l : -1;
        if (v < 0) {
            snprintf(errstr, n,
                     "sqlite: evbus schema version '%s' is not "
                     "a number",
                     s ? s : "(null)");
            v = EVBUS_EIO;
        }
    } else if (rc != SQLITE_DONE) {
        snprintf(errstr, n, "sqlite: reading the schema version: %s",
                 sqlite3_errmsg(c->db));
        v = evbus__sqlite_err(rc);
    }
    sqlite3_finalize(st);
    return v;
}

static int check_version(int v, char *errstr, size_t n)
{
    if (v < 0)
        return v;
    if (v != SCHEMA_VERSION) {
        if (v == 0)
            snprintf(errstr, n, "sqlite: evbus schema missing");
        else
            snprintf(errstr, n,
                     "sqlite: evbus schema version %d, this library knows "
                     "%d%s",
                     v, SCHEMA_VERSION,
                     v > SCHEMA_VERSION ? " (written by a newer libevbus)"
                                        : "");
        return EVBUS_EIO;
    }
    return EVBUS_OK;
}

int evbus__sqlite_schema_ensure(sq_conn_t *c, const char *path, bool create,
                                char *errstr, size_t n)
{
    if (!create)
        return check_version(schema_version(c, errstr, n), errstr, n);
    char *sql = NULL;
    if (asprintf(&sql, "BEGIN IMMEDIATE; %s", schema_sql) < 0)
        return EVBUS_ENOMEM;
    int err = evbus__sqlite_exec_retry(c, path, sql, errstr, n,
                                       "creating the evbus schema");
    free(sql);
    if (err != EVBUS_OK)
        return err;
    int v = schema_version(c, errstr, n);
    if (v == 1) {
        err = evbus__sqlite_exec_retry(c, path, migrate_1_to_2, errstr, n,
                                       "migrating the schema to version 2");
        v = err == EVBUS_OK ? 2 : err;
    }
    err = check_version(v, errstr, n);
    if (err != EVBUS_OK) {
        evbus__sqlite_rollback(c);
        return err;
    }
    err = evbus__sqlite_commit(c);
    if (err != EVBUS_OK)
        snprintf(errstr, n, "sqlite: %s: committing the evbus schema: %s", path,
                 evbus_strerror(err));
    return err;
}
