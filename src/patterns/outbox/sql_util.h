/*
 * Small SQLite helpers shared by the outbox, relay and inbox: error mapping,
 * statement preparation, time, logging. Internal (hidden symbols).
 */
#ifndef EVBUS_PATTERNS_SQL_UTIL_H
#define EVBUS_PATTERNS_SQL_UTIL_H

#include <stddef.h>
#include <stdint.h>

#include <sqlite3.h>

/* The outbox table. seq is the rowid: SQLite runs one writer at a time and
 * gives a new row max(seq) + 1, so seq order is commit order. The relay never
 * deletes the row with the highest seq, so seq values are never reused and
 * "seq > the last one settled" stays a safe cursor (the same guarantee as
 * AUTOINCREMENT without its extra page write per transaction). */
#define OB_OUTBOX_DDL                                                          \
    "CREATE TABLE IF NOT EXISTS evbus_outbox("                                 \
    " seq INTEGER PRIMARY KEY,"                                                \
    " topic TEXT NOT NULL,"                                                    \
    " event TEXT NOT NULL,"                                                    \
    " created_at INTEGER NOT NULL,"                                            \
    " failed TEXT)"

/* The relay's progress: every row with seq <= delivered_seq was accepted by
 * the broker (or parked). One row, written once per batch. */
#define OB_RELAY_DDL                                                           \
    "CREATE TABLE IF NOT EXISTS evbus_outbox_relay("                           \
    " id INTEGER PRIMARY KEY CHECK (id = 1),"                                  \
    " delivered_seq INTEGER NOT NULL,"                                         \
    " delivered_at INTEGER NOT NULL);"                                         \
    "INSERT OR IGNORE INTO evbus_outbox_relay VALUES(1, 0, 0)"

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
