/*
 * sqlite:// backend - the watcher thread, one per open bus. It sleeps in
 * poll() and wakes for:
 *   - inotify: the database's -wal file was written (a commit by any
 *     process) while this bus has subscriptions -> evbus_host_notify;
 *   - a lease expiry or retry delay turning due (set by fetch);
 *   - buffered settles that no fetch wrote within 100 ms;
 *   - renewing the leases of fetched, unsettled events every third of the
 *     visibility timeout while the poller makes progress;
 *   - a PRAGMA data_version check every poll_interval_ms, in case inotify
 *     misses something (network file systems) or is unavailable (then the
 *     check runs every 10 ms);
 *   - retention: deleting acknowledged events older than retention_ms;
 *   - checking that the path still names the file it opened, every
 *     poll_interval_ms and when inotify sees the name deleted or moved
 *     (sqlite_file.c).
 * An idle bus therefore costs one wakeup per poll_interval_ms.
 */
#include <errno.h>
#include <limits.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/inotify.h>
#include <time.h>
#include <unistd.h>

#include "sqlite_internal.h"

#define FALLBACK_POLL_MS 10
#define RETENTION_CHUNK 5000
/* WAL pages after which sub's commits ask for a checkpoint (SQLite's own
 * automatic checkpoint threshold). */
#define CKPT_PAGES 1000
/* While other connections keep the WAL from starting over, it stays over
 * CKPT_PAGES: ask again only once it grew this many pages more. */
#define CKPT_AGAIN_PAGES 100

void evbus__sqlite_watcher_poke(sq_bus_t *b)
{
    if (b->wake_fd >= 0) {
        uint64_t one = 1;
        ssize_t r = write(b->wake_fd, &one, sizeof one);
        (void)r;
    }
}

void evbus__sqlite_watch_due(sq_bus_t *b, int64_t due_ms)
{
    int64_t cur = atomic_load(&b->next_due_ms);
    while (due_ms < cur) {
        if (atomic_compare_exchange_weak(&b->next_due_ms, &cur, due_ms)) {
            evbus__sqlite_watcher_poke(b);
            return;
        }
    }
}

/* Deletes up to RETENTION_CHUNK old acknowledged events of one topic in one
 * transaction. Returns rows deleted (0 = done with this topic) or < 0. */
static long retention_chunk(sq_bus_t *b, sq_conn_t *c, int64_t topic_id,
                            int64_t cutoff)
{
    int err = evbus__sqlite_begin(c);
    if (err != EVBUS_OK)
        return err;
    int64_t lim = INT64_MAX, maxseq = 0, last_old = 0;
    sqlite3_stmt *st = evbus__sqlite_stmt(c, SQ_RET_LIMIT);
    int rc = st ? SQLITE_OK : sqlite3_errcode(c->db);
    if (rc == SQLITE_OK) {
        sqlite3_bind_int64(st, 1, topic_id);
        rc = evbus__sqlite_step_int(st, INT64_MAX, &lim);
    }
    if (rc == SQLITE_OK && !(st = evbus__sqlite_stmt(c, SQ_RET_MAXSEQ)))
        rc = sqlite3_errcode(c->db);
    if (rc == SQLITE_OK)
        rc = evbus__sqlite_step_int(st, 0, &maxseq);
    /* Never the newest row of the table: seqs must keep growing. */
    if (lim > maxseq)
        lim = maxseq;
    long scanned = 0;
    if (rc == SQLITE_OK && !(st = evbus__sqlite_stmt(c, SQ_RET_SCAN)))
        rc = sqlite3_errcode(c->db);
    if (rc == SQLITE_OK) {
        sqlite3_bind_int64(st, 1, topic_id);
        sqlite3_bind_int64(st, 2, lim);
        sqlite3_bind_int64(st, 3, RETENTION_CHUNK);
        while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
            scanned++;
            if (sqlite3_column_int64(st, 1) >= cutoff)
                break; /* younger than the limit: keep it and the rest */
            last_old = sqlite3_column_int64(st, 0);
        }
        sqlite3_reset(st);
        rc = rc == SQLITE_ROW || rc == SQLITE_DONE ? SQLITE_OK : rc;
    }
    long deleted = 0;
    if (rc == SQLITE_OK && last_old > 0) {
        if (!(st = evbus__sqlite_stmt(c, SQ_RET_DEL))) {
            rc = sqlite3_errcode(c->db);
        } else {
            sqlite3_bind_int64(st, 1, topic_id);
            sqlite3_bind_int64(st, 2, last_old);
            rc = sqlite3_step(st);
            sqlite3_reset(st);
            rc = rc == SQLITE_DONE ? SQLITE_OK : rc;
            deleted = sqlite3_changes(c->db);
        }
    }
    if (rc != SQLITE_OK) {
        evbus__sqlite_rollback(c);
        return evbus__sqlite_err(rc);
    }
    err = evbus__sqlite_commit(c);
    if (err != EVBUS_OK)
        return err;
    (void)b;
    return deleted;
}

