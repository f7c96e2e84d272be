#include <sqlite3.h>

#include "evbus/evbus.h"
#include "support/sqlite_err.h"

int evbus__sqlite_err(int rc)
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
    case SQLITE_TOOBIG:
        return EVBUS_ETOOBIG;
    case SQLITE_MISUSE:
    case SQLITE_RANGE:
    case SQLITE_ERROR:
        return EVBUS_EINTERNAL;
    default: /* IOERR, FULL, CORRUPT, CANTOPEN, READONLY, ... */
        return EVBUS_EIO;
    }
}

const char *evbus__sqlite_hint(int rc)
{
    switch (rc & 0xff) {
    case SQLITE_FULL:
        return "disk full (or the database reached its maximum size)";
    case SQLITE_READONLY:
        return "the database file is read-only";
    case SQLITE_CORRUPT:
    case SQLITE_NOTADB:
        return "the database file is corrupt or not a database";
    case SQLITE_CANTOPEN:
        return "cannot open the database file";
    default:
        return NULL;
    }
}
