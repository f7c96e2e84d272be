#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <unistd.h>

#include "evbus/evbus.h"
#include "relay_lock.h"
#include "sql_util.h"

int evbus__relay_lock_open(relay_lock_t *l, const char *db_file, char *errstr,
                           size_t n)
{
    l->fd = -1;
    l->path = NULL;
    if (!db_file || !*db_file) {
        evbus__seterr(errstr, n,
                      "relay: the database has no file name (in-memory or "
                      "temporary databases cannot be shared with a relay)");
        return EVBUS_EINVAL;
    }
    size_t len = strlen(db_file) + sizeof "-evbus-relay.lock";
    if (!(l->path = malloc(len))) {
        evbus__seterr(errstr, n, "out of memory");
        return EVBUS_ENOMEM;
    }
    snprintf(l->path, len, "%s-evbus-relay.lock", db_file);
    l->fd = open(l->path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (l->fd < 0) {
        evbus__seterr(errstr, n, "relay: cannot open lock file %s: %s", l->path,
                      strerror(errno));
        free(l->path);
        l->path = NULL;
        return EVBUS_EIO;
    }
    return EVBUS_OK;
}

int evbus__relay_lock_try(relay_lock_t *l)
{
    if (flock(l->fd, LOCK_EX | LOCK_NB) == 0)
        return 1;
    if (errno == EWOULDBLOCK || errno == EINTR)
        return 0;
    return EVBUS_EIO;
}

void evbus__relay_lock_release(relay_lock_t *l) { flock(l->fd, LOCK_UN); }

void evbus__relay_lock_close(relay_lock_t *l)
{
    if (l->fd >= 0)
        close(l->fd); /* closing the last descriptor releases the flock */
    l->fd = -1;
    free(l->path);
    l->path = NULL;
}
