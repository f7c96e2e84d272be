/*
 * sqlite:// backend - declarations shared by its files. Nothing here is
 * public; every symbol is hidden by -fvisibility=hidden.
 *
 * Storage model (one SQLite file in WAL mode, shared by processes):
 *   evbus_topics   topic name -> small integer id
 *   evbus_events   the append-only log: seq (rowid, grows), topic, bytes
 *   evbus_groups   one row per (topic, group): cursor = highest seq the
 *                  group has taken from the log
 *   evbus_pending  per group, the events taken but not acknowledged: who
 *                  holds the lease, until when it is invisible, how often
 *                  it was handed out (deliveries, which with owner names
 *                  the current lease) and the retry context the core
 *                  recorded before each handler call (attempts,
 *                  prev_delay_ms, first_attempt_ms: crash-proof)
 *
 * Connections (a sqlite3 handle is never used by two threads at once):
 *   pub   publish (any thread, under pub_mu) and the async writer thread
 *   sub   subscribe/fetch/settle/unsubscribe and the watcher's ack flush
 *         (under sub_mu)
 *   aux   the watcher thread alone: PRAGMA data_version, retention,
 *         and the WAL checkpoints sub's commits would otherwise run
 */
#ifndef EVBUS_SQLITE_INTERNAL_H
#define EVBUS_SQLITE_INTERNAL_H

#include <pthread.h>
#include <sqlite3.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "evbus/backend.h"
#include "evbus/evbus.h"
#include "support/clock.h"
#include "support/lograte.h"
#include "support/sqlite_err.h"

/* ------------------------------------------------------------ options */

typedef struct sq_opts {
    long long visibility_timeout_ms; /* lease length */
    long long retention_ms;          /* keep acknowledged events this long */
    long long retention_interval_ms; /* how often the cleanup runs */
    long long busy_timeout_ms;       /* longest wait for the write lock */
    long long poll_interval_ms;      /* data_version safety check */
    long long max_queue;             /* async publishes waiting at most */
    long long max_queue_bytes;       /* ... and their payload bytes */
    long long max_db_bytes;          /* database size limit, 0 = none */
    bool sync_full;                  /* synchronous=FULL instead of NORMAL */
    bool attempts_in_memory;         /* record_attempts answers ENOTSUP */
} sq_opts_t;

/* ------------------------------------------------------------ connections */

typedef enum {
    SQ_BEGIN,
    SQ_COMMIT,
    SQ_ROLLBACK,
    SQ_TOPIC_INS,
    SQ_TOPIC_GET,
    SQ_EV_INS,
    SQ_GROUP_INS,
    SQ_GROUP_GET,
    SQ_DUE_SEL,
    SQ_LEASE_UPD,
    SQ_PEND_DEL,
    SQ_CURSOR_GET,
    SQ_NEW_SEL,
    SQ_PEND_INS,
    SQ_CURSOR_SET,
    SQ_RETRY_UPD,
    SQ_RELEASE_UPD,
    SQ_EXTEND_UPD,
    SQ_ATTEMPT_UPD,
    SQ_READY,
    SQ_NEXT_DUE,
    SQ_DATA_VERSION,
    SQ_RET_TOPICS,
    SQ_RET_LIMIT,
    SQ_RET_MAXSEQ,
    SQ_RET_SCAN,
    SQ_RET_DEL,
    SQ_HEALTH,
    SQ_NSTMT
} sq_stmt_id_t;

typedef struct sq_topic_ent {
    char *name;
    int64_t id;
} sq_topic_ent_t;

typedef struct sq_conn {
    sqlite3 *db;
    sqlite3_stmt *st[SQ_NSTMT]; /* prepared on first use, reused */
    long long busy_timeout_ms;
    uint64_t busy_since_ms; /* busy handler: when this wait began */
    sq_topic_ent_t *topics; /* topic id cache (ids never change) */
    size_t ntopics, cap_topics;
    int fail_rc; /* SQLite code of the last failure (the why) */
} sq_conn_t;

/* ------------------------------------------------------------ subscriptions */

/* A fetched message's backend state; its payload lives here until settled. */
typedef struct sq_lease {
    struct sq_lease *prev, *next; /* in the subscription's held list */
    int64_t seq;
    int64_t deliveries; /* the value stored with our lease (owner check) */
    size_t len;
    unsigned char payload[];
} sq_lease_t;

/* A settle that is applied in the next write transaction. */
typedef struct sq_op {
    int64_t seq, deliveries;
    evbus_settle_t how;
    int64_t visible_at; /* RETRY: when it becomes visible again */
    int64_t delay_ms;   /* RETRY: stored as the next prev_delay_ms */
} sq_op_t;

