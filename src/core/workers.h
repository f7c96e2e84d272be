/*
 * Worker threads of one subscription with concurrency > 1. The poll-role
 * holder decides which jobs start (per-key order, attempts recorded) and
 * hands them over; workers only run handlers and hand the answers back.
 * Fetching, recording, settling and dead-lettering stay on the polling
 * thread, so backends see one thread as before.
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
    bool stop;
    struct evbus_sub *sub;
} evbus_pool_t;

/* Starts n workers for sub. EVBUS_OK or EVBUS_ENOMEM (nothing started). */
int evbus__pool_start(evbus_pool_t *p, struct evbus_sub *sub, int n);
/* Hands a list of jobs over (their attempts are recorded). */
void evbus__pool_assign(evbus_pool_t *p, evbus_job_t *jobs);
/* Takes the answered jobs (a list, possibly empty). */
evbus_job_t *evbus__pool_take_done(evbus_pool_t *p);
/* Waits until a job is answered (returns at once if one is). */
void evbus__pool_wait_done(evbus_pool_t *p);
/* Stops and joins the workers; every job handed over must have been
 * collected. No-op for a pool that never started. */
void evbus__pool_stop(evbus_pool_t *p);

#endif
