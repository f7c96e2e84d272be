/* Worker threads of a subscription (see workers.h). */
#include <stdlib.h>
#include <string.h>

#include "internal.h"

static void *worker_main(void *arg)
{
    evbus_pool_t *p = arg;
    evbus_sub_t *sub = p->sub;
    pthread_mutex_lock(&p->mu);
    for (;;) {
        while (!p->ready_head && !p->stop)
            pthread_cond_wait(&p->work_cv, &p->mu);
        if (!p->ready_head)
            break; /* stop, and nothing left to run */
        evbus_job_t *job = p->ready_head;
        p->ready_head = job->next;
        if (!p->ready_head)
            p->ready_tail = NULL;
        pthread_mutex_unlock(&p->mu);
        job->result = evbus__run_handler(sub, job->event, job->ctx.attempt);
        pthread_mutex_lock(&p->mu);
        job->next = NULL;
        if (p->done_tail)
            p->done_tail->next = job;
        else
            p->done_head = job;
        p->done_tail = job;
        pthread_cond_broadcast(&p->done_cv);
        /* Wake the poller; notify takes no lock of ours. */
        evbus_host_notify(&sub->bus->host);
    }
    pthread_mutex_unlock(&p->mu);
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
    evbus_job_t *last = jobs;
    while (last->next)
        last = last->next;
    pthread_mutex_lock(&p->mu);
    if (p->ready_tail)
        p->ready_tail->next = jobs;
    else
        p->ready_head = jobs;
    p->ready_tail = last;
    pthread_cond_broadcast(&p->work_cv);
    pthread_mutex_unlock(&p->mu);
}

evbus_job_t *evbus__pool_take_done(evbus_pool_t *p)
{
    pthread_mutex_lock(&p->mu);
    evbus_job_t *done = p->done_head;
    p->done_head = p->done_tail = NULL;
    pthread_mutex_unlock(&p->mu);
    return done;
}

void evbus__pool_wait_done(evbus_pool_t *p)
{
    pthread_mutex_lock(&p->mu);
    while (!p->done_head)
        pthread_cond_wait(&p->done_cv, &p->mu);
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
