/*
 * Settling fetched messages. ACKs are collected and sent as one XACK (with
 * the HDEL of their attempt records): by the fetcher in front of its next
 * non-blocking XREADGROUP while entries keep coming, by record_attempts in
 * front of its HSET, or by the writer thread (redis_writer.c) while the
 * fetcher is blocked, so no ack waits for the next event. RELEASE goes
 * through the writer and gives an entry back by marking it long idle
 * (XCLAIM ... IDLE ... JUSTID), so any member's next claim scan takes it.
 * An acked entry stays held until its XACK is confirmed; a released one
 * counts in s->releasing until its XCLAIM is answered.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "redis_internal.h"

void (*evbus__redis_hook_releasing)(const char *topic, const char *group,
                                    const char *consumer);

/* Queues a settle job for what s has collected; the caller set
 * s->settle_queued (under s->mu) and so owns this step. */
void evbus__redis_push_settle_job(rds_sub_t *s)
{
    rds_job_t *job = calloc(1, sizeof *job);
    if (job) {
        job->kind = RDS_JOB_SETTLE;
        job->sub = s;
        atomic_fetch_add(&s->refs, 1);
        if (evbus__redis_writer_push(s->bus, job) == EVBUS_OK)
            return;
        atomic_fetch_sub(&s->refs, 1);
        free(job);
    }
    /* Could not queue now: the next settle (or unsubscribe) tries again. */
    pthread_mutex_lock(&s->mu);
    s->settle_queued = false;
    pthread_mutex_unlock(&s->mu);
}

/* Makes sure a settle job is queued for what s has collected. */
void evbus__redis_schedule_settle(rds_sub_t *s)
{
    pthread_mutex_lock(&s->mu);
    bool need = !s->settle_queued && (s->acks || s->releases);
    if (need)
        s->settle_queued = true;
    pthread_mutex_unlock(&s->mu);
    if (need)
        evbus__redis_push_settle_job(s);
}

int evbus__redis_settle(void *priv, void *bsub, evbus_msg_t *msg,
                        evbus_settle_t how, int delay_ms)
{
    (void)priv;
    (void)delay_ms;
    rds_sub_t *s = bsub;
    rds_msg_t *m = msg->cookie;
    if (how != EVBUS_SETTLE_ACK && how != EVBUS_SETTLE_RELEASE)
        return EVBUS_ENOTSUP; /* no EVBUS_FEAT_DELAYED_RETRY */
    pthread_mutex_lock(&s->mu);
    if (how == EVBUS_SETTLE_ACK) {
        /* Still held until the XACK is confirmed. */
        m->next = s->acks;
        s->acks = m;
    } else {
        evbus__redis_idset_del(&s->held, m->id);
        m->next = s->releases;
        s->releases = m;
    }
    bool need =
        !s->settle_queued && (how != EVBUS_SETTLE_ACK || !s->fetcher_active);
    if (need)
        s->settle_queued = true;
    pthread_mutex_unlock(&s->mu);
    if (need)
        evbus__redis_push_settle_job(s);
    return EVBUS_OK;
}

/* Appends one XACK for the listed messages to c, and the HDEL of their
 * attempt records; returns how many replies to read (0 for an empty list).
 * Out of memory, an XACK of nothing keeps the reply count right; those
 * entries stay pending and come back after claim_timeout_ms (a duplicate,
 * never a loss). */
int evbus__redis_append_acks(rds_sub_t *s, redisContext *c, rds_msg_t *acks)
{
    size_t n = 0;
    for (rds_msg_t *m = acks; m; m = m->next)
        n++;
    if (!n)
        return 0;
    const char **argv = malloc((n + 3) * sizeof *argv);
    if (!argv) {
        const char *argv0[] = {"XACK", s->topic, s->group, "0-0"};
        redisAppendCommandArgv(c, 4, argv0, NULL);
        return 1;
    }
    argv[0] = "XACK";
    argv[1] = s->topic;
    argv[2] = s->group;
    size_t i = 3;
    for (rds_msg_t *m = acks; m; m = m->next)
        argv[i++] = m->idstr;
    redisAppendCommandArgv(c, (int)(n + 3), argv, NULL);
    /* The attempt records of acked entries go with them. */
    int replies = 1 + evbus__redis_attempts_append_del(s, c, argv + 3, n);
    free(argv);
    return replies;
}

int evbus__redis_settle_append(rds_sub_t *s, redisContext *c, rds_msg_t **acks,
                               rds_msg_t **releases)
{
    size_t na = 0, nr = 0;
    pthread_mutex_lock(&s->mu);
    *acks = s->acks;
    *releases = s->releases;
    s->acks = s->releases = NULL;
    s->settle_queued = false;
    for (rds_msg_t *m = *acks; m; m = m->next)
        na++;
    for (rds_msg_t *m = *releases; m; m = m->next)
        nr++;
    s->releasing += (int)nr; /* until evbus__redis_settle_done */
    pthread_mutex_unlock(&s->mu);
    if (nr && evbus__redis_hook_releasing)
        evbus__redis_hook_releasing(s->topic, s->group, s->consumer);
    int replies = 0;
    size_t most = (na > nr ? na : nr) + 8;
    const char **argv = malloc(most * sizeof *argv);
    if (!argv) { /* put them back; sent with the next job */
        evbus__redis_settle_done(s, *acks, *releases, false);
        *acks = *releases = NULL;
        return 0;
    }
    if (na)
        replies += evbus__redis_append_acks(s, c, *acks);
    if (nr) {
        int argc = 0;
        argv[argc++] = "XCLAIM";
        argv[argc++] = s->topic;
        argv[argc++] = s->group;
        argv[argc++] = s->consumer;
        argv[argc++] = "0";
        for (rds_msg_t *m = *releases; m; m = m->next)
            argv[argc++] = m->idstr;
        argv[argc++] = "IDLE";
        argv[argc++] = EVBUS__REDIS_RELEASE_IDLE_MS;
        argv[argc++] = "JUSTID";
        redisAppendCommandArgv(c, argc, argv, NULL);
        replies++;
    }
    free(argv);
    return replies;
}

static void prepend(rds_msg_t **list, rds_msg_t *more)
{
    if (!more)
        return;
    rds_msg_t *last = more;
    while (last->next)
        last = last->next;
    last->next = *list;
    *list = more;
}

bool evbus__redis_settle_done(rds_sub_t *s, rds_msg_t *acks,
                              rds_msg_t *releases, bool ok)
{
    bool requeue = false;
    pthread_mutex_lock(&s->mu);
    for (rds_msg_t *m = releases; m; m = m->next)
        s->releasing--;
    if (ok) {
        for (rds_msg_t *m = acks; m; m = m->next)
            evbus__redis_idset_del(&s->held, m->id);
    } else {
        prepend(&s->acks, acks);
        prepend(&s->releases, releases);
        acks = releases = NULL;
        if ((s->acks || s->releases) && !s->settle_queued)
            requeue = s->settle_queued = true;
    }
    pthread_cond_broadcast(&s->cv);
    pthread_mutex_unlock(&s->mu);
    evbus__redis_msg_list_free(acks);
    evbus__redis_msg_list_free(releases);
    return requeue;
}
