/* Worker threads of a subscription (see workers.h). */
#include <stdlib.h>
#include <string.h>

#include "internal.h"

/* The next job handed over, waiting for one; NULL when stopping. */
static evbus_job_t *take_ready(evbus_pool_t *p)
{
    pthread_mutex_lock(&p->mu);
    while (!p->ready_head && !p->stop) {
        p->idle++;
        pthread_cond_wait(&p->work_cv, &p->mu);
        p->idle--;
    }
    evbus_job_t *job = p->ready_head;
    if (job) {
        p->ready_head = job->next;
        if (!p->ready_head)
            p->ready_tail = NULL;
        job->next = NULL;
    }
    pthread_mutex_unlock(&p->mu);
    return job;
}

/* Queues an answer for the poller. */
static void hand_back(evbus_pool_t *p, evbus_job_t *job)
{
    pthread_mutex_lock(&p->mu);
    job->next = NULL;
    bool first = !p->done_head && !p->acting;
    if (p->done_tail)
        p->done_tail->next = job;
    else
        p->done_head = job;
    p->done_tail = job;
    if (p->done_waiter)
        pthread_cond_broadcast(&p->done_cv);
    pthread_mutex_unlock(&p->mu);
    /* A poller that has not collected the earlier answers yet sees this
     * one too, and an acting worker takes it before it ends: only the
     * first needs to wake the poller. */
    if (first)
        evbus_host_notify(&p->sub->bus->host);
}

static void *worker_main(void *arg)
{
    evbus_pool_t *p = arg;
    evbus_sub_t *sub = p->sub;
    evbus_job_t *job = NULL;
    while (job || (job = take_ready(p))) {
        job->result = evbus__run_handler(sub, job->event, job->ctx.attempt);
        evbus_job_t *next = NULL;
        if (!evbus__workers_answer(sub, job, &next))
            hand_back(p, job);
        job = next; /* started for us while we acted on the answers */
    }
    return NULL;
}

int evbus__pool_start(evbus_pool_t *p, evbus_sub_t *sub, int n)
{
    memset(p, 0, sizeof *p);
    p->sub = sub;
    if (!(p->threads = calloc((size_t)n, sizeof *p->threads)))
        return EVBUS_ENOMEM;
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->work_cv, NULL);
    pthread_cond_init(&p->done_cv, NULL);
    for (; p->nthreads < n; p->nthreads++)
        if (pthread_create(&p->threads[p->nthreads], NULL, worker_main, p)) {
            evbus__pool_stop(p);
            return EVBUS_ENOMEM;
        }
    return EVBUS_OK;
}

void evbus__pool_assign(evbus_pool_t *p, evbus_job_t *jobs)
{
    if (!jobs)
        return;
    int n = 1;
    evbus_job_t *last = jobs;
    for (; last->next; n++)
        last = last->next;
    pthread_mutex_lock(&p->mu);
    if (p->ready_tail)
        p->ready_tail->next = jobs;
    else
        p->ready_head = jobs;
    p->ready_tail = last;
    int wake = n < p->idle ? n : p->idle;
    pthread_mutex_unlock(&p->mu);
    /* One idle worker per job (a broadcast would wake every idle worker
     * for each job, and all but one would go back to sleep), after the
     * unlock so that the woken do not wait for our mutex. Those counted
     * idle wait in work_cv now, so none of them misses it. */
    for (int i = 0; i < wake; i++)
        pthread_cond_signal(&p->work_cv);
}

evbus_job_t *evbus__pool_take_done(evbus_pool_t *p)
{
    pthread_mutex_lock(&p->mu);
    evbus_job_t *done = p->done_head;
    p->done_head = p->done_tail = NULL;
    pthread_mutex_unlock(&p->mu);
    return done;
}

void evbus__pool_begin_acting(evbus_pool_t *p)
{
    pthread_mutex_lock(&p->mu);
    p->acting = true;
    pthread_mutex_unlock(&p->mu);
}

evbus_job_t *evbus__pool_take_done_or_end(evbus_pool_t *p)
{
    pthread_mutex_lock(&p->mu);
    evbus_job_t *done = p->done_head;
    p->done_head = p->done_tail = NULL;
    if (!done)
        p->acting = false;
    pthread_mutex_unlock(&p->mu);
    return done;
}

bool evbus__pool_end_acting(evbus_pool_t *p)
{
    pthread_mutex_lock(&p->mu);
    p->acting = false;
    bool left = p->done_head != NULL;
    pthread_mutex_unlock(&p->mu);
    return left;
}

void evbus__pool_wait_done(evbus_pool_t *p)
{
    pthread_mutex_lock(&p->mu);
    while (!p->done_head) {
        p->done_waiter = true;
        pthread_cond_wait(&p->done_cv, &p->mu);
    }
    p->done_waiter = false;
    pthread_mutex_unlock(&p->mu);
}

void evbus__pool_stop(evbus_pool_t *p)
{
    if (!p->threads)
        return;
    pthread_mutex_lock(&p->mu);
    p->stop = true;
    pthread_cond_broadcast(&p->work_cv);
    pthread_mutex_unlock(&p->mu);
    for (int i = 0; i < p->nthreads; i++)
        pthread_join(p->threads[i], NULL);
    free(p->threads);
    p->threads = NULL;
    pthread_mutex_destroy(&p->mu);
    pthread_cond_destroy(&p->work_cv);
    pthread_cond_destroy(&p->done_cv);
}