long evbus__sqlite_retention_run(sq_bus_t *b, sq_conn_t *c)
{
    int64_t cutoff = evbus__wall_ms() - b->o.retention_ms;
    /* Topic ids first, so no statement is open while we write. */
    int64_t *ids = NULL;
    size_t n = 0, cap = 0;
    sqlite3_stmt *st = evbus__sqlite_stmt(c, SQ_RET_TOPICS);
    if (!st)
        return evbus__sqlite_err(sqlite3_errcode(c->db));
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        if (n == cap) {
            cap = cap ? cap * 2 : 16;
            int64_t *x = realloc(ids, cap * sizeof *x);
            if (!x)
                break;
            ids = x;
        }
        ids[n++] = sqlite3_column_int64(st, 0);
    }
    sqlite3_reset(st);
    long total = 0;
    for (size_t i = 0; i < n && !atomic_load(&b->stop); i++) {
        long got;
        while ((got = retention_chunk(b, c, ids[i], cutoff)) > 0 &&
               !atomic_load(&b->stop))
            total += got;
        if (got < 0) {
            evbus_host_log(b->host, EVBUS_LOG_WARN,
                           "retention cleanup failed: %s; trying later",
                           evbus_strerror((int)got));
            break;
        }
    }
    free(ids);
    if (total > 0)
        evbus_host_log(b->host, EVBUS_LOG_DEBUG,
                       "retention deleted %ld acknowledged events", total);
    return total;
}

/* Watches the directory (the -wal file comes and goes) while there are
 * subscriptions; stops watching when there are none, so publishers are not
 * woken by their own commits. */
static void manage_watch(sq_bus_t *b)
{
    bool want = atomic_load(&b->nsubs) > 0;
    if (b->ino_fd < 0)
        return;
    if (want && b->ino_wd < 0) {
        b->ino_wd = inotify_add_watch(b->ino_fd, b->dir,
                                      IN_MODIFY | IN_CREATE | IN_MOVED_TO |
                                          IN_DELETE | IN_MOVED_FROM);
        if (b->ino_wd < 0)
            evbus_host_log(b->host, EVBUS_LOG_WARN,
                           "inotify on %s failed (%s); checking for new "
                           "events every %d ms instead",
                           b->dir, strerror(errno), FALLBACK_POLL_MS);
    } else if (!want && b->ino_wd >= 0) {
        inotify_rm_watch(b->ino_fd, b->ino_wd);
        b->ino_wd = -1;
    }
}

/* Reads all pending inotify events; true when the -wal file changed.
 * *file_moved: the database file's name was deleted, moved or created. */
