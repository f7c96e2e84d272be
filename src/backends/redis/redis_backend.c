/*
 * redis://[user:password@]host:port[/db]?options - Redis Streams backend.
 *
 * Options (all optional):
 *   connect_timeout_ms   TCP connect timeout (default 2000)
 *   command_timeout_ms   reply timeout of a command; also how long a queued
 *                        asynchronous publish waits for a reconnect (5000)
 *   claim_timeout_ms     entries of other members idle this long are taken
 *                        over (XAUTOCLAIM) (default 30000)
 *   block_ms             XREADGROUP BLOCK time (default 1000)
 *   batch                XREADGROUP / XAUTOCLAIM COUNT (default 200)
 *   maxlen               XADD MAXLEN ~ n; 0 = never trim (default 1000000)
 *   reconnect_max_ms     cap of the exponential reconnect backoff (2000)
 *   max_queued           asynchronous publishes queued before
 *                        evbus_publish_async answers EVBUS_EAGAIN (65536)
 *   consumer             fixed consumer name (default hostname-pid-counter,
 *                        unique per subscription)
 *   attempts             durable (default): each handler call is recorded
 *                        in Redis first | memory: the core counts in
 *                        memory (one round trip less; a crash forgets)
 * See docs/backends/redis.md.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "redis_internal.h"

static int int_opt(const evbus_url_t *url, const char *key, long long def,
                   long long min, long long max, long long *out, char *errstr,
                   size_t n)
{
    return evbus_url_param_int(url, key, def, min, max, out, errstr, n);
}

static void opts_free(rds_opts_t *o)
{
    free(o->host);
    free(o->user);
    free(o->password);
    free(o->consumer);
    memset(o, 0, sizeof *o);
}

static int parse_opts(rds_opts_t *o, const evbus_url_t *url, char *errstr,
                      size_t n)
{
    const char *host = evbus_url_host(url);
    const char *user = evbus_url_user(url);
    const char *password = evbus_url_password(url);
    const char *path = evbus_url_path(url);
    o->port = evbus_url_port(url) ? evbus_url_port(url) : 6379;
    if (user && *user && !password) {
        snprintf(errstr, n,
                 "redis URL has a user but no password: use "
                 "redis://user:password@host or redis://:password@host");
        return EVBUS_EURL;
    }
    o->db = 0;
    if (path && *path && strcmp(path, "/") != 0) {
        char *end;
        long db = strtol(path + 1, &end, 10);
        if (path[1] < '0' || path[1] > '9' || *end || db < 0 || db > 100000) {
            snprintf(errstr, n,
                     "redis URL path '%s' is not a database number (/0, /1, "
                     "...)",
                     path);
            return EVBUS_EURL;
        }
        o->db = (int)db;
    }
    o->host = strdup(host && *host ? host : "127.0.0.1");
    o->user = user && *user ? strdup(user) : NULL;
    o->password = password ? strdup(password) : NULL;
    if (!o->host || (user && *user && !o->user) || (password && !o->password))
        goto oom;
    long long v;
    int rc;
#define OPT(key, def, min, max, field)                                         \
    if ((rc = int_opt(url, key, def, min, max, &v, errstr, n)) != EVBUS_OK)    \
        return rc;                                                             \
    o->field = v
    OPT("connect_timeout_ms", 2000, 1, 600000, connect_timeout_ms);
    OPT("command_timeout_ms", 5000, 1, 600000, command_timeout_ms);
    OPT("claim_timeout_ms", 30000, 10, 86400000, claim_timeout_ms);
    OPT("block_ms", 1000, 1, 60000, block_ms);
    OPT("batch", 200, 1, 100000, batch);
    OPT("maxlen", 1000000, 0, (long long)1 << 62, maxlen);
    OPT("reconnect_max_ms", 2000, 1, 600000, reconnect_max_ms);
    OPT("max_queued", 65536, 1, (long long)1 << 40, max_queued);
#undef OPT
    const char *consumer = evbus_url_param(url, "consumer");
    if (consumer) {
        if (!*consumer || strlen(consumer) > 120) {
            snprintf(errstr, n, "option consumer must have 1 to 120 "
                                "characters");
            return EVBUS_EOPTION;
        }
        if (!(o->consumer = strdup(consumer)))
            goto oom;
    }
    const char *att = evbus_url_param(url, "attempts");
    if (att && strcmp(att, "memory") != 0 && strcmp(att, "durable") != 0) {
        snprintf(errstr, n, "option attempts=%s: expected durable or memory",
                 att);
        return EVBUS_EOPTION;
    }
    o->attempts_in_memory = att && strcmp(att, "memory") == 0;
    return EVBUS_OK;
oom:
    snprintf(errstr, n, "out of memory");
    return EVBUS_ENOMEM;
}

static int rds_open(void *priv, evbus_host_t *host, const evbus_url_t *url,
                    char *errstr, size_t n)
{
    rds_bus_t *b = priv;
    b->host = host;
    int rc = parse_opts(&b->o, url, errstr, n);
    if (rc != EVBUS_OK) {
        opts_free(&b->o);
        return rc;
    }
    snprintf(b->maxlen_str, sizeof b->maxlen_str, "%lld", b->o.maxlen);
    pthread_mutex_init(&b->pool_mu, NULL);
    /* Connect now, so a wrong host, password or db fails evbus_open. */
    redisContext *c;
    rc = evbus__redis_connect(&b->o, b->o.command_timeout_ms, &c, errstr, n);
    if (rc == EVBUS_OK) {
        evbus__redis_pool_put(b, c);
        rc = evbus__redis_writer_start(b);
        if (rc != EVBUS_OK)
            snprintf(errstr, n, "cannot start the redis writer thread");
    }
    if (rc != EVBUS_OK) {
        evbus__redis_pool_free(b);
        pthread_mutex_destroy(&b->pool_mu);
        opts_free(&b->o);
        return rc;
    }
    evbus_host_log(host, EVBUS_LOG_DEBUG, "connected to %s:%d db %d",
                   b->o.host, b->o.port, b->o.db);
    return EVBUS_OK;
}

