/*
 * kafka:// backend - declarations shared by its files. Nothing here is
 * public; every symbol is hidden by -fvisibility=hidden.
 *
 * One producer per bus (idempotent, a thread serving its delivery reports)
 * and one high-level consumer per (bus, group): a kafka_group_t, shared by
 * every subscription of the bus in that group and subscribed to the union
 * of their topics. Its thread polls the consumer and routes each record to
 * the buffer of its topic's subscription (kafka_sub_t), which fetch()
 * drains. Offsets are stored only for settled work and never past an
 * earlier offset of the same partition that is still open.
 *
 * Threads and locks (in this order; never the other way round):
 *   kafka_bus_t.groups_mu - the bus's list of groups (subscribe and
 *                    unsubscribe only).
 *   kafka_group_t.mu - the group's list of subscriptions and its topic-set
 *                    state; taken by the group's poll thread (routing, the
 *                    rebalance callback) and by subscribe/unsubscribe.
 *                    Never held across rd_kafka_consumer_poll or
 *                    rd_kafka_consumer_close (both run the rebalance
 *                    callback, which takes it).
 *   kafka_sub_t.mu - the buffer, the per-partition state and the offset
 *                    store; taken by the poll thread (new messages,
 *                    rebalances) and by the core's poller (fetch, settle).
 *   kafka_bus_t other fields - immutable after open; the producer handle is
 *                    thread-safe. pub waiters use their own mutex/condvar.
 */
#ifndef EVBUS_KAFKA_INTERNAL_H
#define EVBUS_KAFKA_INTERNAL_H

#include <librdkafka/rdkafka.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "evbus/backend.h"
#include "evbus/evbus.h"
#include "support/clock.h"
#include "support/cond.h"
#include "support/lograte.h"

#define KAFKA_CT_STRUCTURED "application/cloudevents+json"

typedef enum {
    KAFKA_MODE_STRUCTURED = 0, /* value = JSON event (the default) */
    KAFKA_MODE_BINARY = 1      /* value = data, attributes in ce_ headers */
} kafka_mode_t;

/* The per-bus state (priv). */
typedef struct kafka_bus {
    struct kafka_bus *self;       /* first: see kafka_opaque_bus() */
    evbus_host_t *host;
    kafka_mode_t mode;
    int timeout_ms;               /* connect check and health */
    int commit_timeout_ms;        /* longest wait for one commit's answer */
    rd_kafka_t *producer;
    rd_kafka_conf_t *consumer_conf; /* template, duplicated per subscription */
    pthread_t dr_thread;
    bool dr_started;
    atomic_bool dr_stop;
    atomic_bool closing;
    atomic_int space_waiters;     /* publishers waiting for queue room */
    atomic_ulong app_polls;       /* reports served by publishing threads */
    _Atomic(evbus_publish_done_fn) usual_done; /* see kafka_produce.c */
    pthread_mutex_t mu;           /* only for the condvar below */
    pthread_cond_t cv;            /* queue room / async completions */
    pthread_mutex_t groups_mu;    /* guards groups */
    struct kafka_group *groups;   /* consumers, one per group id */
} kafka_bus_t;

/* ------------------------------------------------------------- consumer */

#define KAFKA_BUF_HIGH 20000   /* a subscription's buffer is full here */
#define KAFKA_BUF_LOW 5000     /* and has room again here */
#define KAFKA_POLL_BATCH 512   /* records taken per poll round */

typedef enum {
    KMSG_BUFFERED = 0, /* waiting in the buffer for fetch() */
    KMSG_HANDED,       /* the core holds it */
    KMSG_ACKED,        /* settled ACK, waiting for earlier offsets */
    KMSG_RELEASED      /* given back: blocks the watermark until restart */
} kafka_msg_state_t;

typedef struct kafka_part kafka_part_t;

/* One consumed record; the message's cookie. */
typedef struct kafka_msg {
    struct kafka_msg *next_ready; /* its partition's buffer link */
    struct kafka_msg *next_part;  /* partition list link, offset order */
    kafka_part_t *part;
    rd_kafka_message_t *rkm;      /* payload lives here until settled */
    int64_t offset;
    kafka_msg_state_t state;
    evbus_event_t *event;         /* binary-mode decode, handed to the core */
    char *decode_error;           /* why the record is not an event */
    /* Its retry context as last recorded (or read from the commit
     * metadata of a previous owner); reported by fetch. */
    int attempts;
    int prev_delay_ms;
    int64_t first_ms;
    bool structured; /* evbus__kafka_wire_structured, where it was read */
    bool exact; /* carried as an exact metadata entry */
    bool started; /* record_attempts saw it: a handler ran or runs */
} kafka_msg_t;

