/*
 * dapr://host:port?pubsub=NAME&app_port=N - events through a Dapr sidecar.
 *
 * Publishing goes to the sidecar's HTTP API (evbus__dapr_publish.c); deliveries
 * come from the sidecar to an HTTP server in the app (dapr_server.c).
 * Defaults follow what Dapr gives an app in its environment; a value in the
 * URL wins over the environment:
 *   host:port          sidecar; default 127.0.0.1:$DAPR_HTTP_PORT (3500)
 *   pubsub=NAME        pub/sub component name (default "pubsub")
 *   app_port=N         where the sidecar delivers ($APP_PORT); without it
 *                      the bus can publish but not subscribe
 *   app_host=ADDR      address the app server binds (default 127.0.0.1)
 *   dapr_api_token=T   sent as dapr-api-token ($DAPR_API_TOKEN)
 *   app_api_token=T    required from the sidecar ($APP_API_TOKEN)
 *   timeout_ms=N       per HTTP request (default 10000)
 *   sidecar_wait_ms=N  how long open waits for the sidecar (default 5000;
 *                      0 = do not wait, only log when it is not up)
 *   bulk_max=N         entries per bulk publish (default 100)
 *   async_tries=N      attempts per async publish entry (default 5)
 *   bulk_subscribe=N   ask for bulk deliveries of up to N (default 0 = off)
 *   deliver_timeout_ms=N  hand a delivery back to the sidecar when the app
 *                      has not polled it for this long (default 60000)
 *   undecodable=drop|deadletter  a delivered body that is not a CloudEvent
 *                      is answered DROP (the sidecar dead-letters it; the
 *                      default) or dead-lettered by the core, wrapped with
 *                      its reason, and answered SUCCESS
 *   app_max_conns=N    connections the app server holds (default 256;
 *                      unproven ones are evicted first, see dapr_conns.c)
 *   app_max_conns_per_ip=N  per client address (default 0 = no limit)
 *   app_conn_timeout_s=N    idle limit of a connection until a request on
 *                      it passed the token check (default 10)
 *   app_idle_timeout_s=N    idle limit after that (default 120)
 *   app_max_buffered_mb=N   MiB of request bodies the app server holds at
 *                      once, over all connections (default 256); a body
 *                      that would pass it is answered 503 (Dapr retries)
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "dapr_internal.h"

static const char *env(const char *name)
{
    const char *v = getenv(name);
    return v && *v ? v : NULL;
}

static struct curl_slist *headers(const char *ctype, const char *token)
{
    struct curl_slist *l = curl_slist_append(NULL, "Expect:");
    char line[1024];
    if (l && ctype) {
        snprintf(line, sizeof line, "Content-Type: %s", ctype);
        struct curl_slist *n = curl_slist_append(l, line);
        if (!n) {
            curl_slist_free_all(l);
            return NULL;
        }
        l = n;
    }
    if (l && token) {
        snprintf(line, sizeof line, DAPR_TOKEN_HEADER ": %s", token);
        struct curl_slist *n = curl_slist_append(l, line);
        if (!n) {
            curl_slist_free_all(l);
            return NULL;
        }
        l = n;
    }
    return l;
}

static void release(dapr_t *d)
{
    curl_slist_free_all(d->hdr_ce);
    curl_slist_free_all(d->hdr_json);
    curl_slist_free_all(d->hdr_none);
    evbus__dapr_pool_destroy(&d->pool);
    free(d->base);
    free(d->pubsub);
    free(d->api_token);
    free(d->app_token);
    free(d->app_host);
    pthread_mutex_destroy(&d->mu);
}

/* Asks the sidecar whether it can serve the app. */
static int check_outbound(dapr_t *d, long timeout_ms, char *why, size_t n)
{
    char *url = evbus__dapr_url(d, "/v1.0/healthz/outbound");
    if (!url) {
        snprintf(why, n, "out of memory");
        return EVBUS_ENOMEM;
    }
    dapr_resp_t r;
    int rc = evbus__dapr_request(d, url, d->hdr_none, NULL, 0, timeout_ms, &r);
    free(url);
    if (rc != EVBUS_OK) {
        evbus__dapr_describe_curl(&r, why, n);
    } else if (r.status < 200 || r.status >= 300) {
        rc = evbus__dapr_map_status(&r, why, n);
        if (r.status >= 500)
            rc = EVBUS_EAGAIN; /* up, components not ready yet */
    }
    evbus__dapr_resp_free(&r);
    return rc;
}

