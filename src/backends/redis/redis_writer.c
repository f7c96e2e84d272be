/*
 * The writer thread: one per bus, with its own connection. It pipelines
 * whatever is queued - publish_async XADDs and the subscriptions' batched
 * XACK / release commands - writes them in one go and then reads the
 * replies in order, so throughput is bounded by the server, not by round
 * trips.
 *
 * Failure rules:
 *   - a publish whose reply did not arrive (connection lost, timeout) is
 *     completed with EVBUS_ECONN / EVBUS_ETIMEDOUT: its outcome is unknown,
 *     so it is never reported as a success;
 *   - a publish still queued while the server is unreachable waits for the
 *     reconnect until command_timeout_ms after it was queued, then fails;
 *   - acks and releases are never dropped on a connection failure: they go
 *     back to their subscription and are sent after the reconnect.
 * Reconnects back off exponentially (50 ms doubling up to reconnect_max_ms).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "redis_internal.h"

/* Most jobs sent in one pipeline round. */
#define WRITER_BATCH 2048

void evbus__redis_job_free(rds_job_t *j)
{
    if (j->cmd)
        redisFreeCommand(j->cmd);
    free(j);
}

int evbus__redis_writer_push(rds_bus_t *b, rds_job_t *job)
{
    rds_writer_t *w = &b->w;
    job->next = NULL;
    pthread_mutex_lock(&w->mu);
    if (w->stop) {
        pthread_mutex_unlock(&w->mu);
        return EVBUS_ECLOSED;
    }
    if (job->kind == RDS_JOB_PUB) {
        if (w->queued_pubs + w->busy_pubs >= b->o.max_queued) {
            pthread_mutex_unlock(&w->mu);
            return EVBUS_EAGAIN;
        }
        w->queued_pubs++;
    }
    if (w->tail)
        w->tail->next = job;
    else
        w->head = job;
    w->tail = job;
    if (w->waiting)
        pthread_cond_signal(&w->work_cv);
    pthread_mutex_unlock(&w->mu);
    return EVBUS_OK;
}

/* Puts jobs (a list) back at the front of the queue. w->mu held. */
static void requeue_front(rds_writer_t *w, rds_job_t *list, rds_job_t *last)
{
    if (!list)
        return;
    last->next = w->head;
    w->head = list;
    if (!w->tail)
        w->tail = last;
}

/* Removes publishes that waited past their deadline. w->mu held. */
static rds_job_t *take_expired(rds_writer_t *w, uint64_t now)
{
    rds_job_t *expired = NULL, **pp = &w->head, *last = NULL;
    while (*pp) {
        rds_job_t *j = *pp;
        if (j->kind == RDS_JOB_PUB && j->deadline_ms <= now) {
            *pp = j->next;
            j->next = expired;
            expired = j;
            w->queued_pubs--;
        } else {
            last = j;
            pp = &j->next;
        }
    }
    w->tail = last;
    return expired;
}

/* Completes publishes with err and frees them; returns how many. */
static long long fail_pubs(rds_job_t *list, int err)
{
    long long n = 0;
    while (list) {
        rds_job_t *next = list->next;
        if (list->kind == RDS_JOB_PUB) {
            list->done(list->token, err);
            n++;
        } else {
            evbus__redis_sub_unref(list->sub);
        }
        evbus__redis_job_free(list);
        list = next;
    }
    return n;
}

/* Per-job state of one pipeline round. */
typedef struct {
    rds_job_t *job;
    int replies;             /* how many replies belong to it */
    rds_msg_t *acks, *rels;  /* SETTLE: what was sent */
} slot_t;

/* Sends one batch and reads its replies. Returns the number of publishes
 * completed; jobs to send again are returned in *retry (in order). */
static long long run_batch(rds_bus_t *b, slot_t *slots, int n,
                           rds_job_t **retry)
{
    rds_writer_t *w = &b->w;
    redisContext *c = w->c;
    long long completed = 0;
    rds_job_t *rhead = NULL, **rtail = &rhead;
    for (int i = 0; i < n; i++) {
        slot_t *s = &slots[i];
        if (s->job->kind == RDS_JOB_PUB) {
            redisAppendFormattedCommand(c, s->job->cmd, s->job->len);
            s->replies = 1;
        } else {
            s->replies =
                evbus__redis_settle_append(s->job->sub, c, &s->acks, &s->rels);
        }
    }
    int wdone = 0;
    while (!c->err && !wdone)
        if (redisBufferWrite(c, &wdone) != REDIS_OK)
            break;
    int err = EVBUS_OK;
    char why[300] = "";
    if (c->err)
        err = evbus__redis_error(c, NULL, why, sizeof why);
    for (int i = 0; i < n; i++) {
        slot_t *s = &slots[i];
        int jerr = err;
        for (int k = 0; k < s->replies && jerr == EVBUS_OK; k++) {
            redisReply *r = NULL;
            if (redisGetReply(c, (void **)&r) != REDIS_OK || !r) {
                err = jerr = evbus__redis_error(c, NULL, why, sizeof why);
                break;
            }
            if (r->type == REDIS_REPLY_ERROR) {
                char rwhy[300];
                int rc = evbus__redis_error(c, r, rwhy, sizeof rwhy);
                if (s->job->kind == RDS_JOB_PUB) {
                    jerr = rc; /* the server refused: a definite answer */
                    evbus_host_log(b->host, EVBUS_LOG_WARN,
                                   "asynchronous publish refused: %s", rwhy);
                } else {
                    evbus_host_log(b->host, EVBUS_LOG_WARN,
                                   "settling on %s failed: %s",
                                   s->job->sub->topic, rwhy);
                }
            }
            freeReplyObject(r);
            if (jerr != EVBUS_OK && s->job->kind == RDS_JOB_PUB)
                break;
        }
        if (s->job->kind == RDS_JOB_PUB) {
            /* jerr from the connection = no reply = outcome unknown */
            s->job->done(s->job->token, jerr);
            completed++;
            evbus__redis_job_free(s->job);
            continue;
        }
        bool sent = err == EVBUS_OK;
        if (evbus__redis_settle_done(s->job->sub, s->acks, s->rels, sent) &&
            !sent) {
            *rtail = s->job;
            rtail = &s->job->next;
            s->job->next = NULL;
        } else {
            evbus__redis_sub_unref(s->job->sub);
            evbus__redis_job_free(s->job);
        }
    }
    if (err != EVBUS_OK) {
        evbus_host_log(b->host, EVBUS_LOG_WARN,
                       "writer connection lost (%s); publishes without a "
                       "reply were reported as failed; reconnecting",
                       why);
        redisFree(c);
        w->c = NULL;
    }
    *retry = rhead;
    return completed;
}