/* An exact entry read from the committed metadata at assignment, for a
 * record not fetched yet (see kafka_attempts.c). */
typedef struct kafka_prior {
    int64_t offset;
    int attempts;
    int prev_delay_ms;
    int64_t first_ms;
} kafka_prior_t;

/* What this member knows about one assigned partition. A partition that is
 * revoked is detached and lives on only while the core holds messages of
 * it; their settles then store nothing. */
struct kafka_part {
    int32_t partition;
    bool revoked;
    int refs;                    /* records pointing here, +1 while attached */
    int handed;                  /* records the core holds */
    kafka_msg_t *head, *tail;    /* records not yet popped, offset order */
    int nexact;                  /* of them, exact and not acked: what a
                                    commit's metadata lists (the walk stops
                                    once it has found them all) */
    /* Its buffered records, offset order, and its place in the sub's ring
     * of partitions that have some (fetch takes a slice of each in turn). */
    kafka_msg_t *ready_head, *ready_tail;
    struct kafka_part *next_rr;
    bool in_rr;
    /* Commits and attempts (kafka_attempts.c). */
    int64_t commit_off;   /* L: next offset to consume, -1 unknown */
    bool commit_dirty;    /* L or the metadata changed since sent */
    int64_t window_end;   /* W: records up to it may have started */
    int64_t window_prev;  /* W before an unsent widening, else -2 */
    int64_t suspect_end;  /* a previous owner's W (suspects) */
    int64_t max_started;  /* highest offset handed to a handler, or -1 */
    kafka_prior_t *prior; /* the previous owner's exact entries */
    int nprior;
};

struct kafka_group;

/* One evbus subscription: a topic of a group's consumer. */
typedef struct kafka_sub {
    kafka_bus_t *kb;
    struct kafka_group *g;       /* the consumer it belongs to */
    struct kafka_sub *next;      /* g->subs link (g->mu) */
    char *topic, *group;
    rd_kafka_t *rk;              /* g->rk */
    bool rewind;                 /* g->mu: seek its partitions to the
                                    committed offsets before routing to it */

    pthread_mutex_t mu;
    pthread_cond_t settled_cv;   /* a settle happened (revoke waits) */
    kafka_part_t *rr_head, *rr_tail; /* partitions with buffered records */
    size_t ready_len;                /* buffered records, all partitions */
    kafka_part_t **parts;        /* attached partitions by id */
    size_t nparts;
    bool commits_dirty;          /* some part has commit_dirty */
    pthread_cond_t room_cv;      /* fetch() drained a full buffer */
    bool room_waiting;           /* the poll thread waits on room_cv */
    bool leaving;                /* unsubscribing: stop waiting for room */
    bool paused;                 /* its partitions are paused (g->mu) */
    long long full_since;        /* poll thread only: buffer full since */
    evbus__lograte_t meta_full;  /* s->mu: exact entries over the budget */
    struct kafka_msg *done;      /* s->mu: settled records the poll thread
                                    frees (evbus__kafka_sub_sweep) */
} kafka_sub_t;

/* The consumer of one (bus, group id). */
typedef struct kafka_group {
    kafka_bus_t *kb;             /* first: see kafka_opaque_bus() */
    struct kafka_group *next;    /* kb->groups link (kb->groups_mu) */
    char *id;
    rd_kafka_t *rk;
    pthread_t thread;
    bool thread_started;
    atomic_bool stop;

    pthread_mutex_t commit_mu; /* one commit at a time: taken before
                                  mu and every kafka_sub_t.mu, so that
                                  metadata reaches the broker in the
                                  order it was built */
    evbus__lograte_t commit_rate; /* commit_mu: failures logged (a
                                     rebalance fails thousands) */
    long long next_commit;     /* poll thread: periodic commit due */
    bool joining;              /* g->mu: subscribed, no assignment yet */
    long long joined_at;       /* g->mu: when that subscribe was made */
    long long changed_at;      /* g->mu: last change of the topic set */

    pthread_mutex_t mu;
    pthread_cond_t cv;           /* waiting_on changed */
    kafka_sub_t *subs;
    int nsubs;
    kafka_sub_t *waiting_on;     /* the poll thread waits for its fetch() */
    char **applied;              /* topics given to rd_kafka_subscribe */
    int napplied;
    bool topics_changed;         /* subs differ from applied */
    long long shrink_at;         /* apply a smaller topic set from then */
    long long retry_at;          /* after a failed rd_kafka_subscribe */
} kafka_group_t;

