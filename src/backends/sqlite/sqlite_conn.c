/*
 * sqlite:// backend - one SQLite connection: opening with clear errors, the
 * PRAGMAs, the schema, reusable prepared statements, a busy handler that
 * waits with short jittered sleeps (instead of SQLite's default 1..100 ms
 * steps, which starve writers under contention), BEGIN IMMEDIATE/COMMIT
 * with bounded retries, and the topic id cache.
 */
#include <errno.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "sqlite_internal.h"

static const char *const stmt_sql[SQ_NSTMT] = {
    [SQ_BEGIN] = "BEGIN IMMEDIATE",
    [SQ_COMMIT] = "COMMIT",
    [SQ_ROLLBACK] = "ROLLBACK",
    [SQ_TOPIC_INS] = "INSERT OR IGNORE INTO evbus_topics(name) VALUES(?1)",
    [SQ_TOPIC_GET] = "SELECT id FROM evbus_topics WHERE name=?1",
    [SQ_EV_INS] = "INSERT INTO evbus_events(topic_id, created_ms, payload) "
                  "VALUES(?1, ?2, ?3)",
    [SQ_GROUP_INS] = "INSERT OR IGNORE INTO evbus_groups(topic_id, name, "
                     "cursor) VALUES(?1, ?2, 0)",
    [SQ_GROUP_GET] = "SELECT id FROM evbus_groups WHERE topic_id=?1 AND "
                     "name=?2",
    /* Leases that expired, retries that are due and released events. */
    [SQ_DUE_SEL] = "SELECT p.seq, p.deliveries, e.payload, p.attempts, "
                   "p.prev_delay_ms, p.first_attempt_ms FROM evbus_pending p "
                   "LEFT JOIN evbus_events e ON e.seq=p.seq "
                   "WHERE p.gid=?1 AND p.visible_at<=?2 ORDER BY p.seq "
                   "LIMIT ?3",
    [SQ_LEASE_UPD] = "UPDATE evbus_pending SET visible_at=?3, owner=?4, "
                     "deliveries=deliveries+1 WHERE gid=?1 AND seq=?2",
    [SQ_PEND_DEL] = "DELETE FROM evbus_pending WHERE gid=?1 AND seq=?2",
    [SQ_CURSOR_GET] = "SELECT cursor FROM evbus_groups WHERE id=?1",
    [SQ_NEW_SEL] = "SELECT seq, payload FROM evbus_events WHERE topic_id=?1 "
                   "AND seq>?2 ORDER BY seq LIMIT ?3",
    [SQ_PEND_INS] = "INSERT OR REPLACE INTO evbus_pending(gid, seq, "
                    "visible_at, deliveries, owner) VALUES(?1, ?2, ?3, 1, ?4)",
    [SQ_CURSOR_SET] = "UPDATE evbus_groups SET cursor=?2 WHERE id=?1 AND "
                      "cursor<?2",
    /* Only the holder of the current lease may give it back. */
    [SQ_RETRY_UPD] = "UPDATE evbus_pending SET visible_at=?3, owner=0, "
                     "prev_delay_ms=?6 WHERE gid=?1 AND seq=?2 AND owner=?4 "
                     "AND deliveries=?5",
    /* Attempts stay what was recorded: a release is no handler call. */
    [SQ_RELEASE_UPD] = "UPDATE evbus_pending SET visible_at=?3, owner=0 "
                       "WHERE gid=?1 AND seq=?2 AND owner=?4 AND "
                       "deliveries=?5",
    [SQ_EXTEND_UPD] = "UPDATE evbus_pending SET visible_at=?3 WHERE gid=?1 "
                      "AND seq=?2 AND owner=?4 AND deliveries=?5",
    [SQ_ATTEMPT_UPD] = "UPDATE evbus_pending SET attempts=?3, "
                       "prev_delay_ms=?4, first_attempt_ms=?5 WHERE gid=?1 "
                       "AND seq=?2 AND owner=?6 AND deliveries=?7",
    [SQ_READY] = "SELECT EXISTS(SELECT 1 FROM evbus_pending WHERE gid=?1 AND "
                 "visible_at<=?2) OR EXISTS(SELECT 1 FROM evbus_events WHERE "
                 "topic_id=?3 AND seq>(SELECT cursor FROM evbus_groups WHERE "
                 "id=?1))",
    [SQ_NEXT_DUE] = "SELECT MIN(visible_at) FROM evbus_pending WHERE gid=?1 "
                    "AND visible_at>?2",
    [SQ_DATA_VERSION] = "PRAGMA data_version",
    [SQ_RET_TOPICS] = "SELECT id FROM evbus_topics",
    /* Lowest seq some group of the topic still needs: its cursor + 1 or
     * its lowest unacknowledged event. NULL when the topic has no group. */
    [SQ_RET_LIMIT] = "SELECT MIN(min(g.cursor + 1, COALESCE((SELECT MIN(p.seq) "
                     "FROM evbus_pending p WHERE p.gid=g.id), g.cursor + 1))) "
                     "FROM evbus_groups g WHERE g.topic_id=?1",
    [SQ_RET_MAXSEQ] = "SELECT MAX(seq) FROM evbus_events",
    [SQ_RET_SCAN] = "SELECT seq, created_ms FROM evbus_events WHERE "
                    "topic_id=?1 AND seq<?2 ORDER BY seq LIMIT ?3",
    [SQ_RET_DEL] = "DELETE FROM evbus_events WHERE topic_id=?1 AND seq<=?2",
    [SQ_HEALTH] = "SELECT count(*) FROM evbus_topics",
};