static void rds_close(void *priv)
{
    rds_bus_t *b = priv;
    evbus__redis_writer_stop(b);
    evbus__redis_pool_free(b);
    pthread_mutex_destroy(&b->pool_mu);
    opts_free(&b->o);
}

static int rds_health(void *priv, char *errstr, size_t n)
{
    rds_bus_t *b = priv;
    redisContext *c;
    int rc = evbus__redis_pool_get(b, &c, errstr, n);
    if (rc != EVBUS_OK)
        return rc;
    const char *argv[] = {"PING"};
    redisReply *r = evbus__redis_command(c, 1, argv, NULL);
    if (!r || r->type == REDIS_REPLY_ERROR)
        rc = evbus__redis_error(c, r, errstr, n);
    freeReplyObject(r);
    evbus__redis_pool_put(b, c);
    return rc;
}

const evbus_backend_t evbus_backend_redis = {
    .version = EVBUS_BACKEND_VERSION,
    .scheme = "redis",
    .priv_size = sizeof(rds_bus_t),
    .features = EVBUS_FEAT_PERSISTENT | EVBUS_FEAT_ORDERED |
                EVBUS_FEAT_CROSS_PROCESS | EVBUS_FEAT_BYTES_ONLY,
    .open = rds_open,
    .close = rds_close,
    .publish = evbus__redis_publish,
    .publish_async = evbus__redis_publish_async,
    .flush = evbus__redis_flush,
    .subscribe = evbus__redis_subscribe,
    .unsubscribe = evbus__redis_unsubscribe,
    .fetch = evbus__redis_fetch,
    .settle = evbus__redis_settle,
    .health = rds_health,
    .record_attempts = evbus__redis_record_attempts,
};
