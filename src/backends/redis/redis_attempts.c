/*
 * Durable attempt counts (backend table version 2, record_attempts).
 *
 * The broker's own counter (the PEL's delivery count) counts hand-outs:
 * an entry fetched into a buffer and never given to a handler is counted
 * as often as it was read or claimed. The core wants handler calls, so
 * each group keeps a hash next to its stream:
 *
 *     evbus:attempts:{<topic>}:<group>   field <entry id>
 *                                        value
 * "<attempts>:<prev_delay_ms>:<first_attempt_ms>"
 *
 * ({<topic>} is a cluster hash tag: the hash lives in the stream's slot.)
 * record_attempts writes the fields of a batch with one HSET before the
 * handlers run; re-read and claimed entries get theirs back with one HMGET;
 * the XACK of an entry is followed by an HDEL of its field, pipelined.
 * An entry without a field was never handed to a handler: attempts 0.
 */
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "redis_internal.h"

char *evbus__redis_attempts_key(const char *topic, const char *group)
{
    size_t n = strlen(topic) + strlen(group) + sizeof "evbus:attempts:{}:";
    char *key = malloc(n);
    if (key)
        snprintf(key, n, "evbus:attempts:{%s}:%s", topic, group);
    return key;
}

/* "a:p:f" -> the message's retry context; malformed values count as none
 * (the event is then charged from zero, never crashes the consumer). */
static void parse_value(rds_msg_t *m, const char *s, size_t len)
{
    char buf[64];
    if (len >= sizeof buf)
        return;
    memcpy(buf, s, len);
    buf[len] = '\0';
    long a, p;
    long long f;
    if (sscanf(buf, "%ld:%ld:%lld", &a, &p, &f) != 3 || a < 0 || p < 0 ||
        f < 0 || a > 1000000000L || p > 1000000000L)
        return;
    m->attempts = (int)a;
    m->prev_delay_ms = (int)p;
    m->first_attempt_ms = f;
}

int evbus__redis_attempts_load(rds_sub_t *s, redisContext *c, rds_msg_t *list)
{
    size_t n = 0;
    for (rds_msg_t *m = list; m; m = m->next)
        n++;
    if (!n)
        return EVBUS_OK;
    const char **argv = malloc((n + 2) * sizeof *argv);
    if (!argv)
        return EVBUS_ENOMEM;
    argv[0] = "HMGET";
    argv[1] = s->akey;
    size_t i = 2;
    for (rds_msg_t *m = list; m; m = m->next)
        argv[i++] = m->idstr;
    redisReply *r = redisCommandArgv(c, (int)(n + 2), argv, NULL);
    free(argv);
    if (!r)
        return EVBUS_ECONN;
    int rc = EVBUS_OK;
    if (r->type == REDIS_REPLY_ARRAY && r->elements == n) {
        i = 0;
        for (rds_msg_t *m = list; m; m = m->next, i++)
            if (r->element[i]->type == REDIS_REPLY_STRING)
                parse_value(m, r->element[i]->str, r->element[i]->len);
    } else {
        char why[300];
        rc = evbus__redis_error(c, r, why, sizeof why);
        evbus_host_log(s->bus->host, EVBUS_LOG_WARN,
                       "reading attempt counts of %s/%s failed: %s", s->topic,
                       s->group, why);
    }
    freeReplyObject(r);
    return rc;
}

int evbus__redis_attempts_append_del(rds_sub_t *s, redisContext *c,
                                     const char **ids, size_t n)
{
    if (!n)
        return 0;
    const char **argv = malloc((n + 2) * sizeof *argv);
    if (!argv) {
        /* Only garbage is left behind: the field of an acked entry is
         * never read again. Keep the reply count right. */
        const char *one[] = {"HDEL", s->akey, "0-0"};
        redisAppendCommandArgv(c, 3, one, NULL);
        return 1;
    }
    argv[0] = "HDEL";
    argv[1] = s->akey;
    memcpy(argv + 2, ids, n * sizeof *ids);
    redisAppendCommandArgv(c, (int)(n + 2), argv, NULL);
    free(argv);
    return 1;
}

int evbus__redis_record_attempts(void *priv, void *bsub,
                                 evbus_msg_t *const *msgs, int n)
{
    rds_bus_t *b = priv;
    rds_sub_t *s = bsub;
    /* attempts=memory: the core counts in memory (backend.h), trading
     * crash-loop protection for one round trip less per handler call. */
    if (b->o.attempts_in_memory)
        return EVBUS_ENOTSUP;
    if (n <= 0)
        return EVBUS_OK;
    /* "attempts:prev:first" is at most 10 + 1 + 10 + 1 + 19 bytes. */
    char(*vals)[48] = malloc((size_t)n * sizeof *vals);
    const char **argv = malloc(((size_t)n * 2 + 2) * sizeof *argv);
    if (!vals || !argv) {
        free(vals);
        free(argv);
        return EVBUS_ENOMEM;
    }
    argv[0] = "HSET";
    argv[1] = s->akey;
    for (int i = 0; i < n; i++) {
        const rds_msg_t *m = msgs[i]->cookie;
        snprintf(vals[i], sizeof vals[i], "%d:%d:%lld", msgs[i]->attempts,
                 msgs[i]->prev_delay_ms, (long long)msgs[i]->first_attempt_ms);
        argv[2 + 2 * i] = m->idstr;
        argv[3 + 2 * i] = vals[i];
    }
    /* Acks settled since the last call go first, in the same round trip:
     * a handler that kills the process must not take the acks of the
     * events handled before it along (they would be handled again and
     * charged again). */
    pthread_mutex_lock(&s->mu);
    rds_msg_t *acks = s->acks;
    s->acks = NULL;
    pthread_mutex_unlock(&s->mu);
    char why[300];
    redisContext *c = NULL;
    int rc = evbus__redis_pool_get(b, &c, why, sizeof why);
    bool acked = false;
    if (rc == EVBUS_OK) {
        redisReply *r[4] = {NULL, NULL, NULL, NULL};
        int nack = evbus__redis_append_acks(s, c, acks);
        redisAppendCommandArgv(c, 2 * n + 2, argv, NULL);
        acked = evbus__redis_exchange(c, nack + 1, r) == REDIS_OK;
        redisReply *hset = r[nack];
        if (!hset || hset->type != REDIS_REPLY_INTEGER)
            rc = evbus__redis_error(c, hset, why, sizeof why);
        for (int i = 0; i <= nack; i++)
            freeReplyObject(r[i]);
        evbus__redis_pool_put(b, c);
    }
    if (acks && evbus__redis_settle_done(s, acks, NULL, acked))
        evbus__redis_push_settle_job(s);
    if (rc != EVBUS_OK)
        evbus_host_log(b->host, EVBUS_LOG_WARN,
                       "recording %d attempt(s) on %s/%s failed: %s", n,
                       s->topic, s->group, why);
    free(vals);
    free(argv);
    return rc;
}