/* Sleeps 20 us doubling to 2 ms with jitter until the busy timeout passed:
 * short enough that a writer gets the lock soon after it is free, random so
 * waiting processes do not wake in lockstep. */
static int busy_handler(void *arg, int count)
{
    static _Thread_local uint32_t seed;
    sq_conn_t *c = arg;
    uint64_t now = evbus__mono_ms();
    if (count == 0)
        c->busy_since_ms = now;
    if ((long long)(now - c->busy_since_ms) >= c->busy_timeout_ms)
        return 0;
    if (!seed)
        seed = (uint32_t)now ^ (uint32_t)(uintptr_t)&count ^ 0x9e3779b9u;
    seed ^= seed << 13;
    seed ^= seed >> 17;
    seed ^= seed << 5;
    unsigned cap = 20u << (count < 7 ? count : 7);
    if (cap > 2000)
        cap = 2000;
    unsigned us = cap / 2 + seed % (cap / 2 + 1);
    struct timespec ts = {0, (long)us * 1000L};
    nanosleep(&ts, NULL);
    return 1;
}

sqlite3_stmt *evbus__sqlite_stmt(sq_conn_t *c, sq_stmt_id_t id)
{
    if (!c->st[id] &&
        sqlite3_prepare_v3(c->db, stmt_sql[id], -1, SQLITE_PREPARE_PERSISTENT,
                           &c->st[id], NULL) != SQLITE_OK)
        return NULL;
    return c->st[id];
}

/* Runs a statement that returns no rows; resets it. */
static int step_done(sq_conn_t *c, sq_stmt_id_t id)
{
    sqlite3_stmt *st = evbus__sqlite_stmt(c, id);
    if (!st)
        return sqlite3_errcode(c->db);
    int rc = sqlite3_step(st);
    sqlite3_reset(st);
    return rc == SQLITE_DONE || rc == SQLITE_ROW ? SQLITE_OK : rc;
}

int evbus__sqlite_begin(sq_conn_t *c)
{
    uint64_t t0 = evbus__mono_ms();
    for (;;) {
        int rc = step_done(c, SQ_BEGIN);
        if (rc == SQLITE_OK)
            return EVBUS_OK;
        /* The busy handler is skipped in a few cases (WAL recovery by
         * another process); keep trying until our own deadline. */
        if ((rc & 0xff) != SQLITE_BUSY && (rc & 0xff) != SQLITE_LOCKED)
            return evbus__sqlite_fail(c, rc);
        if ((long long)(evbus__mono_ms() - t0) >= c->busy_timeout_ms)
            return EVBUS_EBUSY;
        struct timespec ts = {0, 200000};
        nanosleep(&ts, NULL);
    }
}

