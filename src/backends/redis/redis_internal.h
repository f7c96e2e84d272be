/*
 * redis:// backend internals, shared by the files of src/backends/redis/.
 *
 * Connections (hiredis contexts are not thread-safe, so each has one user):
 *   - a pool for synchronous publishes and health checks (any thread takes
 *     an idle one, or opens a new one);
 *   - one writer thread per bus that pipelines publish_async XADDs and the
 *     subscriptions' batched XACKs / releases while their fetchers are
 *     blocked (redis_writer.c);
 *   - one fetcher thread per subscription that runs XREADGROUP / XAUTOCLAIM,
 *     sends its subscription's acks while entries keep coming, and buffers
 *     entries for the non-blocking fetch() (redis_fetcher.c, redis_claim.c,
 *     redis_entries.c; settling: redis_settle.c).
 * Every connection reconnects on its own with exponential backoff.
 */
#ifndef EVBUS_REDIS_INTERNAL_H
#define EVBUS_REDIS_INTERNAL_H

#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <hiredis/hiredis.h>

#include "evbus/backend.h"
#include "evbus/evbus.h"
#include "support/clock.h"
#include "support/cond.h"

/* ------------------------------------------------------------ options */

typedef struct rds_opts {
    char *host;
    int port;
    char *user;     /* ACL user, NULL for password-only AUTH */
    char *password; /* NULL: no AUTH */
    int db;
    int connect_timeout_ms;
    int command_timeout_ms;
    int claim_timeout_ms; /* idle time after which others' entries are taken */
    int block_ms;         /* XREADGROUP BLOCK */
    int batch;            /* XREADGROUP / XAUTOCLAIM COUNT */
    int reconnect_max_ms; /* backoff cap */
    long long maxlen;     /* XADD MAXLEN ~ n; 0 = no trimming */
    long long max_queued; /* publish_async queue limit */
    char *consumer;       /* fixed consumer name, NULL = generated */
    bool attempts_in_memory; /* record_attempts answers ENOTSUP */
} rds_opts_t;

/* ------------------------------------------------------------ connections */

/* Connects to the server in o, authenticates and selects the database.
 * sock_timeout_ms is the read/write timeout set on the socket afterwards.
 * Returns EVBUS_OK and *out, or an error (ECONN, ETIMEDOUT, EAUTH, EOPTION)
 * with a one-line reason in errstr. */
int evbus__redis_connect(const rds_opts_t *o, int sock_timeout_ms,
                         redisContext **out, char *errstr, size_t n);

/* The evbus error for a failed command: c->err set (I/O: ECONN/ETIMEDOUT),
 * or an error reply (mapped by its prefix). Writes a reason into errstr. */
int evbus__redis_error(const redisContext *c, const redisReply *r, char *errstr,
                       size_t n);

/* Exponential reconnect backoff: 0 while healthy, then doubling from
 * RDS_BACKOFF_MIN_MS up to the configured cap after each failed connect. */
#define RDS_BACKOFF_MIN_MS 50
typedef struct {
    int cur_ms;
    uint64_t next_ms; /* no connect attempt before this */
} rds_backoff_t;
void evbus__redis_backoff_failed(rds_backoff_t *b, int cap_ms);
void evbus__redis_backoff_ok(rds_backoff_t *b);

/* SIGPIPE: hiredis writes with write(), so writing to a connection the
 * server (or our own unsubscribe) closed raises SIGPIPE, whose default
 * action kills the process. Calls on application threads (synchronous
 * publish, health, connection setup, subscribe, record_attempts, the
 * handback on unsubscribe) go through evbus__redis_exchange, which blocks
 * SIGPIPE for the call; the backend's own threads block it for good
 * (evbus__redis_thread_block_sigpipe). */
void evbus__redis_thread_block_sigpipe(void);
/* Sends what was appended to c and reads n replies into out (NULL from
 * the first failure on), with SIGPIPE blocked for the call and a SIGPIPE
 * it raised discarded. REDIS_OK or REDIS_ERR (c->err set). */
int evbus__redis_exchange(redisContext *c, int n, redisReply **out);
/* redisCommandArgv without SIGPIPE (argvlen NULL = strlen). NULL on an
 * I/O failure (c->err set). */
redisReply *evbus__redis_command(redisContext *c, int argc, const char **argv,
                                 const size_t *argvlen);

/* ------------------------------------------------------------ entry ids */

typedef struct {
    uint64_t ms, seq;
} rds_id_t;

/* Parses "1526919030474-55"; false when malformed. */
bool evbus__redis_id_parse(const char *s, size_t len, rds_id_t *out);

/* A set of entry ids (open addressing). Not thread-safe. */
typedef struct {
    rds_id_t *slots;
    unsigned char *used;
    size_t cap, len;
} rds_idset_t;

bool evbus__redis_idset_has(const rds_idset_t *s, rds_id_t id);
int evbus__redis_idset_add(rds_idset_t *s,
                           rds_id_t id); /* EVBUS_OK or ENOMEM */
