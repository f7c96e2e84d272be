/*
 * Publishing: XADD <topic> MAXLEN ~ <n> * data <CloudEvent JSON> metadata {}
 * - the field layout of Dapr's pubsub.redis, so Dapr apps on the same Redis
 * read our events and we read theirs.
 *
 * Synchronous publishes take a connection from a small pool (so several
 * threads publish at once without sharing a hiredis context) and wait for
 * the reply. Asynchronous ones are formatted here and pipelined by the
 * writer thread (redis_writer.c).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "redis_internal.h"

#define POOL_MAX ((int)(sizeof(((rds_bus_t *)0)->idle) / sizeof(redisContext *)))

int evbus__redis_pool_get(rds_bus_t *b, redisContext **out, char *errstr,
                          size_t n)
{
    pthread_mutex_lock(&b->pool_mu);
    if (b->nidle) {
        *out = b->idle[--b->nidle];
        pthread_mutex_unlock(&b->pool_mu);
        return EVBUS_OK;
    }
    uint64_t now = evbus__mono_ms();
    if (now < b->pool_backoff.next_ms) {
        /* The last connect failed: do not hammer the server, fail fast. */
        uint64_t left = b->pool_backoff.next_ms - now;
        pthread_mutex_unlock(&b->pool_mu);
        snprintf(errstr, n,
                 "redis at %s:%d unreachable; next reconnect in %llu ms",
                 b->o.host, b->o.port, (unsigned long long)left);
        return EVBUS_ECONN;
    }
    pthread_mutex_unlock(&b->pool_mu);
    int rc =
        evbus__redis_connect(&b->o, b->o.command_timeout_ms, out, errstr, n);
    pthread_mutex_lock(&b->pool_mu);
    if (rc == EVBUS_OK)
        evbus__redis_backoff_ok(&b->pool_backoff);
    else if (rc == EVBUS_ECONN || rc == EVBUS_ETIMEDOUT)
        evbus__redis_backoff_failed(&b->pool_backoff, b->o.reconnect_max_ms);
    pthread_mutex_unlock(&b->pool_mu);
    return rc;
}

void evbus__redis_pool_put(rds_bus_t *b, redisContext *c)
{
    if (!c)
        return;
    if (c->err) {
        redisFree(c);
        return;
    }
    pthread_mutex_lock(&b->pool_mu);
    if (b->nidle < POOL_MAX) {
        b->idle[b->nidle++] = c;
        c = NULL;
    }
    pthread_mutex_unlock(&b->pool_mu);
    if (c)
        redisFree(c);
}

void evbus__redis_pool_free(rds_bus_t *b)
{
    while (b->nidle)
        redisFree(b->idle[--b->nidle]);
}

/* The XADD argument vector for one publish. */
typedef struct {
    const char *argv[10];
    size_t argvlen[10];
    int argc;
} xadd_args_t;

static void xadd_args(const rds_bus_t *b, xadd_args_t *a, const char *topic,
                      const void *payload, size_t len)
{
    int i = 0;
    a->argv[i++] = "XADD";
    a->argv[i++] = topic;
    if (b->o.maxlen > 0) {
        a->argv[i++] = "MAXLEN";
        a->argv[i++] = "~";
        a->argv[i++] = b->maxlen_str;
    }
    a->argv[i++] = "*";
    a->argv[i++] = "data";
    a->argv[i++] = payload;
    a->argv[i++] = "metadata";
    a->argv[i++] = "{}";
    for (int k = 0; k < i; k++)
        a->argvlen[k] = strlen(a->argv[k]);
    a->argvlen[i - 3] = len; /* the payload: binary-safe */
    a->argc = i;
}

int evbus__redis_publish(void *priv, const char *topic, const evbus_event_t *ev,
                         const void *payload, size_t len)
{
    (void)ev;
    rds_bus_t *b = priv;
    char why[300];
    redisContext *c;
    int rc = evbus__redis_pool_get(b, &c, why, sizeof why);
    if (rc != EVBUS_OK) {
        evbus_host_log(b->host, EVBUS_LOG_WARN, "publish to %s failed: %s",
                       topic, why);
        return rc;
    }
    xadd_args_t a;
    xadd_args(b, &a, topic, payload, len);
    redisReply *r = evbus__redis_command(c, a.argc, a.argv, a.argvlen);
    if (r && r->type == REDIS_REPLY_STRING) {
        rc = EVBUS_OK;
    } else {
        /* No reply means the outcome is unknown: report it as failed. */
        rc = evbus__redis_error(c, r, why, sizeof why);
        evbus_host_log(b->host, EVBUS_LOG_WARN, "publish to %s failed: %s",
                       topic, why);
    }
    freeReplyObject(r);
    evbus__redis_pool_put(b, c);
    return rc;
}

/* The job and its XADD in wire format, formatted here on the publishing
 * thread so the writer only copies bytes. */
static rds_job_t *job_with_command(const xadd_args_t *a)
{
    rds_job_t *job = calloc(1, sizeof *job);
    if (!job)
        return NULL;
    char *cmd = NULL;
    int len = redisFormatCommandArgv(&cmd, a->argc, (const char **)a->argv,
                                     a->argvlen);
    if (len < 0 || !cmd) {
        free(job);
        return NULL;
    }
    job->cmd = cmd;
    job->len = (size_t)len;
    return job;
}

int evbus__redis_publish_async(void *priv, const char *topic,
                               const evbus_event_t *ev, const void *payload,
                               size_t len, evbus_publish_done_fn done,
                               void *token)
{
    (void)ev;
    rds_bus_t *b = priv;
    xadd_args_t a;
    xadd_args(b, &a, topic, payload, len);
    rds_job_t *job = job_with_command(&a);
    if (!job)
        return EVBUS_ENOMEM;
    job->kind = RDS_JOB_PUB;
    job->done = done;
    job->token = token;
    /* Waits at most this long for a connection before it is failed. */
    job->deadline_ms = evbus__mono_ms() + (uint64_t)b->o.command_timeout_ms;
    int rc = evbus__redis_writer_push(b, job);
    if (rc != EVBUS_OK)
        evbus__redis_job_free(job);
    return rc;
}

int evbus__redis_flush(void *priv, int timeout_ms)
{
    rds_bus_t *b = priv;
    rds_writer_t *w = &b->w;
    uint64_t deadline =
        timeout_ms < 0 ? UINT64_MAX : evbus__mono_ms() + (uint64_t)timeout_ms;
    int rc = EVBUS_OK;
    pthread_mutex_lock(&w->mu);
    while (w->queued_pubs + w->busy_pubs > 0) {
        uint64_t now = evbus__mono_ms();
        if (now >= deadline) {
            rc = EVBUS_ETIMEDOUT;
            break;
        }
        evbus__cond_wait_ms(&w->idle_cv, &w->mu,
                            deadline - now > 100 ? 100 : (int)(deadline - now));
    }
    pthread_mutex_unlock(&w->mu);
    return rc;
}