void evbus__sqlite_rollback(sq_conn_t *c)
{
    if (!sqlite3_get_autocommit(c->db))
        step_done(c, SQ_ROLLBACK);
}

int evbus__sqlite_commit(sq_conn_t *c)
{
    uint64_t t0 = evbus__mono_ms();
    for (;;) {
        int rc = step_done(c, SQ_COMMIT);
        if (rc == SQLITE_OK)
            return EVBUS_OK;
        /* A COMMIT that failed with BUSY leaves the transaction open and
         * may simply be tried again. */
        if (((rc & 0xff) != SQLITE_BUSY) ||
            (long long)(evbus__mono_ms() - t0) >= c->busy_timeout_ms) {
            evbus__sqlite_rollback(c);
            return evbus__sqlite_fail(c, rc);
        }
        struct timespec ts = {0, 200000};
        nanosleep(&ts, NULL);
    }
}

int evbus__sqlite_step_int(sqlite3_stmt *st, int64_t def, int64_t *out)
{
    int rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        *out = sqlite3_column_type(st, 0) == SQLITE_NULL
                   ? def
                   : sqlite3_column_int64(st, 0);
        rc = SQLITE_OK;
    } else if (rc == SQLITE_DONE) {
        *out = def;
        rc = SQLITE_OK;
    }
    sqlite3_reset(st);
    return rc;
}

int64_t evbus__sqlite_data_version(sq_conn_t *c)
{
    sqlite3_stmt *st = evbus__sqlite_stmt(c, SQ_DATA_VERSION);
    int64_t v = -1;
    if (st && evbus__sqlite_step_int(st, -1, &v) != SQLITE_OK)
        v = -1;
    return v;
}

static int topic_lookup(sq_conn_t *c, const char *topic, int64_t *id)
{
    sqlite3_stmt *st = evbus__sqlite_stmt(c, SQ_TOPIC_GET);
    if (!st)
        return sqlite3_errcode(c->db);
    sqlite3_bind_text(st, 1, topic, -1, SQLITE_STATIC);
    int rc = evbus__sqlite_step_int(st, 0, id);
    sqlite3_clear_bindings(st);
    return rc;
}

int evbus__sqlite_topic_id(sq_conn_t *c, const char *topic, int64_t *id)
{
    for (size_t i = 0; i < c->ntopics; i++)
        if (strcmp(c->topics[i].name, topic) == 0) {
            *id = c->topics[i].id;
            return EVBUS_OK;
        }
    /* Most topics exist already: try a plain read before taking the
     * write lock. */
    int rc = topic_lookup(c, topic, id);
    if (rc != SQLITE_OK)
        return evbus__sqlite_fail(c, rc);
    if (*id == 0) {
        int err = evbus__sqlite_begin(c);
        if (err != EVBUS_OK)
            return err;
        sqlite3_stmt *st = evbus__sqlite_stmt(c, SQ_TOPIC_INS);
        rc = st ? SQLITE_OK : sqlite3_errcode(c->db);
        if (st) {
            sqlite3_bind_text(st, 1, topic, -1, SQLITE_STATIC);
            rc = sqlite3_step(st);
            sqlite3_reset(st);
            sqlite3_clear_bindings(st);
            rc = rc == SQLITE_DONE ? topic_lookup(c, topic, id) : rc;
        }
        if (rc != SQLITE_OK) {
            evbus__sqlite_rollback(c);
            return evbus__sqlite_fail(c, rc);
        }
        if ((err = evbus__sqlite_commit(c)) != EVBUS_OK)
            return err;
        if (*id == 0)
            return EVBUS_EINTERNAL;
    }
    if (c->ntopics == c->cap_topics) {
        size_t cap = c->cap_topics ? c->cap_topics * 2 : 16;
        sq_topic_ent_t *t = realloc(c->topics, cap * sizeof *t);
        if (!t)
            return EVBUS_OK; /* correct, just not cached */
        c->topics = t;
        c->cap_topics = cap;
    }
    char *name = strdup(topic);
    if (name)
        c->topics[c->ntopics++] = (sq_topic_ent_t){name, *id};
    return EVBUS_OK;
}

/* Checks what can be checked before SQLite, so the usual mistakes get a
 * plain message instead of "unable to open database file". */
