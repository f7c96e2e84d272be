/* Shared SQLite helpers for the outbox, relay and inbox. */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "core/patterns.h"
#include "evbus/evbus.h"
#include "sql_util.h"

void evbus__outbox_log(int level, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    evbus__vlog(level, "outbox", fmt, ap);
    va_end(ap);
}

int evbus__sql_exec(sqlite3 *db, const char *sql, char *errstr, size_t n)
{
    int rc = sqlite3_exec(db, sql, NULL, NULL, NULL);
    if (rc != SQLITE_OK) {
        evbus__seterr(errstr, n, "%s", sqlite3_errmsg(db));
        return evbus__sqlite_err(rc);
    }
    return EVBUS_OK;
}

int evbus__sql_prepare(sqlite3 *db, const char *sql, sqlite3_stmt **st,
                       char *errstr, size_t n)
{
    int rc = sqlite3_prepare_v3(db, sql, -1, SQLITE_PREPARE_PERSISTENT, st,
                                NULL);
    if (rc != SQLITE_OK) {
        evbus__seterr(errstr, n, "prepare: %s", sqlite3_errmsg(db));
        *st = NULL;
        return evbus__sqlite_err(rc);
    }
    return EVBUS_OK;
}

int evbus__sql_step_done(sqlite3_stmt *st)
{
    int rc = sqlite3_step(st);
    sqlite3_reset(st);
    return rc == SQLITE_DONE || rc == SQLITE_ROW ? EVBUS_OK
                                                 : evbus__sqlite_err(rc);
}

void evbus__sql_default_busy_timeout(sqlite3 *db, int ms)
{
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(db, "PRAGMA busy_timeout", -1, &st, NULL) !=
        SQLITE_OK)
        return;
    int current = sqlite3_step(st) == SQLITE_ROW ? sqlite3_column_int(st, 0)
                                                 : 0;
    sqlite3_finalize(st);
    if (current == 0)
        sqlite3_busy_timeout(db, ms);
}
