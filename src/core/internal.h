/*
 * Internal declarations shared by the core's files. Nothing here is part of
 * the public API; every symbol is hidden by -fvisibility=hidden.
 */
#ifndef EVBUS_CORE_INTERNAL_H
#define EVBUS_CORE_INTERNAL_H

#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "evbus/backend.h"
#include "evbus/evbus.h"
#include "support/clock.h"
#include "support/cond.h"
#include "support/errstr.h"
#include "support/lograte.h"
#include "support/names.h"
#include "support/structs.h"

#define EVBUS_FETCH_BATCH 64
/* How long an idle poller sleeps before it asks backends again even without
 * a notification (a safety net; backends are expected to notify). */
#define EVBUS_IDLE_RECHECK_MS 250

#include "core/patterns.h" /* logging, the encoded publish path */

/* ---- URL */
evbus_url_t *evbus__url_parse(const char *url, char *errstr, size_t n);
void evbus__url_free(evbus_url_t *url);
/* First parameter nobody marked as understood, or NULL. */
const char *evbus__url_unused(const evbus_url_t *url);

/* ---- registry */
const evbus_backend_t *evbus__backend_lookup(const char *scheme);

#include "lanes.h"
#include "retry_ctx.h"
#include "workers.h"

/* ---- held messages: retries the core runs itself, dead-letter writes and
 * settles it tries again, parked events (timer heap, poller thread only) */
typedef enum {
    EVBUS_PENDING_REDELIVER,  /* run the handler again */
    EVBUS_PENDING_DEADLETTER, /* the dead-letter write failed; try again */
    EVBUS_PENDING_SETTLE,     /* an ACK or RETRY settle failed; try again */
    EVBUS_PENDING_PARKED      /* dead-lettering failed for good: release */
} evbus_pending_kind_t;

typedef struct evbus_pending {
    uint64_t due_ms;      /* monotonic */
    evbus_pending_kind_t kind;
    struct evbus_sub *sub;
    evbus_msg_t msg;
    evbus_event_t *event; /* decoded event, owned; NULL if undecodable */
    evbus_retry_ctx_t ctx;
    int tries;            /* dead-letter writes or settles tried so far */
    uint64_t tries_since_ms; /* monotonic time of the first of them */
    evbus_settle_t how;   /* SETTLE kind: the settle to try again */
    int delay_ms;         /* ... and its delay */
    char *reason;         /* dead-letter reason (DEADLETTER kind) */
} evbus_pending_t;

typedef struct evbus_heap {
    evbus_pending_t **items;
    size_t len, cap;
} evbus_heap_t;

int evbus__heap_push(evbus_heap_t *h, evbus_pending_t *p);
evbus_pending_t *evbus__heap_peek(const evbus_heap_t *h);
evbus_pending_t *evbus__heap_pop(evbus_heap_t *h);
/* Takes every entry of sub (all when sub is NULL) out of the heap and
 * hands each to fn, which owns it then; returns how many. Allocates
 * nothing. fn must not touch the heap. */
size_t evbus__heap_drain_sub(evbus_heap_t *h, const struct evbus_sub *sub,
                             void (*fn)(evbus_pending_t *p, void *arg),
                             void *arg);
void evbus__heap_free(evbus_heap_t *h);

/* ---- retry contexts remembered in memory, for backends that redeliver a
 * RETRY themselves but keep no attempt count (retry_memo.c). Keyed by the
 * event's source and id; bounded (the oldest is forgotten first). */
#define EVBUS_MEMO_CAPACITY 4096 /* per subscription */
typedef struct evbus_memo evbus_memo_t;
evbus_memo_t *evbus__memo_new(size_t capacity);
void evbus__memo_free(evbus_memo_t *m);
void evbus__memo_put(evbus_memo_t *m, const evbus_event_t *ev,
                     const evbus_retry_ctx_t *ctx);
/* Fills ctx and forgets the entry; false when there is none. */
bool evbus__memo_take(evbus_memo_t *m, const evbus_event_t *ev,
                      evbus_retry_ctx_t *ctx);