void evbus__redis_idset_del(rds_idset_t *s, rds_id_t id);
void evbus__redis_idset_free(rds_idset_t *s);

/* ------------------------------------------------------------ messages */

/* One buffered stream entry; the payload lives in the same allocation. */
typedef struct rds_msg {
    struct rds_msg *next;
    rds_id_t id;
    char idstr[44];
    /* The retry context stored by record_attempts (redis_attempts.c);
     * 0 for an entry no handler has seen. */
    int attempts, prev_delay_ms;
    int64_t first_attempt_ms;
    const char *decode_error; /* static string or NULL */
    /* Decoded by the fetcher thread (so decoding runs beside the poller);
     * handed to the core with the message, which then owns it. NULL when
     * the bytes did not decode: the core decodes again and dead-letters. */
    evbus_event_t *event;
    size_t len;
    char payload[]; /* NUL-terminated */
} rds_msg_t;

/* ------------------------------------------------------------ writer */

struct rds_sub;

typedef enum { RDS_JOB_PUB, RDS_JOB_SETTLE } rds_job_kind_t;

typedef struct rds_job {
    struct rds_job *next;
    rds_job_kind_t kind;
    /* RDS_JOB_PUB: the XADD in wire format, made by redisFormatCommandArgv
     * (freed with redisFreeCommand) */
    char *cmd;
    size_t len;
    evbus_publish_done_fn done;
    void *token;
    uint64_t deadline_ms; /* fail it if still unsent by then */
    /* RDS_JOB_SETTLE: the subscription's queued acks and releases; the job
     * holds a reference on sub */
    struct rds_sub *sub;
} rds_job_t;

typedef struct rds_writer {
    pthread_t thread;
    bool started;
    pthread_mutex_t mu;
    pthread_cond_t work_cv; /* jobs queued or stop */
    pthread_cond_t idle_cv; /* publishes completed (flush waits) */
    rds_job_t *head, *tail;
    long long queued_pubs;  /* PUB jobs queued, not yet completed */
    long long busy_pubs;    /* PUB jobs taken by the thread, not completed */
    bool waiting, stop;
    redisContext *c;        /* the thread's own connection */
    rds_backoff_t backoff;
} rds_writer_t;

/* ------------------------------------------------------------ bus */

typedef struct rds_bus {
    evbus_host_t *host;
    rds_opts_t o;
    char maxlen_str[24];
    /* connection pool for synchronous calls */
    pthread_mutex_t pool_mu;
    redisContext *idle[8];
    int nidle;
    rds_backoff_t pool_backoff;
    rds_writer_t w;
} rds_bus_t;

/* ------------------------------------------------------------ subscription */

typedef struct rds_sub {
    rds_bus_t *bus;
    atomic_int refs; /* the owner (until unsubscribe) + queued settle jobs */
    char *topic, *group;
    char *akey; /* the group's attempt hash (redis_attempts.c) */
    char consumer[160];

    pthread_mutex_t mu;
    pthread_cond_t cv; /* fetcher: stop, space in the buffer; unsubscribe:
                          settle jobs drained */
    bool stop;
    pthread_t thread;
    bool thread_started;
    redisContext *c;   /* the fetcher's connection (swapped under mu) */

    rds_msg_t *buf_head, *buf_tail; /* fetched, not yet handed out */
    int nbuf;
    /* Ids this member holds: buffered, handed out and not settled, or acked
     * while the XACK is not yet confirmed. The claim and pending reads skip
     * them, so the member never delivers a message twice to itself. */
    rds_idset_t held;

    /* Settled, waiting for the writer: XACK these, give those back. */
    rds_msg_t *acks, *releases;
    bool settle_queued; /* a RDS_JOB_SETTLE is queued or running */
    /* Releases the writer has taken and not yet seen answered. Leaving the
     * group waits for them: a give-back landing after the handback would
     * put an entry on a consumer that DELCONSUMER then deletes with its
     * pending list. */
    int releasing;
    /* The fetcher is cycling (not blocked, connected) and sends the queued
     * acks itself, pipelined with its next XREADGROUP; otherwise settles
     * go through the writer thread. */
    bool fetcher_active;
} rds_sub_t;

/* redis_publish.c */
int evbus__redis_publish(void *priv, const char *topic, const evbus_event_t *ev,
                         const void *payload, size_t len);
int evbus__redis_publish_async(void *priv, const char *topic,
                               const evbus_event_t *ev, const void *payload,
                               size_t len, evbus_publish_done_fn done,
                               void *token);
int evbus__redis_flush(void *priv, int timeout_ms);
/* Pool of connections for synchronous calls. */
int evbus__redis_pool_get(rds_bus_t *b, redisContext **out, char *errstr,
                          size_t n);
void evbus__redis_pool_put(rds_bus_t *b,
                           redisContext *c); /* NULL-safe; frees if bad */
void evbus__redis_pool_free(rds_bus_t *b);