static int check_path(const char *path, char *errstr, size_t n)
{
    char *copy = strdup(path);
    if (!copy)
        return EVBUS_ENOMEM;
    const char *dir = dirname(copy);
    struct stat st;
    int err = EVBUS_OK;
    if (stat(dir, &st) != 0 || !S_ISDIR(st.st_mode)) {
        snprintf(errstr, n, "sqlite: directory %s does not exist", dir);
        err = EVBUS_EIO;
    } else if (stat(path, &st) == 0) {
        if (S_ISDIR(st.st_mode)) {
            snprintf(errstr, n, "sqlite: %s is a directory", path);
            err = EVBUS_EIO;
        } else if (access(path, R_OK | W_OK) != 0) {
            snprintf(errstr, n, "sqlite: %s is read-only or unreadable (%s)",
                     path, strerror(errno));
            err = EVBUS_EIO;
        } else if (access(dir, W_OK | X_OK) != 0) {
            /* WAL mode creates path-wal and path-shm beside the file. */
            snprintf(errstr, n,
                     "sqlite: directory %s is read-only (WAL mode needs to "
                     "create %s-wal there)",
                     dir, path);
            err = EVBUS_EIO;
        }
    } else if (errno != ENOENT) {
        snprintf(errstr, n, "sqlite: cannot access %s: %s", path,
                 strerror(errno));
        err = EVBUS_EIO;
    } else if (access(dir, W_OK | X_OK) != 0) {
        snprintf(errstr, n,
                 "sqlite: cannot create %s: directory %s is read-only", path,
                 dir);
        err = EVBUS_EIO;
    }
    free(copy);
    return err;
}

int evbus__sqlite_fail(sq_conn_t *c, int rc)
{
    if ((rc & 0xff) != SQLITE_OK && (rc & 0xff) != SQLITE_ROW &&
        (rc & 0xff) != SQLITE_DONE)
        c->fail_rc = rc;
    return evbus__sqlite_err(rc);
}

int evbus__sqlite_exec_retry(sq_conn_t *c, const char *path, const char *sql,
                             char *errstr, size_t n, const char *what)
{
    uint64_t t0 = evbus__mono_ms();
    for (;;) {
        char *msg = NULL;
        int rc = sqlite3_exec(c->db, sql, NULL, NULL, &msg);
        if (rc == SQLITE_OK)
            return EVBUS_OK;
        bool busy = (rc & 0xff) == SQLITE_BUSY || (rc & 0xff) == SQLITE_LOCKED;
        if (!busy || (long long)(evbus__mono_ms() - t0) >= c->busy_timeout_ms) {
            if ((rc & 0xff) == SQLITE_NOTADB)
                snprintf(errstr, n, "sqlite: %s is not a SQLite database",
                         path);
            else if ((rc & 0xff) == SQLITE_READONLY)
                snprintf(errstr, n, "sqlite: %s is read-only (%s)", path, what);
            else
                snprintf(errstr, n, "sqlite: %s: %s failed: %s", path, what,
                         msg ? msg : sqlite3_errstr(rc));
            sqlite3_free(msg);
            evbus__sqlite_rollback(c);
            return evbus__sqlite_fail(c, rc);
        }
        sqlite3_free(msg);
        struct timespec ts = {0, 1000000};
        nanosleep(&ts, NULL);
    }
}

/* max_db_bytes: SQLite answers SQLITE_FULL ("disk full") for a write that
 * would grow the file beyond it, as for a full file system. The limit is
 * per connection; it never shrinks a larger file. */
static int limit_size(sq_conn_t *c, const char *path, long long bytes,
                      char *errstr, size_t n)
{
    sqlite3_stmt *st = NULL;
    long long page = 4096;
    if (sqlite3_prepare_v2(c->db, "PRAGMA page_size", -1, &st, NULL) ==
            SQLITE_OK &&
        sqlite3_step(st) == SQLITE_ROW)
        page = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    if (page <= 0)
        page = 4096;
    char sql[64];
    snprintf(sql, sizeof sql, "PRAGMA max_page_count=%lld",
             (bytes + page - 1) / page);
    return evbus__sqlite_exec_retry(c, path, sql, errstr, n,
                                    "setting max_db_bytes");
}

