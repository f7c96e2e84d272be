/*
 * Small SQLite helpers shared by the outbox, relay and inbox: error mapping,
 * statement preparation, time, logging. Internal (hidden symbols).
 */
#ifndef EVBUS_PATTERNS_SQL_UTIL_H
#define EVBUS_PATTERNS_SQL_UTIL_H

#include <stddef.h>
#include <stdint.h>

#include <sqlite3.h>

/* The outbox table. AUTOINCREMENT: a seq is never reused, even after every
 * row was purged, so "seq > last seen" is a safe cursor for the relay.
 * SQLite serializes writers, so seq order is commit order. */
#define OB_OUTBOX_DDL                                                          \
    "CREATE TABLE IF NOT EXISTS evbus_outbox("                                 \
    " seq INTEGER PRIMARY KEY AUTOINCREMENT,"                                  \
    " topic TEXT NOT NULL,"                                                    \
    " event TEXT NOT NULL,"                                                    \
    " created_at INTEGER NOT NULL,"                                            \
    " delivered_at INTEGER,"                                                   \
    " failed TEXT)"

/* Maps a SQLite result code to an evbus error (BUSY/LOCKED -> EVBUS_EBUSY,
 * NOMEM -> EVBUS_ENOMEM, anything else -> EVBUS_EIO). */
int ob__sqlite_err(int rc);

/* Runs sql (no results). EVBUS_OK or a mapped error with the reason. */
int ob__exec(sqlite3 *db, const char *sql, char *errstr, size_t n);

/* Prepares a long-lived statement. EVBUS_OK or a mapped error. */
int ob__prepare(sqlite3 *db, const char *sql, sqlite3_stmt **st,
                char *errstr, size_t n);

/* Runs a prepared statement that returns no rows, then resets it. */
int ob__step_done(sqlite3_stmt *st);

/* Sets busy_timeout to ms when the connection has none yet. */
void ob__default_busy_timeout(sqlite3 *db, int ms);

/* Wall clock in Unix milliseconds (stored in the tables). */
int64_t ob__wall_ms(void);
/* Monotonic milliseconds (scheduling). */
int64_t ob__mono_ms(void);

/* Topic check matching the core's publish check. */
int ob__topic_ok(const char *topic);

void ob__seterr(char *errstr, size_t n, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Logs through the application's log callback, component "outbox". */
void ob__log(int level, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

#endif
