/*
 * Worker threads of one subscription with concurrency > 1. The poll-role
 * holder decides which jobs start (per-key order, attempts recorded) and
 * hands them over; workers run handlers and hand the answers back.
 *
 * While the poller sleeps with nothing to do, it lends its right to act on
 * answers (bus->work_mu, see internal.h): a worker that finishes then
 * settles its own answer and the others waiting, records and starts the
 * next jobs, and runs one of them itself, without two thread wake-ups
 * through the poller per event. Fetching stays on the polling thread, and
 * backends still see one thread at a time.
 */
#ifndef EVBUS_CORE_WORKERS_H
#define EVBUS_CORE_WORKERS_H

#include <pthread.h>
#include <stdbool.h>

#include "lanes.h"

struct evbus_sub;

typedef struct evbus_pool {
    pthread_mutex_t mu;
    pthread_cond_t work_cv;  /* workers: a job was handed over, or stop */
    pthread_cond_t done_cv;  /* a job finished (for whoever waits) */
    evbus_job_t *ready_head, *ready_tail; /* handed over, not yet taken */
    evbus_job_t *done_head, *done_tail;   /* answered, not yet collected */
    pthread_t *threads;
    int nthreads;
    int idle;                /* workers waiting in work_cv */
    bool done_waiter;        /* someone waits in done_cv */
    bool acting;             /* a worker acts on answers for the poller
                                and takes what is handed back meanwhile */
    bool stop;
    struct evbus_sub *sub;
} evbus_pool_t;

/* Starts n workers for sub. EVBUS_OK or EVBUS_ENOMEM (nothing started). */
int evbus__pool_start(evbus_pool_t *p, struct evbus_sub *sub, int n);
/* Hands a list of jobs over (their attempts are recorded). */
void evbus__pool_assign(evbus_pool_t *p, evbus_job_t *jobs);
/* Takes the answered jobs (a list, possibly empty). */
evbus_job_t *evbus__pool_take_done(evbus_pool_t *p);
/* A worker starts acting on answers for the poller: answers handed back
 * meanwhile wake nobody, the acting worker takes them. */
void evbus__pool_begin_acting(evbus_pool_t *p);
/* The answers handed back since the last take; when there are none the
 * acting worker is done (NULL, and later answers wake the poller again). */
evbus_job_t *evbus__pool_take_done_or_end(evbus_pool_t *p);
/* The acting worker stops acting; true when answers are left for the
 * poller (the caller wakes it). */
bool evbus__pool_end_acting(evbus_pool_t *p);
/* Waits until a job is answered (returns at once if one is). */
void evbus__pool_wait_done(evbus_pool_t *p);
/* Stops and joins the workers; every job handed over must have been
 * collected. No-op for a pool that never started. */
void evbus__pool_stop(evbus_pool_t *p);

#endif
