/* The relay object, shared by relay.c (life cycle, thread) and
 * relay_round.c (one round: fetch, publish, settle, purge). Internal. */
#ifndef EVBUS_PATTERNS_RELAY_INTERNAL_H
#define EVBUS_PATTERNS_RELAY_INTERNAL_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "evbus/outbox.h"
#include "handoff.h"
#include "relay_lock.h"

/* What became of one fetched row of a batch. */
typedef enum {
    ROW_SENT,  /* handed to publish_async; its slot says how it ended */
    ROW_OK,    /* the broker accepted it */
    ROW_PARK,  /* can never be published; reason in park_why */
    ROW_FAILED /* not accepted; published again later */
} row_state_t;

typedef struct row {
    int64_t seq;
    row_state_t state;
    char *park_why; /* malloc'd while the row is being parked */
} row_t;

/* Batches a round keeps in flight: while the broker works on one, the
 * relay reads and sends the next (waiting for each batch in turn cost a
 * third of the throughput into Redis). */
#define RELAY_WINDOW 4

struct evbus_relay {
    evbus_t *bus;
    evbus_relay_opts_t o;
    evbus_retry_policy_t backoff; /* while publishing fails */
    sqlite3 *db;
    sqlite3_stmt *fetch, *load_mark, *save_mark, *park, *del_upto;
    sqlite3_stmt *purge_scan, *purge_del, *begin, *commit, *rollback;
    relay_lock_t lock;
    handoff_t *handoff;    /* events from outbox_add in this process */
    atomic_bool active;    /* holds the lock */
    int64_t mark;          /* every row with seq <= mark is settled */
    int cur_batch;         /* batch size now: shrinks after failures */
    int64_t next_purge_ms; /* monotonic */
    row_t *rows;           /* RELAY_WINDOW x batch_size scratch rows */

    pthread_mutex_t run_mu; /* one round at a time */

    pthread_mutex_t mu; /* thread control */
    pthread_cond_t cv;
    pthread_t thread;
    bool running, stop, notified;

    atomic_uint_fast64_t published, failed, parked, purged, handed_off;
};

/* Prepares the round's statements on r->db. */
int evbus__relay_prepare(evbus_relay_t *r, char *why, size_t n);
/* Finalizes them. */
void evbus__relay_finalize(evbus_relay_t *r);
/* One round of up to max events (see evbus_relay_run_once). Caller holds
 * run_mu. */
int evbus__relay_round(evbus_relay_t *r, int max);

#endif