static bool drain_inotify(sq_bus_t *b, bool *file_moved)
{
    char buf[4096] __attribute__((aligned(__alignof__(struct inotify_event))));
    bool hit = false;
    for (;;) {
        ssize_t len = read(b->ino_fd, buf, sizeof buf);
        if (len <= 0)
            break;
        for (char *p = buf; p < buf + len;) {
            struct inotify_event *e = (struct inotify_event *)p;
            if (e->len && strcmp(e->name, b->wal_name) == 0)
                hit = true;
            if (e->len && strcmp(e->name, b->db_name) == 0)
                *file_moved = true;
            if (e->mask & IN_Q_OVERFLOW)
                hit = *file_moved = true;
            p += sizeof *e + e->len;
        }
    }
    return hit;
}

static int64_t min64(int64_t a, int64_t b) { return a < b ? a : b; }

/* The WAL hook of the sub connection, in place of SQLite's automatic
 * checkpoint: that one runs inside the commit that crosses the threshold,
 * fsync included, so a record_attempts before handler calls would stall
 * every worker for milliseconds. The watcher checkpoints instead.
 * pages counts every frame in the WAL, checkpointed or not, until a writer
 * starts it over, which readers of other connections can put off: asking
 * on every commit past the threshold then ran a checkpoint with almost
 * nothing to copy twice per saga (a tenth of the instructions of the saga
 * bench). So a request waits for CKPT_AGAIN_PAGES new pages. */
static int sub_wal_hook(void *arg, sqlite3 *db, const char *name, int pages)
{
    (void)db;
    (void)name;
    sq_bus_t *b = arg;
    if (pages < CKPT_PAGES)
        return SQLITE_OK;
    int mark = atomic_load(&b->ckpt_mark);
    if (pages >= mark && pages < mark + CKPT_AGAIN_PAGES)
        return SQLITE_OK;
    atomic_store(&b->ckpt_mark, pages);
    if (!atomic_exchange(&b->ckpt_due, true))
        evbus__sqlite_watcher_poke(b);
    return SQLITE_OK;
}

static void *watcher_main(void *arg)
{
    sq_bus_t *b = arg;
    int64_t mono = (int64_t)evbus__mono_ms();
    int64_t next_ret = mono + min64(b->o.retention_interval_ms, 5000);
    int64_t next_dv = mono;
    int64_t renew_every =
        b->o.visibility_timeout_ms / 3 > 0 ? b->o.visibility_timeout_ms / 3 : 1;
    int64_t next_renew = mono + renew_every;
    /* The file identity check runs with or without subscriptions: a
     * publisher must learn too that its file is gone. */
    int64_t next_file = mono + b->o.poll_interval_ms;
    int64_t last_dv = evbus__sqlite_data_version(&b->aux);
    while (!atomic_load(&b->stop)) {
        manage_watch(b);
        bool watching = b->ino_wd >= 0;
        bool subs = atomic_load(&b->nsubs) > 0;
        int64_t dv_every = watching
                               ? b->o.poll_interval_ms
                               : min64(b->o.poll_interval_ms, FALLBACK_POLL_MS);
        mono = (int64_t)evbus__mono_ms();
        int64_t wake = min64(next_ret, next_file);
        if (subs) {
            wake = min64(wake, next_dv);
            wake = min64(wake, next_renew);
        }
        wake = min64(wake, atomic_load(&b->ops_due_ms));
        int64_t due = atomic_load(&b->next_due_ms);
        if (due != INT64_MAX) {
            int64_t in = due - evbus__wall_ms();
            wake = min64(wake, mono + (in > 0 ? in : 0));
        }
        int64_t timeout = wake - mono;
        if (timeout < 0)
            timeout = 0;
        if (timeout > INT_MAX)
            timeout = INT_MAX;
        struct pollfd pfd[2] = {{b->wake_fd, POLLIN, 0},
                                {watching ? b->ino_fd : -1, POLLIN, 0}};
        poll(pfd, 2, (int)timeout);
        if (atomic_load(&b->stop))
            break;
        if (pfd[0].revents & POLLIN) {
            uint64_t v;
            ssize_t r = read(b->wake_fd, &v, sizeof v);
            (void)r;
        }
        if (atomic_exchange(&b->ckpt_due, false))
            sqlite3_wal_checkpoint_v2(b->aux.db, NULL,
                                      SQLITE_CHECKPOINT_PASSIVE, NULL, NULL);
        bool moved = false;
        if ((pfd[1].revents & POLLIN) && drain_inotify(b, &moved)) {
            evbus_host_notify(b->host);
            /* Coalesce: a busy writer modifies the file thousands of times
             * a second; one wakeup per millisecond is plenty. */
            struct timespec ts = {0, 1000000};
            nanosleep(&ts, NULL);
        }
        mono = (int64_t)evbus__mono_ms();
        if (moved || mono >= next_file) {
            evbus__sqlite_file_check(b);
            next_file = mono + b->o.poll_interval_ms;
        }
        due = atomic_load(&b->next_due_ms);
        if (due != INT64_MAX && evbus__wall_ms() >= due &&
            atomic_compare_exchange_strong(&b->next_due_ms, &due, INT64_MAX))
            evbus_host_notify(b->host);
        mono = (int64_t)evbus__mono_ms();
        if (mono >= atomic_load(&b->ops_due_ms)) {
            pthread_mutex_lock(&b->sub_mu);
            evbus__sqlite_flush_ops_locked(b);
            evbus__sqlite_sub_unlock(b);
        }
        if (subs && mono >= next_dv) {
            int64_t dv = evbus__sqlite_data_version(&b->aux);
            if (dv != last_dv)
                evbus_host_notify(b->host);
            last_dv = dv;
            next_dv = mono + dv_every;
        }
        if (subs && mono >= next_renew) {
            /* Only for a poller that is alive: a fetch or settle lately. */
            if (mono - atomic_load(&b->progress_ms) <
                b->o.visibility_timeout_ms) {
                pthread_mutex_lock(&b->sub_mu);
                evbus__sqlite_extend_leases_locked(b);
                evbus__sqlite_sub_unlock(b);
            }
            next_renew = (int64_t)evbus__mono_ms() + renew_every;
        }
        if (mono >= next_ret) {
            evbus__sqlite_retention_run(b, &b->aux);
            next_ret = (int64_t)evbus__mono_ms() + b->o.retention_interval_ms;
        }
    }
    return NULL;
}