/* ---- publish completions waiting for the application thread */
typedef struct evbus_completion {
    struct evbus_completion *next;
    evbus_event_t *event;
    evbus_delivery_cb cb;
    void *opaque;
    int err;
    size_t len;          /* bytes it holds of the back-pressure bound */
} evbus_completion_t;

/* ---- subscription */
typedef struct evbus_sub_counters {
    _Atomic uint64_t delivered, acked, retried, dead_lettered, undecodable;
    _Atomic uint64_t dlq_failed;
    _Atomic uint64_t handler_us_sum;
    _Atomic uint64_t handler_us_hist[EVBUS_HIST_BUCKETS];
} evbus_sub_counters_t;

struct evbus_sub {
    struct evbus *bus;
    char *topic, *group, *dlq_topic;
    evbus_retry_policy_t retry;
    int max_inflight;
    evbus_dlq_failure_t dlq_failure;
    evbus_handler_fn fn;
    void *opaque;
    void *bsub;           /* the backend's handle */
    int inflight;         /* fetched and not settled (poller thread only) */
    evbus_memo_t *memo;   /* NULL unless the backend needs one */
    /* concurrency > 1: jobs waiting per key, the workers running them, how
     * many were handed over and not collected, and room for one batch of
     * record_attempts pointers (poller side, no lock) */
    int concurrency;
    evbus_lanes_t lanes;
    evbus_pool_t pool;
    int started;
    evbus_msg_t **recbuf;
    evbus__lograte_t fetch_log; /* fetch failures (poller thread only) */
    atomic_bool removed;  /* evbus_unsubscribe asked for it to go */
    atomic_bool detached; /* the poller has let go of it (under bus->mu) */
    bool free_on_reap;    /* nobody waits for it: the reaper frees it */
    evbus_sub_counters_t c;
    struct evbus_sub *next;
};

/* ---- the bus. The host is the first member so backends' host pointers
 * convert back to the bus. */
struct evbus_host {
    struct evbus *bus;
};

/* Who holds the right to fetch, run handlers and settle (bus->role). */
typedef enum {
    EVBUS_ROLE_FREE,    /* nobody */
    EVBUS_ROLE_POLLER,  /* a thread inside evbus_poll / evbus_run */
    EVBUS_ROLE_CONTROL  /* a short control step: reaping for an
                           unsubscribe from another thread, closing */
} evbus_role_t;

struct evbus {
    struct evbus_host host;
    const evbus_backend_t *be;
    void *priv;
    evbus_url_t *url;
    char scheme[32];

    /* Fixed at open. */
    unsigned features;       /* the feature word (features_of or features) */
    size_t msg_stride;       /* sizeof(evbus_msg_t) as the backend knows it */
    int (*record_attempts)(void *, void *, evbus_msg_t *const *, int);
    bool native_names;       /* names=native */
    int close_timeout_ms;
    size_t max_event_bytes;
    long max_pending;
    size_t max_pending_bytes;
    int publish_wait_ms;

    pthread_mutex_t mu;      /* subs list, completions, role, waiters */
    pthread_cond_t cv;       /* flush waiters; room for a publish */
    pthread_cond_t role_cv;  /* the role changed or a subscription was
                                detached */
    evbus_role_t role;
    int role_waiters;        /* threads waiting in role_cv for the role */
    struct evbus_sub *subs;
    evbus_completion_t *done_head, *done_tail;
    int room_waiters;        /* publishers waiting for back-pressure room */

    atomic_bool closing;
    atomic_bool stop;
    atomic_bool sleeping;    /* the poller waits on wake_fd */
    _Atomic uint64_t gen;    /* bumped by evbus_host_notify */
    int wake_fd;             /* eventfd the poller sleeps on */

    /* Back-pressure: publishes counted against max_pending - unconfirmed,
     * or confirmed with their callback not yet run - and their bytes. */
    _Atomic long pending_pub;
    _Atomic size_t pending_bytes;
    _Atomic long unconfirmed;  /* not yet answered by the backend (flush) */
    _Atomic int first_async_err;