static void *writer_main(void *arg)
{
    rds_bus_t *b = arg;
    rds_writer_t *w = &b->w;
    evbus__redis_thread_block_sigpipe();
    slot_t *slots = calloc(WRITER_BATCH, sizeof *slots);
    if (!slots)
        return NULL; /* evbus__redis_writer_stop fails what is queued */
    bool was_down = false;
    pthread_mutex_lock(&w->mu);
    while (!w->stop) {
        if (!w->head) {
            w->waiting = true;
            pthread_cond_wait(&w->work_cv, &w->mu);
            w->waiting = false;
            continue;
        }
        if (!w->c) {
            uint64_t now = evbus__mono_ms();
            rds_job_t *expired = take_expired(w, now);
            if (expired) {
                pthread_mutex_unlock(&w->mu);
                fail_pubs(expired, EVBUS_ECONN);
                pthread_mutex_lock(&w->mu);
                pthread_cond_broadcast(&w->idle_cv);
                continue;
            }
            if (now < w->backoff.next_ms) {
                uint64_t left = w->backoff.next_ms - now;
                evbus__cond_wait_ms(&w->work_cv, &w->mu,
                                    left > 50 ? 50 : (int)left);
                continue;
            }
            pthread_mutex_unlock(&w->mu);
            char why[300];
            redisContext *c = NULL;
            int rc = evbus__redis_connect(&b->o, b->o.command_timeout_ms, &c,
                                          why, sizeof why);
            pthread_mutex_lock(&w->mu);
            if (rc != EVBUS_OK) {
                evbus__redis_backoff_failed(&w->backoff, b->o.reconnect_max_ms);
                if (!was_down)
                    evbus_host_log(b->host, EVBUS_LOG_WARN,
                                   "writer cannot connect: %s; retrying with "
                                   "backoff",
                                   why);
                was_down = true;
                continue;
            }
            if (was_down)
                evbus_host_log(b->host, EVBUS_LOG_INFO,
                               "writer reconnected to %s:%d", b->o.host,
                               b->o.port);
            was_down = false;
            evbus__redis_backoff_ok(&w->backoff);
            w->c = c;
        }
        int n = 0;
        long long pubs = 0;
        while (w->head && n < WRITER_BATCH) {
            rds_job_t *j = w->head;
            w->head = j->next;
            j->next = NULL;
            if (j->kind == RDS_JOB_PUB)
                pubs++;
            slots[n++] = (slot_t){j, 0, NULL, NULL};
        }
        if (!w->head)
            w->tail = NULL;
        w->queued_pubs -= pubs;
        w->busy_pubs += pubs;
        pthread_mutex_unlock(&w->mu);
        rds_job_t *retry = NULL;
        run_batch(b, slots, n, &retry);
        pthread_mutex_lock(&w->mu);
        if (retry) {
            rds_job_t *last = retry;
            while (last->next)
                last = last->next;
            requeue_front(w, retry, last);
        }
        w->busy_pubs -= pubs;
        if (w->busy_pubs + w->queued_pubs == 0)
            pthread_cond_broadcast(&w->idle_cv);
    }
    pthread_mutex_unlock(&w->mu);
    free(slots);
    return NULL;
}

int evbus__redis_writer_start(rds_bus_t *b)
{
    rds_writer_t *w = &b->w;
    pthread_mutex_init(&w->mu, NULL);
    evbus__cond_init(&w->work_cv);
    evbus__cond_init(&w->idle_cv);
    if (pthread_create(&w->thread, NULL, writer_main, b) != 0) {
        pthread_cond_destroy(&w->idle_cv);
        pthread_cond_destroy(&w->work_cv);
        pthread_mutex_destroy(&w->mu);
        return EVBUS_ENOMEM;
    }
    w->started = true;
    return EVBUS_OK;
}

void evbus__redis_writer_stop(rds_bus_t *b)
{
    rds_writer_t *w = &b->w;
    if (!w->started)
        return;
    pthread_mutex_lock(&w->mu);
    w->stop = true;
    pthread_cond_broadcast(&w->work_cv);
    pthread_mutex_unlock(&w->mu);
    pthread_join(w->thread, NULL);
    /* Whatever is still queued could not be sent in time. */
    rds_job_t *left = w->head;
    w->head = w->tail = NULL;
    fail_pubs(left, EVBUS_ETIMEDOUT);
    w->queued_pubs = 0;
    if (w->c)
        redisFree(w->c);
    w->c = NULL;
    pthread_cond_destroy(&w->idle_cv);
    pthread_cond_destroy(&w->work_cv);
    pthread_mutex_destroy(&w->mu);
    w->started = false;
}