static int dapr_health(void *priv, char *errstr, size_t errstr_size)
{
    dapr_t *d = priv;
    char why[384];
    int rc = check_outbound(d, 2000, why, sizeof why);
    if (rc != EVBUS_OK)
        snprintf(errstr, errstr_size, "dapr sidecar %s: %s", d->base, why);
    return rc;
}

/* Waits up to wait_ms for the sidecar's outbound health. */
static int wait_sidecar(dapr_t *d, long wait_ms, char *errstr, size_t n)
{
    char why[384] = "";
    uint64_t end = evbus__mono_ms() + (uint64_t)(wait_ms > 0 ? wait_ms : 0);
    for (;;) {
        long left = (long)(end - evbus__mono_ms());
        int rc = check_outbound(d, left > 1000 || left <= 0 ? 1000 : left,
                                why, sizeof why);
        /* An answer other than "not ready" means it is up (an old sidecar
         * without the outbound endpoint answers 404). */
        if (rc == EVBUS_OK || rc == EVBUS_EREJECTED)
            return EVBUS_OK;
        if (rc == EVBUS_EAUTH && wait_ms > 0) {
            snprintf(errstr, n, "dapr sidecar %s refused the API token: %s",
                     d->base, why);
            return rc;
        }
        if (wait_ms <= 0 || evbus__mono_ms() >= end) {
            if (wait_ms <= 0) {
                evbus_host_log(d->host, EVBUS_LOG_WARN,
                               "dapr sidecar %s not usable yet (%s); "
                               "publishes fail until it is",
                               d->base, why);
                return EVBUS_OK;
            }
            snprintf(errstr, n,
                     "dapr sidecar %s not ready after %ld ms: %s", d->base,
                     wait_ms, why);
            return rc == EVBUS_EAGAIN ? EVBUS_ETIMEDOUT : rc;
        }
        usleep(100 * 1000);
    }
}

/* String option: URL first, then the environment, then def. */
static int opt_str(const evbus_url_t *url, const char *key, const char *envn,
                   const char *def, char **out)
{
    const char *v = evbus_url_param(url, key);
    if (!v || !*v)
        v = envn ? env(envn) : NULL;
    if (!v)
        v = def;
    *out = v ? strdup(v) : NULL;
    return v && !*out ? -1 : 0;
}