int evbus__sqlite_watcher_start(sq_bus_t *b, char *errstr, size_t n)
{
    b->wake_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (b->wake_fd < 0) {
        snprintf(errstr, n, "sqlite: eventfd: %s", strerror(errno));
        return EVBUS_EIO;
    }
    b->ino_wd = -1;
    b->ino_fd = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
    if (b->ino_fd < 0)
        evbus_host_log(b->host, EVBUS_LOG_WARN,
                       "inotify unavailable (%s); checking for new events "
                       "every %d ms instead",
                       strerror(errno), FALLBACK_POLL_MS);
    atomic_store(&b->next_due_ms, INT64_MAX);
    atomic_store(&b->ops_due_ms, INT64_MAX);
    sqlite3_wal_hook(b->sub.db, sub_wal_hook, b);
    if (pthread_create(&b->watcher, NULL, watcher_main, b) != 0) {
        sqlite3_wal_autocheckpoint(b->sub.db, CKPT_PAGES);
        snprintf(errstr, n, "sqlite: cannot start the watcher thread");
        close(b->wake_fd);
        b->wake_fd = -1;
        if (b->ino_fd >= 0)
            close(b->ino_fd);
        b->ino_fd = -1;
        return EVBUS_ENOMEM;
    }
    b->watcher_started = true;
    return EVBUS_OK;
}

void evbus__sqlite_watcher_stop(sq_bus_t *b)
{
    if (b->watcher_started) {
        atomic_store(&b->stop, true);
        evbus__sqlite_watcher_poke(b);
        pthread_join(b->watcher, NULL);
        b->watcher_started = false;
    }
    if (b->wake_fd >= 0)
        close(b->wake_fd);
    if (b->ino_fd >= 0)
        close(b->ino_fd);
    b->wake_fd = b->ino_fd = -1;
}
