/*
 * sqlite:// backend - when the database file itself fails.
 *
 * Deleted or replaced: SQLite keeps using the inode it opened, so a bus
 * whose file was deleted (rm bus.db*) or replaced (mv new.db bus.db) would
 * go on publishing and consuming on an orphan, silently split from every
 * process that opens the path afterwards. The watcher compares the path's
 * device and inode with the ones seen at open (every poll_interval_ms, and
 * at once when inotify reports the name deleted or moved); from the first
 * mismatch on, publish, fetch, record_attempts and health answer EVBUS_EIO
 * and one ERROR names the path. There is no way back: reopen the bus.
 *
 * Other failures (disk full, I/O errors) are explained from the SQLite code
 * of the failed call (support/sqlite_err: "disk full ...") with the path.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "sqlite_internal.h"

int evbus__sqlite_file_identify(sq_bus_t *b, char *errstr, size_t n)
{
    struct stat st;
    if (stat(b->real_path, &st) != 0) {
        snprintf(errstr, n, "sqlite: %s: %s", b->real_path, strerror(errno));
        return EVBUS_EIO;
    }
    b->file_dev = st.st_dev;
    b->file_ino = st.st_ino;
    return EVBUS_OK;
}

bool evbus__sqlite_file_check(sq_bus_t *b)
{
    if (atomic_load(&b->gone))
        return true;
    struct stat st;
    if (stat(b->real_path, &st) == 0) {
        if (st.st_dev == b->file_dev && st.st_ino == b->file_ino)
            return false;
        snprintf(b->gone_why, sizeof b->gone_why,
                 "database file %s was replaced by another file (inode "
                 "%llu, was %llu) while open; this bus is cut off from the "
                 "processes that use the new file: reopen it",
                 b->real_path, (unsigned long long)st.st_ino,
                 (unsigned long long)b->file_ino);
    } else if (errno == ENOENT || errno == ENOTDIR) {
        snprintf(b->gone_why, sizeof b->gone_why,
                 "database file %s was deleted while open; this bus is cut "
                 "off from the processes that create or open it again: "
                 "reopen it",
                 b->real_path);
    } else {
        return false; /* cannot tell (EACCES, ...): keep going */
    }
    atomic_store(&b->gone, true);
    evbus_host_log(b->host, EVBUS_LOG_ERROR, "%s", b->gone_why);
    evbus_host_notify(b->host); /* pollers find out now */
    return true;
}

int evbus__sqlite_file_ok(sq_bus_t *b)
{
    return atomic_load(&b->gone) ? EVBUS_EIO : EVBUS_OK;
}

void evbus__sqlite_why(sq_bus_t *b, const sq_conn_t *c, int err, char *buf,
                       size_t n)
{
    if (atomic_load(&b->gone)) {
        snprintf(buf, n, "%s", b->gone_why);
        return;
    }
    /* The SQLite code behind err, when the connection's last failure is
     * the one being reported. */
    int rc = c && c->fail_rc && evbus__sqlite_err(c->fail_rc) == err
                 ? c->fail_rc
                 : 0;
    const char *hint = rc ? evbus__sqlite_hint(rc) : NULL;
    if (rc && !hint)
        hint = sqlite3_errstr(rc);
    if (hint)
        snprintf(buf, n, "%s: %s", b->real_path, hint);
    else
        snprintf(buf, n, "%s: %s", b->real_path, evbus_strerror(err));
}