/* ------------------------------------------------------------- helpers */

/* EVBUS_OK when topic is a legal Kafka topic name (1-249 characters of
 * [A-Za-z0-9._-]), else EVBUS_EINVAL. */
int evbus__kafka_topic_check(const char *topic);

/* rd_kafka error -> evbus error code. */
int evbus__kafka_map_err(rd_kafka_resp_err_t err);

/* The bus behind a handle's opaque: a kafka_bus_t (producer) or a
 * kafka_group_t (consumer); both start with a kafka_bus_t pointer. */
static inline kafka_bus_t *kafka_opaque_bus(void *opaque)
{
    return opaque ? *(kafka_bus_t **)opaque : NULL;
}

/* Routes librdkafka log lines and client errors through evbus_host_log
 * (the handle's opaque must be set, see kafka_opaque_bus). */
void evbus__kafka_set_log_callbacks(rd_kafka_conf_t *conf);

/* ------------------------------------------------------------- wire */

/* Headers for a binary-mode record of ev (ce_* attributes, content-type).
 * Returns a new list the caller owns, or NULL when out of memory. */
rd_kafka_headers_t *evbus__kafka_wire_binary_headers(const evbus_event_t *ev);

/*
 * Classifies a consumed record by the CloudEvents Kafka binding:
 *   content-type application/cloudevents*  -> structured: *event = NULL,
 *                                             the core decodes the value
 *   a ce_specversion header                -> binary: *event is built
 *   neither (Dapr, other producers)        -> the value is decoded as a
 *                                             bare JSON event by the core
 * On a record that cannot be an event returns EVBUS_EDECODE with the reason
 * in *why (malloc'd, caller frees). Otherwise EVBUS_OK.
 */
int evbus__kafka_wire_classify(const rd_kafka_message_t *rkm,
                               evbus_event_t **event, char **why);
/* Is a record with headers h (NULL: none) in structured mode, one event
 * (content-type application/cloudevents, not -batch)? Then classify
 * builds nothing: the core decodes the value. Thread-safe; h is read. */
bool evbus__kafka_wire_structured(rd_kafka_headers_t *h);
/* The same for a record's value and headers (h NULL = no headers), without
 * a consumed message: what the classifier and the fuzz target call.
 * Thread-safe; h is only read. */
int evbus__kafka_wire_decode(const void *value, size_t len,
                             rd_kafka_headers_t *h, evbus_event_t **event,
                             char **why);

/* ------------------------------------------------------------- producer */

int evbus__kafka_producer_open(kafka_bus_t *kb, rd_kafka_conf_t *pconf,
                               char *errstr, size_t n);
void evbus__kafka_producer_close(kafka_bus_t *kb);
int evbus__kafka_publish(void *priv, const char *topic, const evbus_event_t *ev,
                         const void *payload, size_t len);
int evbus__kafka_publish_async(void *priv, const char *topic,
                               const evbus_event_t *ev, const void *payload,
                               size_t len, evbus_publish_done_fn done,
                               void *token);
int evbus__kafka_flush(void *priv, int timeout_ms);

/* ------------------------------------------------------------- consumer */

/* Frees the records s settled since the last sweep: on the poll thread,
 * which allocated them and had librdkafka parse their headers. */
void evbus__kafka_sub_sweep(kafka_sub_t *s);

/* kafka_consume.c: one subscription's buffer, partitions and offsets. */
kafka_sub_t *evbus__kafka_sub_new(kafka_bus_t *kb, const char *topic,
                                  const char *group);
void evbus__kafka_sub_free(kafka_sub_t *s);
/* The attached state of partition id, created on first use; NULL when
 * out of memory. s->mu held. */