static int dapr_open(void *priv, evbus_host_t *host, const evbus_url_t *url,
                     char *errstr, size_t n)
{
    dapr_t *d = priv;
    d->host = host;
    pthread_mutex_init(&d->mu, NULL);
    evbus__dapr_pool_init(&d->pool);
    if (evbus__dapr_curl_global_init() != EVBUS_OK) {
        snprintf(errstr, n, "dapr: libcurl initialisation failed");
        release(d);
        return EVBUS_EINTERNAL;
    }
    long long v;
    int rc = EVBUS_OK;
#define INT_OPT(key, def, lo, hi, dst)                                         \
    do {                                                                       \
        if (rc == EVBUS_OK) {                                                  \
            rc = evbus_url_param_int(url, key, def, lo, hi, &v, errstr, n);    \
            dst = v;                                                           \
        }                                                                      \
    } while (0)
    long long def_port = DAPR_DEFAULT_HTTP_PORT, def_app = 0;
    if (env("DAPR_HTTP_PORT"))
        def_port = atoll(env("DAPR_HTTP_PORT"));
    if (env("APP_PORT"))
        def_app = atoll(env("APP_PORT"));
    if (def_port <= 0 || def_port > 65535 || def_app < 0 || def_app > 65535) {
        snprintf(errstr, n, "dapr: DAPR_HTTP_PORT or APP_PORT is not a port");
        release(d);
        return EVBUS_EOPTION;
    }
    long long wait_ms = 0;
    INT_OPT("app_port", def_app, 0, 65535, d->app_port);
    INT_OPT("timeout_ms", 10000, 1, 3600000, d->timeout_ms);
    INT_OPT("sidecar_wait_ms", 5000, 0, 3600000, wait_ms);
    INT_OPT("bulk_max", 100, 1, 10000, d->bulk_max);
    INT_OPT("async_tries", 5, 1, 1000, d->async_tries);
    INT_OPT("bulk_subscribe", 0, 0, 10000, d->bulk_subscribe);
    INT_OPT("deliver_timeout_ms", 60000, 1, 86400000, d->deliver_timeout_ms);
    INT_OPT("app_max_conns", 256, 32, 65536, d->limits.max_conns);
    INT_OPT("app_max_conns_per_ip", 0, 0, 65536, d->limits.max_conns_per_ip);
    INT_OPT("app_conn_timeout_s", 10, 1, 3600, d->limits.conn_timeout_s);
    INT_OPT("app_idle_timeout_s", 120, 1, 86400, d->limits.idle_timeout_s);
    INT_OPT("app_max_buffered_mb", 256, 1, 65536, d->limits.max_buffered_mb);
#undef INT_OPT
    if (rc != EVBUS_OK) {
        release(d);
        return rc;
    }
    if (opt_str(url, "pubsub", NULL, DAPR_DEFAULT_PUBSUB, &d->pubsub) ||
        opt_str(url, "app_host", NULL, "127.0.0.1", &d->app_host) ||
        opt_str(url, "dapr_api_token", "DAPR_API_TOKEN", NULL,
                &d->api_token) ||
        opt_str(url, "app_api_token", "APP_API_TOKEN", NULL, &d->app_token)) {
        snprintf(errstr, n, "dapr: out of memory");
        release(d);
        return EVBUS_ENOMEM;
    }
    const char *undec = evbus_url_param(url, "undecodable");
    if (undec && strcmp(undec, "deadletter") == 0) {
        d->undecodable_to_core = true;
    } else if (undec && strcmp(undec, "drop") != 0) {
        snprintf(errstr, n,
                 "dapr: undecodable= must be drop or deadletter, not '%s'",
                 undec);
        release(d);
        return EVBUS_EOPTION;
    }
    if (!*d->pubsub) {
        snprintf(errstr, n, "dapr: pubsub= must name a component");
        release(d);
        return EVBUS_EOPTION;
    }
    for (const char *tok[] = {d->api_token, d->app_token}, **t = tok;
         t < tok + 2; t++)
        if (*t && strpbrk(*t, "\r\n")) {
            snprintf(errstr, n, "dapr: a token must not contain newlines");
            release(d);
            return EVBUS_EOPTION;
        }
    const char *h = evbus_url_host(url);
    int port = evbus_url_port(url);
    if (!h || !*h)
        h = "127.0.0.1";
    if (port <= 0)
        port = (int)def_port;
    size_t bl = strlen(h) + 32;
    d->base = malloc(bl);
    if (d->base)
        snprintf(d->base, bl, strchr(h, ':') ? "http://[%s]:%d"
                                             : "http://%s:%d",
                 h, port);
    d->hdr_ce = headers(DAPR_CT_CLOUDEVENT, d->api_token);
    d->hdr_json = headers("application/json", d->api_token);
    d->hdr_none = headers(NULL, d->api_token);
    if (!d->base || !d->hdr_ce || !d->hdr_json || !d->hdr_none) {
        snprintf(errstr, n, "dapr: out of memory");
        release(d);
        return EVBUS_ENOMEM;
    }
    rc = wait_sidecar(d, (long)wait_ms, errstr, n);
    if (rc == EVBUS_OK)
        rc = evbus__dapr_async_start(d, errstr, n);
    if (rc != EVBUS_OK) {
        release(d);
        return rc;
    }
    return EVBUS_OK;
}

static void dapr_close(void *priv)
{
    dapr_t *d = priv;
    evbus__dapr_async_stop(d);
    evbus__dapr_server_detach(d);
    release(d);
}

const evbus_backend_t evbus_backend_dapr = {
    .version = EVBUS_BACKEND_VERSION,
    .scheme = "dapr",
    .priv_size = sizeof(dapr_t),
    /* Raw bytes: the sidecar only accepts JSON CloudEvents on this path
     * (anything else is rejected or re-wrapped with a new id), so
     * evbus_publish_raw is refused. */
    .features = EVBUS_FEAT_DELAYED_RETRY | EVBUS_FEAT_CROSS_PROCESS |
                EVBUS_FEAT_NO_RAW,
    .open = dapr_open,
    .close = dapr_close,
    .publish = evbus__dapr_publish,
    .publish_async = evbus__dapr_publish_async,
    .flush = evbus__dapr_flush,
    .subscribe = evbus__dapr_subscribe,
    .unsubscribe = evbus__dapr_unsubscribe,
    .fetch = evbus__dapr_fetch,
    .settle = evbus__dapr_settle,
    .health = dapr_health,
};