typedef struct sq_sub {
    struct sq_bus *bus;
    char *topic, *group;
    int64_t topic_id, gid;
    uint64_t owner;   /* lease owner id, random per subscription */
    sq_lease_t *held; /* fetched, not settled (under sub_mu) */
    sq_op_t *ops;     /* buffered settles (under sub_mu) */
    size_t nops, cap_ops;
    uint64_t ops_since_ms; /* when the oldest buffered op was added */
    int64_t seen_dv;       /* data_version when we last found nothing */
    uint64_t seen_gen;     /* bus->sub_gen then */
    int64_t next_due_ms;   /* earliest lease expiry / retry then */
    bool idle_known;       /* the three fields above are valid */
    /* A failing fetch is tried again after a backoff (50 ms doubling to
     * 1 s); meanwhile fetch answers fetch_err without touching the file. */
    int fetch_err;
    uint64_t fetch_retry_ms, fetch_backoff_ms;
    evbus__lograte_t fetch_log; /* the cause, logged once per change */
    struct sq_sub *next;
} sq_sub_t;

/* ------------------------------------------------------------ async queue */

typedef struct sq_item {
    struct sq_item *next;
    const char *topic; /* points into data[] */
    const void *payload;
    size_t len;
    int64_t topic_id; /* resolved by the writer */
    evbus_publish_done_fn done;
    void *token;
    char data[];
} sq_item_t;

/* ------------------------------------------------------------ the bus */

typedef struct sq_bus {
    evbus_host_t *host;
    char *path;
    sq_opts_t o;

    pthread_mutex_t pub_mu;
    sq_conn_t pub;

    pthread_mutex_t sub_mu;
    sq_conn_t sub;
    sq_sub_t *subs; /* under sub_mu */
    atomic_int nsubs;
    uint64_t sub_gen; /* bumped when sub commits change pending rows */
    /* A line formatted under sub_mu, logged by evbus__sqlite_sub_unlock
     * after the unlock (log callbacks never run under a library lock). */
    char sub_msg[700];
    int sub_msg_level;        /* 0 = none */
    evbus__lograte_t ops_log; /* failed settle writes (under sub_mu) */

    /* async publishing: queue + writer thread */
    pthread_mutex_t q_mu;
    pthread_cond_t q_cv;   /* writer waits for work */
    pthread_cond_t q_idle; /* flush and full-queue waiters */
    sq_item_t *q_head, *q_tail;
    long q_len;
    size_t q_bytes;
    long q_busy; /* items in the batch being written */
    bool q_stop;
    bool writer_started;
    pthread_t writer;

    /* watcher thread */
    sq_conn_t aux;
    int wake_fd;          /* eventfd: pokes the watcher */
    int ino_fd, ino_wd;   /* inotify on the directory, watch or -1 */
    char *dir, *wal_name; /* directory of the file, "<name>-wal" */
    char *db_name;        /* "<name>": deleted or moved -> check at once */
    bool watcher_started;
    pthread_t watcher;
    atomic_bool stop;
    _Atomic int64_t next_due_ms; /* earliest moment something turns due */
    _Atomic int64_t ops_due_ms;  /* buffered settles must be written by */
    _Atomic int64_t progress_ms; /* last fetch or settle (monotonic) */
    atomic_bool ckpt_due;        /* sub's commits grew the WAL: the
                                    watcher checkpoints it (passive) */
    atomic_int ckpt_mark;        /* WAL pages at the last such request */

    /* the database file's identity (sqlite_file.c) */
    char *real_path; /* symbolic links resolved */
    dev_t file_dev;
    ino_t file_ino;
    atomic_bool gone;            /* the path no longer names our file */
    char gone_why[512];          /* written once, before gone is set */
    evbus__lograte_t pub_log;    /* publish failures (under pub_mu) */
    evbus__lograte_t writer_log; /* async publish failures (writer) */
} sq_bus_t;

/* ---------------------------------------------------- sqlite_conn.c */

/* Opens path with our PRAGMAs and busy handler; creates the schema when
 * create is true. EVBUS_OK or an error with the reason in errstr. */
int evbus__sqlite_conn_open(sq_conn_t *c, const char *path, const sq_opts_t *o,
                            bool create, char *errstr, size_t n);
void evbus__sqlite_conn_close(sq_conn_t *c);
/* The reusable statement id, prepared on first use (reset before return). */
sqlite3_stmt *evbus__sqlite_stmt(sq_conn_t *c, sq_stmt_id_t id);
/* BEGIN IMMEDIATE, waiting up to busy_timeout_ms. EVBUS_OK/EBUSY/EIO. */
int evbus__sqlite_begin(sq_conn_t *c);
/* COMMIT (retried while busy); on failure the transaction is rolled back. */
int evbus__sqlite_commit(sq_conn_t *c);
void evbus__sqlite_rollback(sq_conn_t *c);
/* sqlite3_exec with the busy handler active, retried while the database is
 * busy (journal_mode=WAL and schema creation need locks briefly). On
 * failure the open transaction is rolled back and errstr names path and
 * what was being done. */
/* Runs a statement that returns no rows with v[0..n-1] bound to ?1..?n (as
 * many as it has); resets it. EVBUS_OK or the error (remembered in c). */
int evbus__sqlite_exec_vals(sq_conn_t *c, sq_stmt_id_t id, const int64_t *v,
                            int n);
/* The same for the usual (gid, seq, a3, a4, a5) parameters. */
int evbus__sqlite_exec_gid_seq(sq_conn_t *c, sq_stmt_id_t id, int64_t gid,
                               int64_t seq, int64_t a3, int64_t a4, int64_t a5);
