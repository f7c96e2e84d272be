/* SQLite result codes as evbus errors, shared by the sqlite:// backend and
 * the outbox/inbox. */
#ifndef EVBUS_SUPPORT_SQLITE_ERR_H
#define EVBUS_SUPPORT_SQLITE_ERR_H

/* Maps a SQLite result code (primary or extended) to an EVBUS_* code:
 * BUSY/LOCKED -> EBUSY, NOMEM -> ENOMEM, TOOBIG -> ETOOBIG, FULL -> EIO
 * (retriable: space may be freed), MISUSE/RANGE/ERROR -> EINTERNAL,
 * everything else -> EIO. */
int evbus__sqlite_err(int rc);

/* A short explanation of what a failed SQLite call means for the caller
 * ("disk full", "database is locked", ...), or NULL when sqlite3_errstr()
 * already says it well. */
const char *evbus__sqlite_hint(int rc);

#endif