int evbus__sqlite_conn_open(sq_conn_t *c, const char *path, const sq_opts_t *o,
                            bool create, char *errstr, size_t n)
{
    memset(c, 0, sizeof *c);
    c->busy_timeout_ms = o->busy_timeout_ms;
    int err = check_path(path, errstr, n);
    if (err != EVBUS_OK)
        return err;
    int rc = sqlite3_open_v2(
        path, &c->db,
        SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, NULL);
    if (rc != SQLITE_OK) {
        snprintf(errstr, n, "sqlite: cannot open %s: %s", path,
                 c->db ? sqlite3_errmsg(c->db) : sqlite3_errstr(rc));
        evbus__sqlite_conn_close(c);
        return evbus__sqlite_err(rc);
    }
    sqlite3_extended_result_codes(c->db, 1);
    sqlite3_busy_handler(c->db, busy_handler, c);
    if (sqlite3_db_readonly(c->db, "main") == 1) {
        snprintf(errstr, n, "sqlite: %s can only be opened read-only", path);
        evbus__sqlite_conn_close(c);
        return EVBUS_EIO;
    }
    char pragmas[256];
    snprintf(pragmas, sizeof pragmas,
             "PRAGMA journal_mode=WAL; PRAGMA synchronous=%s;"
             "PRAGMA temp_store=MEMORY; PRAGMA cache_size=-8192;",
             o->sync_full ? "FULL" : "NORMAL");
    if ((err = evbus__sqlite_exec_retry(c, path, pragmas, errstr, n,
                                        "setting WAL mode")) != EVBUS_OK) {
        evbus__sqlite_conn_close(c);
        return err;
    }
    /* journal_mode=WAL quietly stays "delete" on file systems without
     * shared memory support; cross-process waits would then misbehave. */
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(c->db, "PRAGMA journal_mode", -1, &st, NULL) ==
            SQLITE_OK &&
        sqlite3_step(st) == SQLITE_ROW) {
        const char *mode = (const char *)sqlite3_column_text(st, 0);
        if (!mode || strcmp(mode, "wal") != 0) {
            snprintf(errstr, n, "sqlite: %s cannot use WAL mode (mode %s)",
                     path, mode ? mode : "?");
            err = EVBUS_EIO;
        }
    }
    sqlite3_finalize(st);
    if (err == EVBUS_OK)
        err = evbus__sqlite_schema_ensure(c, path, create, errstr, n);
    if (err == EVBUS_OK && o->max_db_bytes > 0)
        err = limit_size(c, path, o->max_db_bytes, errstr, n);
    if (err != EVBUS_OK) {
        evbus__sqlite_conn_close(c);
        return err;
    }
    return EVBUS_OK;
}

void evbus__sqlite_conn_close(sq_conn_t *c)
{
    for (int i = 0; i < SQ_NSTMT; i++)
        sqlite3_finalize(c->st[i]);
    for (size_t i = 0; i < c->ntopics; i++)
        free(c->topics[i].name);
    free(c->topics);
    if (c->db)
        sqlite3_close_v2(c->db);
    memset(c, 0, sizeof *c);
}

int evbus__sqlite_exec_vals(sq_conn_t *c, sq_stmt_id_t id, const int64_t *v,
                            int n)
{
    sqlite3_stmt *st = evbus__sqlite_stmt(c, id);
    if (!st)
        return evbus__sqlite_fail(c, sqlite3_errcode(c->db));
    int np = sqlite3_bind_parameter_count(st);
    for (int i = 0; i < n && i < np; i++)
        sqlite3_bind_int64(st, i + 1, v[i]);
    int rc = sqlite3_step(st);
    sqlite3_reset(st);
    return rc == SQLITE_DONE ? EVBUS_OK : evbus__sqlite_fail(c, rc);
}

int evbus__sqlite_exec_gid_seq(sq_conn_t *c, sq_stmt_id_t id, int64_t gid,
                               int64_t seq, int64_t a3, int64_t a4, int64_t a5)
{
    const int64_t v[] = {gid, seq, a3, a4, a5};
    return evbus__sqlite_exec_vals(c, id, v, 5);
}
