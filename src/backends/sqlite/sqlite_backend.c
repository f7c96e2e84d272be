/*
 * sqlite:// backend - the vtable, URL options, open and close.
 *
 *   sqlite:///abs/path/bus.db[?option=value&...]   (sqlite://rel/path.db is
 *                                                  relative to the cwd)
 * Options (see docs/backends/sqlite.md):
 *   visibility_timeout_ms  lease length before another member gets the
 *                          event (default 30000)
 *   retention_ms           acknowledged events older than this are deleted
 *                          (default 604800000 = 7 days; 0 = at once)
 *   retention_interval_ms  how often the cleanup runs (default 60000)
 *   busy_timeout_ms        longest wait for the write lock before EBUSY
 *                          (default 10000)
 *   poll_interval_ms       data_version safety check besides inotify
 *                          (default 1000)
 *   max_queue              publish_async items waiting before it blocks
 *                          (default 100000)
 *   max_queue_bytes        ... or payload bytes waiting (default 64 MiB)
 *   synchronous            normal (default) | full
 *   attempts               durable (default): each handler call is
 *                          recorded in the file first | memory: the core
 *                          counts in memory (faster; a crash forgets)
 *   max_db_bytes           largest size the database file may grow to;
 *                          beyond it writes fail as "disk full" (default
 *                          0 = no limit)
 */
#include <libgen.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sqlite_internal.h"
#include "support/cond.h"

static int read_opts(const evbus_url_t *url, sq_opts_t *o, char *errstr,
                     size_t n)
{
    struct {
        const char *key;
        long long def, min, max;
        long long *out;
    } ints[] = {
        {"visibility_timeout_ms", 30000, 10, 7LL * 86400 * 1000,
         &o->visibility_timeout_ms},
        {"retention_ms", 7LL * 86400 * 1000, 0, 100LL * 365 * 86400 * 1000,
         &o->retention_ms},
        {"retention_interval_ms", 60000, 10, 86400LL * 1000,
         &o->retention_interval_ms},
        {"busy_timeout_ms", 10000, 0, 3600LL * 1000, &o->busy_timeout_ms},
        {"poll_interval_ms", 1000, 1, 3600LL * 1000, &o->poll_interval_ms},
        {"max_queue", 100000, 1, 100000000, &o->max_queue},
        {"max_queue_bytes", 64LL << 20, 1, 1LL << 40, &o->max_queue_bytes},
        {"max_db_bytes", 0, 0, 1LL << 50, &o->max_db_bytes},
    };
    for (size_t i = 0; i < sizeof ints / sizeof ints[0]; i++) {
        int err = evbus_url_param_int(url, ints[i].key, ints[i].def,
                                      ints[i].min, ints[i].max, ints[i].out,
                                      errstr, n);
        if (err != EVBUS_OK)
            return err;
    }
    const char *sync = evbus_url_param(url, "synchronous");
    if (!sync || strcmp(sync, "normal") == 0 || strcmp(sync, "NORMAL") == 0) {
        o->sync_full = false;
    } else if (strcmp(sync, "full") == 0 || strcmp(sync, "FULL") == 0) {
        o->sync_full = true;
    } else {
        snprintf(errstr, n, "option synchronous=%s: expected normal or full",
                 sync);
        return EVBUS_EOPTION;
    }
    const char *att = evbus_url_param(url, "attempts");
    if (!att || strcmp(att, "durable") == 0) {
        o->attempts_in_memory = false;
    } else if (strcmp(att, "memory") == 0) {
        o->attempts_in_memory = true;
    } else {
        snprintf(errstr, n, "option attempts=%s: expected durable or memory",
                 att);
        return EVBUS_EOPTION;
    }
    return EVBUS_OK;
}

static void release_all(sq_bus_t *b)
{
    evbus__sqlite_watcher_stop(b);
    evbus__sqlite_writer_stop(b);
    evbus__sqlite_conn_close(&b->aux);
    evbus__sqlite_conn_close(&b->sub);
    evbus__sqlite_conn_close(&b->pub);
    pthread_mutex_destroy(&b->pub_mu);
    pthread_mutex_destroy(&b->sub_mu);
    pthread_mutex_destroy(&b->q_mu);
    pthread_cond_destroy(&b->q_cv);
    pthread_cond_destroy(&b->q_idle);
    free(b->path);
    free(b->real_path);
    free(b->dir);
    free(b->wal_name);
    free(b->db_name);
}

/* The directory and -wal file name the watcher looks at. The file exists
 * now; SQLite follows symbolic links and keeps the WAL beside the real
 * file, so resolve them too. */