/* redis_writer.c */
int evbus__redis_writer_start(rds_bus_t *b);
void evbus__redis_writer_stop(rds_bus_t *b); /* fails what is still queued */
/* Frees a job and its command. */
void evbus__redis_job_free(rds_job_t *j);
/* Queues a job; returns EVBUS_OK, or EAGAIN when the publish queue is full
 * (PUB only) or ECLOSED. */
int evbus__redis_writer_push(rds_bus_t *b, rds_job_t *job);

/* redis_consume.c: a subscription's life */
int evbus__redis_subscribe(void *priv, const char *topic, const char *group,
                           void **bsub, char *errstr, size_t n);
void evbus__redis_unsubscribe(void *priv, void *bsub);
int evbus__redis_fetch(void *priv, void *bsub, evbus_msg_t *out, int max);
int evbus__redis_settle(void *priv, void *bsub, evbus_msg_t *msg,
                        evbus_settle_t how, int delay_ms);
/* Queues a settle job for what s has collected (s->settle_queued or a
 * failed send put it there). */
void evbus__redis_push_settle_job(rds_sub_t *s);
/* Appends one XACK (and the HDEL of the attempt records) of the listed
 * messages to c; returns the replies to read (0 for an empty list). */
int evbus__redis_append_acks(rds_sub_t *s, redisContext *c, rds_msg_t *acks);
/* Run by the writer thread for a RDS_JOB_SETTLE (see redis_writer.c):
 * takes the sub's queued acks and releases (into *acks, *releases) and
 * appends their commands to c. Returns how many replies to read (0 =
 * nothing to send). */
int evbus__redis_settle_append(rds_sub_t *s, redisContext *c, rds_msg_t **acks,
                               rds_msg_t **releases);
/* After the replies: ok = true when the server answered (acks are final),
 * false when the connection failed (they are put back to be sent again).
 * Returns true when the caller must queue its job again (keeping its
 * reference on s), false when it drops the job and its reference. */
bool evbus__redis_settle_done(rds_sub_t *s, rds_msg_t *acks,
                              rds_msg_t *releases, bool ok);
/* Test hook, NULL in production: the writer calls it after taking
 * releases of s and before sending them (tests/redis/test_redis_leave.c
 * delays a release with it). */
extern void (*evbus__redis_hook_releasing)(const char *topic,
                                           const char *group,
                                           const char *consumer);
void evbus__redis_sub_unref(rds_sub_t *s);

/* redis_entries.c */
/* Frees a list of messages and the events they still own. */
void evbus__redis_msg_list_free(rds_msg_t *m);

/* redis_fetcher.c */
/* The fetcher thread's body (arg: the rds_sub_t). */
void *evbus__redis_fetcher_main(void *arg);
/* XGROUP CREATE topic group 0 MKSTREAM; an existing group is fine. */
int evbus__redis_create_group(redisContext *c, const char *topic,
                              const char *group, char *errstr, size_t n);

/* redis_settle.c */
/* Makes sure a settle job is queued for what s has collected. */
void evbus__redis_schedule_settle(rds_sub_t *s);

/* redis_handback.c: leaving a group cleanly. */
/* The consumer that entries handed back belong to until a member claims
 * them, and the idle time they get (far beyond any claim timeout, so the
 * next claim scan takes them). */
#define EVBUS__REDIS_HANDBACK "evbus-handback"
#define EVBUS__REDIS_RELEASE_IDLE_MS "315360000000"
/* After s's fetcher stopped and its acks were confirmed: hands back every
 * entry still pending for s's consumer that s does not hold, then deletes
 * the consumer when nothing of it is left pending. Uses a pooled
 * connection; failures are logged (the entries then come back after
 * claim_timeout_ms). */
void evbus__redis_handback(rds_sub_t *s);
/* Deletes consumers of s's group that hold nothing and were idle far
 * longer than a live member ever is. Best effort, on c. */
void evbus__redis_sweep_consumers(rds_sub_t *s, redisContext *c);

/* redis_attempts.c: durable attempt counts, one hash per group. */
/* "evbus:attempts:{topic}:group"; malloc'ed, NULL when out of memory. */
char *evbus__redis_attempts_key(const char *topic, const char *group);
/* Fills the retry context of each message of list from the hash (one
 * HMGET on c, the fetcher's connection). EVBUS_OK, ECONN on an I/O
 * failure, or another error (logged; the messages keep attempts 0). */
int evbus__redis_attempts_load(rds_sub_t *s, redisContext *c, rds_msg_t *list);
/* Appends an HDEL of the n ids' fields to c; returns the replies to read
 * (0 when n is 0, else 1). */
int evbus__redis_attempts_append_del(rds_sub_t *s, redisContext *c,
                                     const char **ids, size_t n);
/* The vtable's record_attempts: one HSET on a pooled connection. */
int evbus__redis_record_attempts(void *priv, void *bsub,
                                 evbus_msg_t *const *msgs, int n);

#endif /* EVBUS_REDIS_INTERNAL_H */
