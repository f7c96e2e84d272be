/*
 * The relay's exclusive lock: flock() on "<database file>-evbus-relay.lock".
 * flock locks belong to an open file description, so two relays conflict
 * even inside one process, and the kernel releases the lock when the holder
 * dies - a standby takes over immediately after a crash. (A forked child
 * shares its parent's descriptor and therefore its lock: create relays after
 * fork, not before.)
 */
#ifndef EVBUS_PATTERNS_RELAY_LOCK_H
#define EVBUS_PATTERNS_RELAY_LOCK_H

#include <stddef.h>

typedef struct relay_lock {
    int fd;
    char *path;
} relay_lock_t;

/* Opens (creates) the lock file beside db_file. EVBUS_OK or an error. */
int evbus__relay_lock_open(relay_lock_t *l, const char *db_file, char *errstr,
                           size_t n);
/* 1 when the lock is now held, 0 when another holds it, negative on error.
 * Never blocks. */
int evbus__relay_lock_try(relay_lock_t *l);
/* Gives the lock up but keeps the file open. */
void evbus__relay_lock_release(relay_lock_t *l);
/* Releases the lock (when held) and closes the file. */
void evbus__relay_lock_close(relay_lock_t *l);

#endif