kafka_part_t *evbus__kafka_part_get(kafka_sub_t *s, int32_t id);
/* Waits (bounded) until the core settled every record it holds of the
 * partitions of s->topic in list. s->mu not held. */
void evbus__kafka_sub_wait_for_settles(
    kafka_sub_t *s, const rd_kafka_topic_partition_list_t *list);
/* Detaches the partitions of s->topic in list (NULL: all). s->mu held. */
void evbus__kafka_sub_revoke_locked(
    kafka_sub_t *s, const rd_kafka_topic_partition_list_t *list);
/* Appends records of s->topic to the buffer (takes them). s->mu not held. */
void evbus__kafka_sub_buffer(kafka_sub_t *s, rd_kafka_message_t **batch, int n);
/* At unsubscribe: stores what is safe, lets go of the rest (unacked records
 * are read again by the next owner) and detaches every partition. */
void evbus__kafka_sub_let_go(kafka_sub_t *s);
size_t evbus__kafka_sub_ready_len(kafka_sub_t *s);

/* kafka_attempts.c: commits carrying the attempts (see there). */
/* Commit metadata as this backend writes it. */
typedef struct kafka_meta {
    int64_t window;   /* -1 none */
    kafka_prior_t *e; /* malloc'd, the caller frees it */
    int n;
} kafka_meta_t;
/* Parses len bytes of commit metadata (from the broker: any bytes).
 * Returns true and fills *m for this backend's format; false for
 * anything else (another client's metadata, garbage), *m then empty.
 * Thread-safe. */
bool evbus__kafka_meta_parse(const char *s, size_t len, kafka_meta_t *m);
/* Adopts the committed offsets and metadata of list (rd_kafka_committed)
 * for the partitions of s->topic: commit offset, suspects, prior exact
 * entries. s->mu held. */
void evbus__kafka_adopt(kafka_sub_t *s,
                        const rd_kafka_topic_partition_list_t *list);
/* What fetch reports and record_attempts records for a buffered record
 * (prior entry or suspect). s->mu held. */
void evbus__kafka_arrival(kafka_sub_t *s, kafka_part_t *p, kafka_msg_t *m);
/* Appends to out the commits of s's attached partitions: the changed
 * ones (only == NULL) or those in only; clean = leaving them for good
 * (no window unless the core still holds records). s->mu held. */
void evbus__kafka_commit_build(kafka_sub_t *s,
                               rd_kafka_topic_partition_list_t *out,
                               const rd_kafka_topic_partition_list_t *only,
                               bool clean);
/* Before a synchronous window commit: widens the windows of the
 * partitions about to need one of their own (see there). s->mu held. */
void evbus__kafka_windows_align(kafka_sub_t *s);
/* Commits list synchronously (g->commit_mu held, no other lock).
 * Returns the librdkafka error (none for nothing to commit). */
rd_kafka_resp_err_t
evbus__kafka_commit_send(kafka_group_t *g, rd_kafka_topic_partition_list_t *l);
/* Logs a failed commit, rate-limited per group, and the recovery after
 * failures (call with no lock held: takes g->commit_mu). */
void evbus__kafka_commit_log(kafka_group_t *g, rd_kafka_resp_err_t err,
                             const char *what);
/* Clean commit of every attached partition of s (unsubscribe). Takes
 * g->commit_mu and s->mu. */
void evbus__kafka_commit_sub(kafka_sub_t *s);
int evbus__kafka_record_attempts(void *priv, void *bsub,
                                 evbus_msg_t *const *msgs, int n);

/* kafka_group.c: the consumers. */
int evbus__kafka_subscribe(void *priv, const char *topic, const char *group,
                           void **bsub, char *errstr, size_t n);
void evbus__kafka_unsubscribe(void *priv, void *bsub);
int evbus__kafka_fetch(void *priv, void *bsub, evbus_msg_t *out, int max);
int evbus__kafka_settle(void *priv, void *bsub, evbus_msg_t *msg,
                        evbus_settle_t how, int delay_ms);
/* Ends every consumer still open (bus close). */
void evbus__kafka_groups_close(kafka_bus_t *kb);

#endif /* EVBUS_KAFKA_INTERNAL_H */
