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

#define EVBUS_FETCH_BATCH 64
/* How long an idle poller sleeps before it asks backends again even without
 * a notification (a safety net; backends are expected to notify). */
#define EVBUS_IDLE_RECHECK_MS 250

/* ---- time */
uint64_t evbus__now_ms(void);
uint64_t evbus__now_us(void);

/* ---- errors: copies a printf-formatted message into errstr (may be NULL) */
void evbus__seterr(char *errstr, size_t n, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* ---- logging */
void evbus__log(int level, const char *component, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
void evbus__vlog(int level, const char *component, const char *fmt,
                 va_list ap);
bool evbus__log_enabled(int level);

/* ---- URL */
evbus_url_t *evbus__url_parse(const char *url, char *errstr, size_t n);
void evbus__url_free(evbus_url_t *url);
/* First parameter nobody marked as understood, or NULL. */
const char *evbus__url_unused(const evbus_url_t *url);

/* ---- registry */
const evbus_backend_t *evbus__backend_lookup(const char *scheme);

/* ---- retry heap: messages the core redelivers itself */
typedef enum {
    EVBUS_PENDING_REDELIVER, /* run the handler again */
    EVBUS_PENDING_DEADLETTER, /* the dead-letter write failed; try again */
    EVBUS_PENDING_ACK         /* the ack failed; try again */
} evbus_pending_kind_t;

typedef struct evbus_pending {
    uint64_t due_ms;
    evbus_pending_kind_t kind;
    struct evbus_sub *sub;
    evbus_msg_t msg;
    evbus_event_t *event; /* decoded event, owned; NULL if undecodable */
    int attempt;          /* attempts made so far */
    int prev_delay_ms;
    uint64_t first_ms;    /* when the first attempt ran */
    char *reason;         /* dead-letter reason (DEADLETTER kind) */
} evbus_pending_t;

typedef struct evbus_heap {
    evbus_pending_t **items;
    size_t len, cap;
} evbus_heap_t;

int evbus__heap_push(evbus_heap_t *h, evbus_pending_t *p);
evbus_pending_t *evbus__heap_peek(const evbus_heap_t *h);
evbus_pending_t *evbus__heap_pop(evbus_heap_t *h);
/* Moves every entry of sub (all when sub is NULL) into out, which must have
 * room for h->len entries; returns how many. */
size_t evbus__heap_take_sub(evbus_heap_t *h, const struct evbus_sub *sub,
                            evbus_pending_t **out);
void evbus__heap_free(evbus_heap_t *h);

/* ---- publish completions waiting for the application thread */
typedef struct evbus_completion {
    struct evbus_completion *next;
    evbus_event_t *event;
    evbus_delivery_cb cb;
    void *opaque;
    int err;
    struct evbus *bus;
} evbus_completion_t;

/* ---- subscription */
typedef struct evbus_sub_counters {
    _Atomic uint64_t delivered, acked, retried, dead_lettered, undecodable;
    _Atomic uint64_t handler_us_sum;
    _Atomic uint64_t handler_us_hist[EVBUS_HIST_BUCKETS];
} evbus_sub_counters_t;

struct evbus_sub {
    struct evbus *bus;
    char *topic, *group, *dlq_topic;
    evbus_retry_policy_t retry;
    int max_inflight;
    evbus_handler_fn fn;
    void *opaque;
    void *bsub;         /* the backend's handle */
    int inflight;       /* fetched and not settled (poller thread only) */
    atomic_bool removed;  /* evbus_unsubscribe asked for it to go */
    atomic_bool detached; /* the poller has let go of it */
    bool free_on_reap;    /* nobody waits for it: the reaper frees it */
    evbus_sub_counters_t c;
    struct evbus_sub *next;
};

/* ---- the bus. The host is the first member so backends' host pointers
 * convert back to the bus. */
struct evbus_host {
    struct evbus *bus;
};

struct evbus {
    struct evbus_host host;
    const evbus_backend_t *be;
    void *priv;
    evbus_url_t *url;
    char scheme[32];

    int close_timeout_ms;
    size_t max_event_bytes;

    pthread_mutex_t mu;      /* subs list, completions, state below */
    pthread_cond_t cv;       /* flush waiters and unsubscribe waiters */
    struct evbus_sub *subs;
    evbus_completion_t *done_head, *done_tail;

    atomic_bool closing;
    atomic_bool stop;
    atomic_bool polling;     /* a thread is inside evbus_poll */
    atomic_bool sleeping;    /* the poller waits on wake_fd */
    _Atomic uint64_t gen;    /* bumped by evbus_host_notify */
    int wake_fd;             /* eventfd the poller sleeps on */

    _Atomic long pending_pub; /* publish_async calls not completed */
    _Atomic int first_async_err;

    evbus_heap_t heap;       /* poller thread only */

    _Atomic uint64_t published, publish_failed, faults_injected;
};

/* ---- publishing (publish.c) */
/* EVBUS_OK for a usable topic name: 1..249 bytes, no spaces or control
 * characters (every broker accepts those). */
int evbus__check_topic(const char *topic);
int evbus__publish_encoded(evbus_t *bus, const char *topic,
                           const evbus_event_t *ev, const void *payload,
                           size_t len);
/* Runs queued delivery callbacks on the calling thread; returns how many. */
int evbus__run_completions(evbus_t *bus);

/* A publish started by the library itself (the outbox relay) that wants
 * its outcome at once and per event, without evbus_publish_async's event
 * copy and callback queue. The caller owns the ticket and keeps it alive
 * until done runs; the core fills in bus. */
typedef struct evbus__ticket {
    evbus_t *bus;
    /* Called exactly once, on any thread (a broker client's included),
     * with EVBUS_OK or the error. Must be short and must not call back
     * into the bus. */
    void (*done)(struct evbus__ticket *t, int err);
} evbus__ticket_t;

/* Publishes json, which must be ev's encoding as evbus_event_to_json made
 * it (so already validated): no validation, no re-encoding. ev is what
 * backends read attributes from (partition key, binary modes); it may be
 * NULL on a bus with EVBUS_FEAT_BYTES_ONLY. Returns
 * EVBUS_OK when started (t->done will run), or an error and it will not.
 * Any thread, like evbus_publish_async. */
int evbus__publish_encoded_async(evbus_t *bus, const char *topic,
                                 const evbus_event_t *ev, const void *json,
                                 size_t len, evbus__ticket_t *t);

/* Asks the backend to send whatever its client holds back (linger) without
 * waiting for any outcome. Any thread. */
void evbus__nudge(evbus_t *bus);

/* ---- dispatch (dispatch.c) */
/* The bus whose poll role the calling thread holds, or NULL. Thread-local,
 * so asking "am I the poller?" races with nobody. */
extern _Thread_local struct evbus *evbus__polling_bus;
void evbus__release_all(evbus_t *bus);
void evbus__reap(evbus_t *bus);
void evbus__sub_free(struct evbus_sub *sub);

/* ---- dead letters (deadletter.c) */
/* Writes ev (or, when ev is NULL, the raw payload wrapped in an
 * evbus.deadletter.undecodable event) to sub's dead-letter topic with the
 * reason and attempt count. Returns EVBUS_OK or the publish error. */
int evbus__deadletter(struct evbus_sub *sub, const evbus_event_t *ev,
                      const evbus_msg_t *msg, const char *reason,
                      int attempts);

/* ---- metrics (metrics.c) */
void evbus__hist_observe(evbus_sub_counters_t *c, uint64_t us);

#endif /* EVBUS_CORE_INTERNAL_H */
