/*
 * The sidecar client: pooled libcurl easy handles (each keeps its
 * connection alive, so a publish costs one round trip, not a TCP
 * handshake), one request helper and the mapping of Dapr's answers to
 * evbus errors.
 */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cjson/cJSON.h>

#include "dapr_internal.h"

#define MAX_BODY_KEPT (64 * 1024)

static pthread_once_t global_once = PTHREAD_ONCE_INIT;
static CURLcode global_rc;

static void global_init(void) { global_rc = curl_global_init(CURL_GLOBAL_ALL); }

int evbus__dapr_curl_global_init(void)
{
    /* curl_global_init is not thread-safe before 7.84; run it once. It is
     * never undone: other code in the process may use libcurl too. */
    pthread_once(&global_once, global_init);
    return global_rc == CURLE_OK ? EVBUS_OK : EVBUS_EINTERNAL;
}

void evbus__dapr_pool_init(dapr_curl_pool_t *p)
{
    memset(p, 0, sizeof *p);
    pthread_mutex_init(&p->mu, NULL);
}

void evbus__dapr_pool_destroy(dapr_curl_pool_t *p)
{
    for (size_t i = 0; i < p->n; i++)
        curl_easy_cleanup(p->free[i]);
    free(p->free);
    pthread_mutex_destroy(&p->mu);
    memset(p, 0, sizeof *p);
}

static CURL *pool_get(dapr_curl_pool_t *p)
{
    CURL *h = NULL;
    pthread_mutex_lock(&p->mu);
    if (p->n)
        h = p->free[--p->n];
    pthread_mutex_unlock(&p->mu);
    if (!h)
        h = curl_easy_init();
    return h;
}

static void pool_put(dapr_curl_pool_t *p, CURL *h)
{
    pthread_mutex_lock(&p->mu);
    if (p->n == p->cap) {
        size_t cap = p->cap ? p->cap * 2 : 8;
        CURL **f = realloc(p->free, cap * sizeof *f);
        if (!f) {
            pthread_mutex_unlock(&p->mu);
            curl_easy_cleanup(h);
            return;
        }
        p->free = f;
        p->cap = cap;
    }
    p->free[p->n++] = h;
    pthread_mutex_unlock(&p->mu);
}

static size_t on_body(char *data, size_t size, size_t nmemb, void *opaque)
{
    dapr_resp_t *r = opaque;
    size_t n = size * nmemb;
    size_t len = r->body.len;
    size_t keep = len < MAX_BODY_KEPT ? MAX_BODY_KEPT - len : 0;
    if (keep > n)
        keep = n;
    if (keep) {
        evbus__buf_append(&r->body, data, keep);
        if (r->body.failed)
            return 0;
    }
    return n;
}

int evbus__dapr_request(dapr_t *d, const char *url, struct curl_slist *hdrs,
                 const void *body, size_t len, long timeout_ms,
                 dapr_resp_t *resp)
{
    memset(resp, 0, sizeof *resp);
    CURL *h = pool_get(&d->pool);
    if (!h)
        return EVBUS_ENOMEM;
    curl_easy_reset(h); /* keeps the connection cache */
    curl_easy_setopt(h, CURLOPT_URL, url);
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, hdrs);
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h, CURLOPT_TCP_NODELAY, 1L);
    curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, timeout_ms);
    curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS,
                     timeout_ms < 5000 ? timeout_ms : 5000L);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, resp);
    if (body) {
        curl_easy_setopt(h, CURLOPT_POST, 1L);
        curl_easy_setopt(h, CURLOPT_POSTFIELDS, body);
        curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)len);
    }
    resp->cc = curl_easy_perform(h);
    if (resp->cc == CURLE_OK)
        curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &resp->status);
    pool_put(&d->pool, h);
    switch (resp->cc) {
    case CURLE_OK:
        return EVBUS_OK;
    case CURLE_OUT_OF_MEMORY:
        return EVBUS_ENOMEM;
    case CURLE_OPERATION_TIMEDOUT:
        return EVBUS_ETIMEDOUT;
    case CURLE_COULDNT_CONNECT:
    case CURLE_COULDNT_RESOLVE_HOST:
    case CURLE_COULDNT_RESOLVE_PROXY:
        return EVBUS_ECONN;
    default:
        /* sent but no (complete) answer: the outcome is unknown */
        return EVBUS_EIO;
    }
}

void evbus__dapr_resp_free(dapr_resp_t *r)
{
    evbus__buf_free(&r->body);
}

void evbus__dapr_describe_curl(const dapr_resp_t *r, char *why, size_t n)
{
    snprintf(why, n, "no answer from the sidecar: %s",
             curl_easy_strerror(r->cc));
}

/* Copies text into out with control characters replaced (one log line). */
static void one_line(char *out, size_t n, const char *text, size_t len)
{
    size_t i = 0;
    for (; i < len && i + 1 < n; i++) {
        unsigned char c = (unsigned char)text[i];
        out[i] = c < 0x20 ? ' ' : (char)c;
    }
    if (n)
        out[i] = '\0';
}

int evbus__dapr_map_status(const dapr_resp_t *r, char *why, size_t n)
{
    const char *code = NULL, *msg = NULL;
    cJSON *j = r->body.data ? cJSON_ParseWithLength(r->body.data, r->body.len)
                          : NULL;
    if (j) {
        cJSON *c = cJSON_GetObjectItemCaseSensitive(j, "errorCode");
        cJSON *m = cJSON_GetObjectItemCaseSensitive(j, "message");
        code = cJSON_IsString(c) ? c->valuestring : NULL;
        msg = cJSON_IsString(m) ? m->valuestring : NULL;
    }
    char text[256] = "";
    if (msg)
        one_line(text, sizeof text, msg, strlen(msg));
    else if (r->body.data && !code)
        one_line(text, sizeof text, r->body.data, r->body.len);
    snprintf(why, n, "HTTP %ld %s%s%s", r->status, code ? code : "",
             code && *text ? ": " : "", text);
    int err;
    if (r->status == 401 || r->status == 403)
        err = EVBUS_EAUTH;
    else if (r->status == 408 || r->status == 429)
        err = EVBUS_EAGAIN; /* the sidecar asks us to come back */
    else if (r->status >= 400 && r->status < 500)
        err = EVBUS_EREJECTED;
    else if (code && strcmp(code, "ERR_PUBSUB_CLOUD_EVENTS_SER") == 0)
        err = EVBUS_EREJECTED; /* the body itself is wrong: retry won't fix */
    else if (r->status >= 500)
        err = EVBUS_EIO;
    else
        err = EVBUS_EIO; /* 1xx/3xx: not an answer the API gives */
    cJSON_Delete(j);
    return err;
}

char *evbus__dapr_urlenc(const char *s)
{
    static const char hex[] = "0123456789ABCDEF";
    size_t n = strlen(s);
    char *out = malloc(n * 3 + 1), *o = out;
    if (!out)
        return NULL;
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (isalnum(c) || c == '-' || c == '.' || c == '_' || c == '~') {
            *o++ = (char)c;
        } else {
            *o++ = '%';
            *o++ = hex[c >> 4];
            *o++ = hex[c & 15];
        }
    }
    *o = '\0';
    return out;
}

char *evbus__dapr_url(const dapr_t *d, const char *path)
{
    size_t n = strlen(d->base) + strlen(path) + 1;
    char *u = malloc(n);
    if (u)
        snprintf(u, n, "%s%s", d->base, path);
    return u;
}
