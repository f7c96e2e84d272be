/*
 * Taking over and keeping entries:
 *   - every claim interval (claim_timeout_ms / 2, at most 2 s, and once
 *     right after the start) XAUTOCLAIM takes entries of other members idle
 *     longer than claim_timeout_ms, following the cursor to 0-0 - entries
 *     of dead members, and entries handed back (long idle) by members that
 *     closed or released them;
 *   - every claim_timeout_ms / 3 the heartbeat resets the idle time of
 *     everything this member holds (XCLAIM to itself, JUSTID: no delivery
 *     counted), so no member takes a message it is still working on (the
 *     core may keep one for a long retry backoff).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "redis_fetch.h"

/* How often the claim scan runs: often enough that entries released by a
 * closing member (marked long idle) are picked up within seconds, and at
 * least twice per claim timeout. */
int evbus__redis_claim_interval(const rds_bus_t *b)
{
    int ms = b->o.claim_timeout_ms / 2;
    if (ms > 2000)
        ms = 2000;
    return ms < 50 ? 50 : ms;
}

int evbus__redis_beat_interval(const rds_bus_t *b)
{
    int ms = b->o.claim_timeout_ms / 3;
    return ms < 30 ? 30 : ms;
}

void evbus__redis_claim_step(rds_sub_t *s, rds_fetch_state_t *st, int count)
{
    char idle[24], cnt[16];
    snprintf(idle, sizeof idle, "%d", s->bus->o.claim_timeout_ms);
    snprintf(cnt, sizeof cnt, "%d", count);
    const char *argv[] = {"XAUTOCLAIM", s->topic,         s->group, s->consumer,
                          idle,         st->claim_cursor, "COUNT",  cnt};
    redisReply *r = redisCommandArgv(s->c, 8, argv, NULL);
    if (!r || r->type == REDIS_REPLY_ERROR) {
        evbus__redis_command_failed(s, st, r, "XAUTOCLAIM");
        st->claiming = false;
        st->next_claim_ms =
            evbus__mono_ms() + (uint64_t)evbus__redis_claim_interval(s->bus);
        freeReplyObject(r);
        return;
    }
    if (r->type != REDIS_REPLY_ARRAY || r->elements < 2 ||
        r->element[0]->type != REDIS_REPLY_STRING ||
        r->element[0]->len >= sizeof st->claim_cursor) {
        freeReplyObject(r);
        st->claiming = false;
        return;
    }
    memcpy(st->claim_cursor, r->element[0]->str, r->element[0]->len);
    st->claim_cursor[r->element[0]->len] = '\0';
    int before;
    pthread_mutex_lock(&s->mu);
    before = s->nbuf;
    pthread_mutex_unlock(&s->mu);
    int n = evbus__redis_take_entries(s, r->element[1], false, NULL, 0);
    if (n == EVBUS_ECONN) {
        evbus__redis_drop_conn(s, "reading attempt records failed");
    } else {
        pthread_mutex_lock(&s->mu);
        int got = s->nbuf - before;
        pthread_mutex_unlock(&s->mu);
        if (got > 0)
            evbus_host_log(s->bus->host, EVBUS_LOG_INFO,
                           "took over %d entries of %s/%s idle longer than "
                           "%d ms",
                           got, s->topic, s->group, s->bus->o.claim_timeout_ms);
    }
    if (strcmp(st->claim_cursor, "0-0") == 0) {
        st->claiming = false;
        st->next_claim_ms =
            evbus__mono_ms() + (uint64_t)evbus__redis_claim_interval(s->bus);
    }
    freeReplyObject(r);
}

/* Resets the idle time of everything this member holds (XCLAIM to itself,
 * JUSTID: no delivery counted), so no claim takes it while we work on it. */
void evbus__redis_heartbeat(rds_sub_t *s, rds_fetch_state_t *st)
{
    st->next_beat_ms =
        evbus__mono_ms() + (uint64_t)evbus__redis_beat_interval(s->bus);
    pthread_mutex_lock(&s->mu);
    size_t n = s->held.len;
    char(*ids)[44] = n ? malloc(n * sizeof *ids) : NULL;
    const char **argv = n ? malloc((n + 6) * sizeof *argv) : NULL;
    size_t k = 0;
    if (ids && argv)
        for (size_t i = 0; i < s->held.cap; i++)
            if (s->held.used[i]) {
                snprintf(ids[k], sizeof ids[k], "%llu-%llu",
                         (unsigned long long)s->held.slots[i].ms,
                         (unsigned long long)s->held.slots[i].seq);
                argv[5 + k] = ids[k];
                k++;
            }
    pthread_mutex_unlock(&s->mu);
    if (k) {
        argv[0] = "XCLAIM";
        argv[1] = s->topic;
        argv[2] = s->group;
        argv[3] = s->consumer;
        argv[4] = "0";
        argv[5 + k] = "JUSTID";
        redisReply *r = redisCommandArgv(s->c, (int)(k + 6), argv, NULL);
        if (!r || r->type == REDIS_REPLY_ERROR)
            evbus__redis_command_failed(s, st, r,
                                        "XCLAIM (keeping held entries)");
        freeReplyObject(r);
    }
    free(ids);
    free(argv);
}