/* Remembers rc as c's last failure and maps it (evbus__sqlite_err). */
int evbus__sqlite_fail(sq_conn_t *c, int rc);
int evbus__sqlite_exec_retry(sq_conn_t *c, const char *path, const char *sql,
                             char *errstr, size_t n, const char *what);
/* Topic id, creating the topic in its own transaction when new. */
int evbus__sqlite_topic_id(sq_conn_t *c, const char *topic, int64_t *id);
/* Steps a statement that returns one integer (or none: *out = def). */
int evbus__sqlite_step_int(sqlite3_stmt *st, int64_t def, int64_t *out);
/* PRAGMA data_version on c (it changes when another connection commits),
 * or -1 when it cannot be read. */
int64_t evbus__sqlite_data_version(sq_conn_t *c);

/* ---------------------------------------------------- sqlite_schema.c */
/* Creates the tables and migrates an older file (create), or checks that
 * the file has this library's schema version. EVBUS_OK or an error with
 * the reason in errstr. */
int evbus__sqlite_schema_ensure(sq_conn_t *c, const char *path, bool create,
                                char *errstr, size_t n);

/* ---------------------------------------------------- sqlite_file.c */
/* Remembers which file b->real_path names now (device and inode). */
int evbus__sqlite_file_identify(sq_bus_t *b, char *errstr, size_t n);
/* Watcher: checks that the path still names that file; the first time it
 * does not, logs an ERROR naming the path and marks the bus gone. Returns
 * true when gone. */
bool evbus__sqlite_file_check(sq_bus_t *b);
/* EVBUS_OK, or EVBUS_EIO once the file was deleted or replaced. Any
 * thread. */
int evbus__sqlite_file_ok(sq_bus_t *b);
/* Why an operation on connection c failed with err, naming the file:
 * "disk full ...", "... was deleted", or the error's name. */
void evbus__sqlite_why(sq_bus_t *b, const sq_conn_t *c, int err, char *buf,
                       size_t n);

/* ---------------------------------------------------- sqlite_publish.c */
int evbus__sqlite_publish(void *priv, const char *topic,
                          const evbus_event_t *ev, const void *payload,
                          size_t len);
int evbus__sqlite_publish_async(void *priv, const char *topic,
                                const evbus_event_t *ev, const void *payload,
                                size_t len, evbus_publish_done_fn done,
                                void *token);
int evbus__sqlite_flush(void *priv, int timeout_ms);
/* Stops the writer after it wrote everything queued. */
void evbus__sqlite_writer_stop(sq_bus_t *b);

/* ---------------------------------------------------- sqlite_consume.c */
int evbus__sqlite_subscribe(void *priv, const char *topic, const char *group,
                            void **bsub, char *errstr, size_t n);
void evbus__sqlite_unsubscribe(void *priv, void *bsub);
int evbus__sqlite_fetch(void *priv, void *bsub, evbus_msg_t *out, int max);

/* ---------------------------------------------------- sqlite_settle.c */
int evbus__sqlite_settle(void *priv, void *bsub, evbus_msg_t *msg,
                         evbus_settle_t how, int delay_ms);
/* Stores the retry context of attempts about to start, with the buffered
 * settles, in one committed transaction (backend.h record_attempts). */
int evbus__sqlite_record_attempts(void *priv, void *bsub,
                                  evbus_msg_t *const *msgs, int n);
/* The buffered settles of every subscription: how many; written inside
 * the caller's transaction on b->sub; marked written after it committed.
 * The caller holds sub_mu. */
size_t evbus__sqlite_ops_buffered(const sq_bus_t *b);
int evbus__sqlite_apply_ops(sq_bus_t *b);
void evbus__sqlite_ops_written(sq_bus_t *b);
/* Writes every subscription's buffered settles in a transaction of its
 * own (caller holds sub_mu). */
void evbus__sqlite_flush_ops_locked(sq_bus_t *b);
/* Renews the leases of every fetched, unsettled event (caller holds
 * sub_mu). */
void evbus__sqlite_extend_leases_locked(sq_bus_t *b);
/* Leaves a line to log once sub_mu is released (caller holds it)... */
void evbus__sqlite_sub_log(sq_bus_t *b, int level, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* ... by this: unlocks sub_mu, then logs that line, if any. */
void evbus__sqlite_sub_unlock(sq_bus_t *b);

/* ---------------------------------------------------- sqlite_watch.c */
int evbus__sqlite_watcher_start(sq_bus_t *b, char *errstr, size_t n);
void evbus__sqlite_watcher_stop(sq_bus_t *b);
/* Wakes the watcher so it re-reads its deadlines. Any thread. */
void evbus__sqlite_watcher_poke(sq_bus_t *b);
/* Lowers the moment the watcher will notify the host. Any thread. */
void evbus__sqlite_watch_due(sq_bus_t *b, int64_t due_ms);
/* Deletes old acknowledged events with conn c. Returns rows deleted. */
long evbus__sqlite_retention_run(sq_bus_t *b, sq_conn_t *c);

#endif /* EVBUS_SQLITE_INTERNAL_H */
