/*
 * Jobs and per-key lanes for subscriptions with concurrency > 1.
 *
 * A job is one delivery waiting for, or running on, a worker. Jobs with the
 * same partitionkey share a lane: a lane runs one job at a time, in the
 * order the backend delivered them, so events of one key never run at once
 * and never overtake each other. Jobs without a key share the keyless lane,
 * which runs any number at once. Runnable lanes wait in a FIFO, so keys get
 * their turn in arrival order.
 *
 * Used by the poll-role holder only; no locking.
 */
#ifndef EVBUS_CORE_LANES_H
#define EVBUS_CORE_LANES_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "evbus/backend.h"
#include "evbus/evbus.h"
#include "retry_ctx.h"

typedef struct evbus_lane evbus_lane_t;

typedef struct evbus_job {
    struct evbus_job *next;
    evbus_msg_t msg;
    evbus_event_t *event;
    evbus_retry_ctx_t ctx;
    evbus_lane_t *lane;
    evbus_result_t result; /* filled by the worker */
} evbus_job_t;

struct evbus_lane {
    char *key;               /* NULL: the keyless lane */
    uint64_t hash;
    evbus_job_t *head, *tail; /* waiting, in delivery order */
    bool running;            /* keyed lanes: a job of this key started */
    bool runnable;           /* in the runnable FIFO */
    evbus_lane_t *next_runnable, *next_in_bucket;
};

typedef struct evbus_lanes {
    evbus_lane_t **buckets;
    size_t nbuckets, nlanes;
    evbus_lane_t *run_head, *run_tail;
    evbus_lane_t keyless;
    size_t waiting;          /* jobs not started */
    size_t startable;        /* of them, how many could start now: one
                                per runnable key, every keyless one */
} evbus_lanes_t;

void evbus__lanes_init(evbus_lanes_t *l);
/* Frees the table; every job must have been taken out first. */
void evbus__lanes_free(evbus_lanes_t *l);
/* Queues job behind the jobs of its key. EVBUS_OK or EVBUS_ENOMEM. */
int evbus__lanes_push(evbus_lanes_t *l, evbus_job_t *job);
/* The next job that may start now (its key is marked running), or NULL. */
evbus_job_t *evbus__lanes_next(evbus_lanes_t *l);
/* A started job finished: the next job of its key may start. */
void evbus__lanes_done(evbus_lanes_t *l, evbus_job_t *job);
/* Takes every waiting job out (a list, delivery order within a key). */
evbus_job_t *evbus__lanes_drain(evbus_lanes_t *l);

#endif