    evbus_heap_t heap;       /* poll-role holder only */

    /* The poller holds work_mu from taking the role to leaving it, except
     * while it sleeps with nothing to do: then `lend` is set and a worker
     * that finishes a job may take work_mu and act for the poller on its
     * subscription's answers (collect, settle, record, start; never fetch).
     * Workers only ever try-lock it, so the poller may wait for them
     * (drain, join) while holding it. A control step (close, unsubscribe
     * with nobody polling) needs no lock: lend is false then. */
    pthread_mutex_t work_mu;
    bool lend;               /* under work_mu */
    _Atomic int lent_calls;  /* answers workers acted on for the poller,
                                counted in evbus_poll's result */

    _Atomic uint64_t published, publish_failed, faults_injected;
    _Atomic uint64_t publish_eagain;
};

/* ---- publishing (publish.c) */
int evbus__publish_encoded(evbus_t *bus, const char *topic,
                           const evbus_event_t *ev, const void *payload,
                           size_t len);
/* Runs queued delivery callbacks on the calling thread; returns how many. */
int evbus__run_completions(evbus_t *bus);

/* ---- the poll role (dispatch.c) */
/* The bus whose poll role the calling thread holds, or NULL. Thread-local,
 * so asking "am I the poller?" races with nobody. */
extern _Thread_local struct evbus *evbus__polling_bus;
/* Takes the role for a control step, waiting while a poller or another
 * control step holds it (the poller is woken and asked to let go only by
 * the caller's own means: closing, stop). */
void evbus__role_take_control(evbus_t *bus);
void evbus__role_release(evbus_t *bus);

/* ---- delivery rounds (dispatch.c), by the role holder */
/* Runs sub's handler for ev as attempt `attempt`, with the thread-local
 * delivery context set and the metrics counted; any thread. */
evbus_result_t evbus__run_handler(struct evbus_sub *sub,
                                  const evbus_event_t *ev, int attempt);
/* Collects the answers of sub's workers and acts on them, then hands
 * waiting jobs to idle workers (unless stopping). Returns answers
 * collected. */
int evbus__workers_round(evbus_t *bus, struct evbus_sub *sub);
/* On a worker, after it ran job: acts on the answer here when the poller
 * lends its right (see struct evbus), collecting the other answers and
 * starting jobs too; *next receives a started job for this worker to run,
 * or NULL. Returns false when the poller must act (job is untouched). */
bool evbus__workers_answer(struct evbus_sub *sub, evbus_job_t *job,
                           evbus_job_t **next);
/* Waits for every job sub's workers run and acts on the answers, then
 * gives the jobs that did not start back to the broker. */
void evbus__workers_drain(evbus_t *bus, struct evbus_sub *sub);
/* Runs what is due in the timer heap; returns handler calls made. */
int evbus__run_due(evbus_t *bus);
/* Asks every subscription once for a batch; returns handler calls made. */
int evbus__fetch_round(evbus_t *bus);

/* ---- subscriptions (subscribe.c) */
void evbus__release_all(evbus_t *bus);
void evbus__reap(evbus_t *bus);
void evbus__sub_free(struct evbus_sub *sub);
/* Gives a held message back to the broker, logging a failure. */
void evbus__release_msg(evbus_t *bus, struct evbus_sub *sub, evbus_msg_t *msg);

/* ---- dead letters (deadletter.c) */
/* Writes ev (or, when ev is NULL, the raw payload wrapped in an
 * evbus.deadletter.undecodable event) to sub's dead-letter topic with the
 * reason and attempt count. A dead letter that would exceed the bus's
 * max_event_bytes keeps the head of its data and says how much was cut
 * (dlqtruncated), so it always fits. Returns EVBUS_OK or the publish
 * error. */
int evbus__deadletter(struct evbus_sub *sub, const evbus_event_t *ev,
                      const evbus_msg_t *msg, const char *reason,
                      int attempts);

/* ---- metrics (metrics.c) */
void evbus__hist_observe(evbus_sub_counters_t *c, uint64_t us);

#endif /* EVBUS_CORE_INTERNAL_H */
