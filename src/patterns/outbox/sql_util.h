/*
 * Small SQLite helpers shared by the outbox, relay and inbox: statement
 * preparation and logging (clocks, errors and names come from src/support).
 * Internal (hidden symbols).
 */
#ifndef EVBUS_PATTERNS_SQL_UTIL_H
#define EVBUS_PATTERNS_SQL_UTIL_H

#include <stddef.h>
#include <stdint.h>

#include <sqlite3.h>

#include "support/clock.h"
#include "support/errstr.h"
#include "support/names.h"
#include "support/sqlite_err.h"

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

/* Runs sql (no results). EVBUS_OK or a mapped error with the reason. */
int evbus__sql_exec(sqlite3 *db, const char *sql, char *errstr, size_t n);

/* Prepares a long-lived statement. EVBUS_OK or a mapped error. */
int evbus__sql_prepare(sqlite3 *db, const char *sql, sqlite3_stmt **st,
                       char *errstr, size_t n);

/* Runs a prepared statement that returns no rows, then resets it. */
int evbus__sql_step_done(sqlite3_stmt *st);

/* Sets busy_timeout to ms when the connection has none yet. */
void evbus__sql_default_busy_timeout(sqlite3 *db, int ms);

/* Logs through the application's log callback, component "outbox". */
void evbus__outbox_log(int level, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

#endif
