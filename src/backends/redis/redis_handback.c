/*
 * Leaving a group cleanly.
 *
 * When a subscription ends, every entry still pending for its consumer
 * that it does not hold (buffered and never handed out, or read by an
 * XREADGROUP whose reply the closing fetcher never took in) is handed back:
 * XCLAIM'ed to the group's handback consumer with an idle time far beyond
 * any claim timeout, so the next claim scan of any member - the first thing
 * a starting member does - takes it, oldest first, instead of leaving it
 * stranded until claim_timeout_ms. Then the consumer, holding nothing,
 * leaves the group (XGROUP DELCONSUMER), so restarts do not pile up
 * consumers. A subscribing member also removes consumers that hold nothing
 * and were idle for long (members that died, and names left over from
 * before this cleanup existed).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "redis_internal.h"

/* Entries listed per XPENDING page. */
#define PAGE 500

/* XCLAIMs the ids to the handback consumer, long idle. */
static int claim_to_handback(rds_sub_t *s, redisContext *c, const char **ids,
                             int n, char *why, size_t whylen)
{
    const char *argv[PAGE + 8];
    int argc = 0;
    argv[argc++] = "XCLAIM";
    argv[argc++] = s->topic;
    argv[argc++] = s->group;
    argv[argc++] = EVBUS__REDIS_HANDBACK;
    argv[argc++] = "0";
    memcpy(argv + argc, ids, (size_t)n * sizeof *ids);
    argc += n;
    argv[argc++] = "IDLE";
    argv[argc++] = EVBUS__REDIS_RELEASE_IDLE_MS;
    argv[argc++] = "JUSTID";
    redisReply *r = evbus__redis_command(c, argc, argv, NULL);
    int rc = r && r->type == REDIS_REPLY_ARRAY
                 ? EVBUS_OK
                 : evbus__redis_error(c, r, why, whylen);
    freeReplyObject(r);
    return rc;
}

/* One XPENDING page of s's consumer from *start (exclusive after the first
 * page): hands back what s does not hold. Returns the entries listed (0 =
 * done) or an error; *kept counts the held ones left in place. */
static int handback_page(rds_sub_t *s, redisContext *c, char *start,
                         size_t start_size, int *kept, char *why, size_t whylen)
{
    char count[16];
    snprintf(count, sizeof count, "%d", PAGE);
    const char *argv[] = {"XPENDING", s->topic, s->group,   start,
                          "+",        count,    s->consumer};
    redisReply *r = evbus__redis_command(c, 7, argv, NULL);
    if (!r || r->type != REDIS_REPLY_ARRAY) {
        int rc = evbus__redis_error(c, r, why, whylen);
        freeReplyObject(r);
        return rc;
    }
    const char *ids[PAGE];
    int n = 0;
    size_t listed = r->elements;
    pthread_mutex_lock(&s->mu);
    for (size_t i = 0; i < r->elements && n < PAGE; i++) {
        const redisReply *e = r->element[i];
        rds_id_t id;
        if (e->type != REDIS_REPLY_ARRAY || e->elements < 1 ||
            e->element[0]->type != REDIS_REPLY_STRING ||
            !evbus__redis_id_parse(e->element[0]->str, e->element[0]->len, &id))
            continue;
        if (evbus__redis_idset_has(&s->held, id))
            (*kept)++; /* an ack not yet confirmed: not ours to give */
        else
            ids[n++] = e->element[0]->str;
        if (i + 1 == r->elements && e->element[0]->len + 2 < start_size)
            snprintf(start, start_size, "(%s", e->element[0]->str);
    }
    pthread_mutex_unlock(&s->mu);
    int rc = n ? claim_to_handback(s, c, ids, n, why, whylen) : EVBUS_OK;
    freeReplyObject(r);
    return rc == EVBUS_OK ? (int)listed : rc;
}

