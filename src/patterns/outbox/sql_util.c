/* Shared SQLite helpers for the outbox, relay and inbox. */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "core/patterns.h"
#include "evbus/evbus.h"
#include "sql_util.h"

int ob__sqlite_err(int rc)
{
    switch (rc & 0xff) {
    case SQLITE_OK:
    case SQLITE_DONE:
    case SQLITE_ROW:
        return EVBUS_OK;
    case SQLITE_BUSY:
    case SQLITE_LOCKED:
        return EVBUS_EBUSY;
    case SQLITE_NOMEM:
        return EVBUS_ENOMEM;
    default:
        return EVBUS_EIO;
    }
}

void ob__seterr(char *errstr, size_t n, const char *fmt, ...)
{
    if (!errstr || n == 0)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(errstr, n, fmt, ap);
    va_end(ap);
}

void ob__log(int level, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    evbus__vlog(level, "outbox", fmt, ap);
    va_end(ap);
}

int ob__exec(sqlite3 *db, const char *sql, char *errstr, size_t n)
{
    int rc = sqlite3_exec(db, sql, NULL, NULL, NULL);
    if (rc != SQLITE_OK) {
        ob__seterr(errstr, n, "%s", sqlite3_errmsg(db));
        return ob__sqlite_err(rc);
    }
    return EVBUS_OK;
}

int ob__prepare(sqlite3 *db, const char *sql, sqlite3_stmt **st,
                char *errstr, size_t n)
{
    int rc = sqlite3_prepare_v3(db, sql, -1, SQLITE_PREPARE_PERSISTENT, st,
                                NULL);
    if (rc != SQLITE_OK) {
        ob__seterr(errstr, n, "prepare: %s", sqlite3_errmsg(db));
        *st = NULL;
        return ob__sqlite_err(rc);
    }
    return EVBUS_OK;
}

int ob__step_done(sqlite3_stmt *st)
{
    int rc = sqlite3_step(st);
    sqlite3_reset(st);
    return rc == SQLITE_DONE || rc == SQLITE_ROW ? EVBUS_OK
                                                 : ob__sqlite_err(rc);
}

void ob__default_busy_timeout(sqlite3 *db, int ms)
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

int64_t ob__wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int64_t ob__mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int ob__topic_ok(const char *topic)
{
    if (!topic || !*topic || strlen(topic) > 249)
        return 0;
    for (const char *p = topic; *p; p++)
        if ((unsigned char)*p <= ' ' || *p == 0x7f)
            return 0;
    return 1;
}
