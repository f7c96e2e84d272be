/* Per-key lanes of jobs (see lanes.h). */
#include <stdlib.h>
#include <string.h>

#include "lanes.h"

static uint64_t fnv1a(const char *s)
{
    uint64_t h = 1469598103934665603ULL;
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 1099511628211ULL;
    return h;
}

void evbus__lanes_init(evbus_lanes_t *l)
{
    memset(l, 0, sizeof *l);
}

void evbus__lanes_free(evbus_lanes_t *l)
{
    free(l->buckets);
    memset(l, 0, sizeof *l);
}

static void make_runnable(evbus_lanes_t *l, evbus_lane_t *lane)
{
    if (lane->runnable)
        return;
    if (lane->key)
        l->startable++;
    lane->runnable = true;
    lane->next_runnable = NULL;
    if (l->run_tail)
        l->run_tail->next_runnable = lane;
    else
        l->run_head = lane;
    l->run_tail = lane;
}

static int grow(evbus_lanes_t *l)
{
    size_t n = l->nbuckets ? l->nbuckets * 2 : 64;
    evbus_lane_t **b = calloc(n, sizeof *b);
    if (!b)
        return EVBUS_ENOMEM;
    for (size_t i = 0; i < l->nbuckets; i++)
        for (evbus_lane_t *x = l->buckets[i], *next; x; x = next) {
            next = x->next_in_bucket;
            x->next_in_bucket = b[x->hash & (n - 1)];
            b[x->hash & (n - 1)] = x;
        }
    free(l->buckets);
    l->buckets = b;
    l->nbuckets = n;
    return EVBUS_OK;
}

/* The lane of key, created when missing. NULL when out of memory. */
static evbus_lane_t *lane_of(evbus_lanes_t *l, const char *key)
{
    if (!key)
        return &l->keyless;
    uint64_t h = fnv1a(key);
    if (l->nbuckets)
        for (evbus_lane_t *x = l->buckets[h & (l->nbuckets - 1)]; x;
             x = x->next_in_bucket)
            if (x->hash == h && strcmp(x->key, key) == 0)
                return x;
    if (l->nlanes >= l->nbuckets && grow(l) != EVBUS_OK)
        return NULL;
    evbus_lane_t *x = calloc(1, sizeof *x);
    if (!x || !(x->key = strdup(key))) {
        free(x);
        return NULL;
    }
    x->hash = h;
    x->next_in_bucket = l->buckets[h & (l->nbuckets - 1)];
    l->buckets[h & (l->nbuckets - 1)] = x;
    l->nlanes++;
    return x;
}

/* Forgets a keyed lane with nothing waiting and nothing running. */
static void lane_drop(evbus_lanes_t *l, evbus_lane_t *lane)
{
    if (!lane->key || lane->head || lane->running || lane->runnable)
        return;
    evbus_lane_t **pp = &l->buckets[lane->hash & (l->nbuckets - 1)];
    while (*pp != lane)
        pp = &(*pp)->next_in_bucket;
    *pp = lane->next_in_bucket;
    l->nlanes--;
    free(lane->key);
    free(lane);
}

int evbus__lanes_push(evbus_lanes_t *l, evbus_job_t *job)
{
    evbus_lane_t *lane =
        lane_of(l, job->event ? evbus_event_ext(job->event, "partitionkey")
                              : NULL);
    if (!lane)
        return EVBUS_ENOMEM;
    job->lane = lane;
    job->next = NULL;
    if (lane->tail)
        lane->tail->next = job;
    else
        lane->head = job;
    lane->tail = job;
    l->waiting++;
    if (!lane->key)
        l->startable++;
    if (!lane->running)
        make_runnable(l, lane);
    return EVBUS_OK;
}

evbus_job_t *evbus__lanes_next(evbus_lanes_t *l)
{
    evbus_lane_t *lane = l->run_head;
    if (!lane)
        return NULL;
    l->run_head = lane->next_runnable;
    if (!l->run_head)
        l->run_tail = NULL;
    lane->runnable = false;
    evbus_job_t *job = lane->head;
    lane->head = job->next;
    if (!lane->head)
        lane->tail = NULL;
    job->next = NULL;
    l->waiting--;
    l->startable--;
    if (lane->key)
        lane->running = true; /* its next job waits for this one */
    else if (lane->head)
        make_runnable(l, lane); /* keyless: the rest may start too */
    return job;
}

void evbus__lanes_done(evbus_lanes_t *l, evbus_job_t *job)
{
    evbus_lane_t *lane = job->lane;
    job->lane = NULL;
    if (!lane || !lane->key)
        return;
    lane->running = false;
    if (lane->head)
        make_runnable(l, lane);
    else
        lane_drop(l, lane);
}

evbus_job_t *evbus__lanes_drain(evbus_lanes_t *l)
{
    evbus_job_t *all = NULL, **tail = &all;
    while (l->run_head) { /* every lane with waiting jobs is runnable... */
        evbus_lane_t *lane = l->run_head;
        l->run_head = lane->next_runnable;
        lane->runnable = false;
    }
    l->run_tail = NULL;
    /* ...except keyed lanes whose current job runs: walk them all. */
    evbus_lane_t *lanes[2] = {&l->keyless, NULL};
    for (size_t b = 0; b <= l->nbuckets; b++) {
        evbus_lane_t *x = b == 0 ? lanes[0] : l->buckets[b - 1];
        while (x) {
            evbus_lane_t *next = b == 0 ? NULL : x->next_in_bucket;
            if (x->head) {
                *tail = x->head;
                tail = &x->tail->next;
                for (evbus_job_t *j = x->head; j; j = j->next)
                    j->lane = NULL;
                x->head = x->tail = NULL;
            }
            lane_drop(l, x);
            x = next;
        }
    }
    l->waiting = l->startable = 0;
    return all;
}