void evbus__redis_handback(rds_sub_t *s)
{
    rds_bus_t *b = s->bus;
    char why[300] = "";
    redisContext *c = NULL;
    int rc = evbus__redis_pool_get(b, &c, why, sizeof why);
    char start[48] = "-";
    int kept = 0;
    while (rc == EVBUS_OK) {
        rc = handback_page(s, c, start, sizeof start, &kept, why, sizeof why);
        if (rc < PAGE)
            break;
    }
    pthread_mutex_lock(&s->mu);
    /* A release still in flight re-creates this consumer with the entry:
     * deleting the consumer after it lands would drop the entry. */
    kept += s->releasing;
    pthread_mutex_unlock(&s->mu);
    if (rc >= 0 && kept == 0) {
        /* Nothing of ours is pending any more: leave the group. */
        const char *argv[] = {"XGROUP", "DELCONSUMER", s->topic, s->group,
                              s->consumer};
        redisReply *r = evbus__redis_command(c, 5, argv, NULL);
        if (!r || r->type != REDIS_REPLY_INTEGER)
            rc = evbus__redis_error(c, r, why, sizeof why);
        freeReplyObject(r);
    }
    if (rc < 0)
        evbus_host_log(b->host, EVBUS_LOG_WARN,
                       "leaving %s/%s as %s: %s; entries it still had come "
                       "back after claim_timeout_ms",
                       s->topic, s->group, s->consumer, why);
    evbus__redis_pool_put(b, c);
}

/* One consumer of an XINFO CONSUMERS reply (RESP2: a flat name/value
 * array). */
static void consumer_info(const redisReply *e, const char **name,
                          long long *pending, long long *idle)
{
    *name = NULL;
    *pending = *idle = -1;
    if (e->type != REDIS_REPLY_ARRAY)
        return;
    for (size_t k = 0; k + 1 < e->elements; k += 2) {
        const redisReply *key = e->element[k], *v = e->element[k + 1];
        if (key->type != REDIS_REPLY_STRING && key->type != REDIS_REPLY_STATUS)
            continue;
        if (strcmp(key->str, "name") == 0 && v->type == REDIS_REPLY_STRING)
            *name = v->str;
        else if (strcmp(key->str, "pending") == 0 &&
                 v->type == REDIS_REPLY_INTEGER)
            *pending = v->integer;
        else if (strcmp(key->str, "idle") == 0 &&
                 v->type == REDIS_REPLY_INTEGER)
            *idle = v->integer;
    }
}

void evbus__redis_sweep_consumers(rds_sub_t *s, redisContext *c)
{
    const rds_opts_t *o = &s->bus->o;
    /* A live member talks to the server at least every block_ms and every
     * claim scan; one silent this long holds nothing and is gone. Removing
     * a live one would cost nothing anyway: it is made again by its next
     * read. */
    long long dead_ms = 10LL * o->claim_timeout_ms + 2LL * o->block_ms;
    if (dead_ms < 10000)
        dead_ms = 10000;
    const char *argv[] = {"XINFO", "CONSUMERS", s->topic, s->group};
    redisReply *r = evbus__redis_command(c, 4, argv, NULL);
    if (!r || r->type != REDIS_REPLY_ARRAY) {
        freeReplyObject(r);
        return; /* only tidying: the next subscribe tries again */
    }
    int removed = 0;
    for (size_t i = 0; i < r->elements && !c->err; i++) {
        const char *name;
        long long pending, idle;
        consumer_info(r->element[i], &name, &pending, &idle);
        if (!name || pending != 0 || idle < dead_ms ||
            strcmp(name, EVBUS__REDIS_HANDBACK) == 0 ||
            strcmp(name, s->consumer) == 0)
            continue;
        const char *del[] = {"XGROUP", "DELCONSUMER", s->topic, s->group, name};
        redisReply *d = evbus__redis_command(c, 5, del, NULL);
        if (d && d->type == REDIS_REPLY_INTEGER)
            removed++;
        freeReplyObject(d);
    }
    freeReplyObject(r);
    if (removed)
        evbus_host_log(s->bus->host, EVBUS_LOG_INFO,
                       "removed %d consumers of %s/%s that held nothing and "
                       "were idle over %lld ms",
                       removed, s->topic, s->group, dead_ms);
}