static int watch_names(sq_bus_t *b, char *errstr, size_t n)
{
    char *real = realpath(b->path, NULL);
    b->real_path = real ? real : strdup(b->path);
    const char *p = b->real_path;
    char *d1 = p ? strdup(p) : NULL, *d2 = p ? strdup(p) : NULL;
    if (d1 && d2) {
        b->dir = strdup(dirname(d1));
        b->db_name = strdup(basename(d2));
        if (!b->db_name || asprintf(&b->wal_name, "%s-wal", b->db_name) < 0)
            b->wal_name = NULL;
    }
    free(d1);
    free(d2);
    if (!b->dir || !b->wal_name || !b->db_name) {
        snprintf(errstr, n, "sqlite: out of memory");
        return EVBUS_ENOMEM;
    }
    return evbus__sqlite_file_identify(b, errstr, n);
}

static int sqlite_be_open(void *priv, evbus_host_t *host,
                          const evbus_url_t *url, char *errstr, size_t n)
{
    sq_bus_t *b = priv;
    b->host = host;
    b->wake_fd = b->ino_fd = b->ino_wd = -1;
    int err = read_opts(url, &b->o, errstr, n);
    if (err != EVBUS_OK)
        return err;
    const char *rest = evbus_url_rest(url);
    const char *path = rest && rest[0] == '/' ? evbus_url_path(url) : rest;
    if (!path || !*path || strcmp(path, "/") == 0) {
        snprintf(errstr, n,
                 "sqlite: no database file in URL (use "
                 "sqlite:///absolute/path/bus.db)");
        return EVBUS_EURL;
    }
    if (strcmp(path, ":memory:") == 0) {
        snprintf(errstr, n,
                 "sqlite: an in-memory database cannot be shared; use a "
                 "file path (or memory://NAME)");
        return EVBUS_EURL;
    }
    pthread_mutex_init(&b->pub_mu, NULL);
    pthread_mutex_init(&b->sub_mu, NULL);
    pthread_mutex_init(&b->q_mu, NULL);
    pthread_cond_init(&b->q_cv, NULL);
    evbus__cond_init(&b->q_idle); /* flush waits with a timeout */
    b->path = strdup(path);
    if (!b->path) {
        snprintf(errstr, n, "sqlite: out of memory");
        release_all(b);
        return EVBUS_ENOMEM;
    }
    err = evbus__sqlite_conn_open(&b->pub, b->path, &b->o, true, errstr, n);
    if (err == EVBUS_OK)
        err =
            evbus__sqlite_conn_open(&b->sub, b->path, &b->o, false, errstr, n);
    if (err == EVBUS_OK)
        err =
            evbus__sqlite_conn_open(&b->aux, b->path, &b->o, false, errstr, n);
    if (err == EVBUS_OK)
        err = watch_names(b, errstr, n);
    if (err == EVBUS_OK)
        err = evbus__sqlite_watcher_start(b, errstr, n);
    if (err != EVBUS_OK) {
        release_all(b);
        return err;
    }
    evbus_host_log(host, EVBUS_LOG_DEBUG,
                   "opened %s (visibility %lld ms, retention %lld ms, "
                   "synchronous=%s)",
                   b->path, b->o.visibility_timeout_ms, b->o.retention_ms,
                   b->o.sync_full ? "full" : "normal");
    return EVBUS_OK;
}

static void sqlite_be_close(void *priv) { release_all(priv); }

static int sqlite_be_health(void *priv, char *errstr, size_t n)
{
    sq_bus_t *b = priv;
    if (evbus__sqlite_file_ok(b) != EVBUS_OK) {
        evbus__sqlite_why(b, NULL, EVBUS_EIO, errstr, n);
        return EVBUS_EIO;
    }
    pthread_mutex_lock(&b->pub_mu);
    sqlite3_stmt *st = evbus__sqlite_stmt(&b->pub, SQ_HEALTH);
    int64_t v = 0;
    int rc =
        st ? evbus__sqlite_step_int(st, 0, &v) : sqlite3_errcode(b->pub.db);
    if (rc != SQLITE_OK)
        snprintf(errstr, n, "sqlite: %s: %s", b->path,
                 sqlite3_errmsg(b->pub.db));
    pthread_mutex_unlock(&b->pub_mu);
    return evbus__sqlite_err(rc);
}

const evbus_backend_t evbus_backend_sqlite = {
    .version = EVBUS_BACKEND_VERSION,
    .scheme = "sqlite",
    .priv_size = sizeof(sq_bus_t),
    .features = EVBUS_FEAT_PERSISTENT | EVBUS_FEAT_ORDERED |
                EVBUS_FEAT_DELAYED_RETRY | EVBUS_FEAT_CROSS_PROCESS |
                EVBUS_FEAT_BYTES_ONLY,
    .open = sqlite_be_open,
    .close = sqlite_be_close,
    .publish = evbus__sqlite_publish,
    .publish_async = evbus__sqlite_publish_async,
    .flush = evbus__sqlite_flush,
    .subscribe = evbus__sqlite_subscribe,
    .unsubscribe = evbus__sqlite_unsubscribe,
    .fetch = evbus__sqlite_fetch,
    .settle = evbus__sqlite_settle,
    .health = sqlite_be_health,
    .record_attempts = evbus__sqlite_record_attempts,
};
