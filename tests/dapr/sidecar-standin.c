/*
 * dapr-standin: a stand-in for the Dapr sidecar (daprd), written from the
 * contract in shared/reference/dapr.md, for testing the dapr:// backend
 * without daprd (which cannot be installed here).
 *
 *   dapr-standin [--app-port N] [--port N] [--pubsub NAME] [--api-token T]
 *                [--app-token T] [--resubscribe-ms N] [--retry-ms N]
 *                [--max-redeliveries N] [--workers N] [--no-log]
 *                [--fresh-trace] [--no-bulk]
 *
 * Prints "PORT <n>" on stdout once it listens (--port 0, the default, picks
 * a free port) and, when --app-port is 0 or absent, "APP_PORT <n>" with a
 * free port chosen for the app; then serves until SIGTERM/SIGINT.
 *
 * Sidecar API (what an app calls):
 *   POST /v1.0/publish/<pubsub>/<topic>[?metadata.k=v]
 *        checks dapr-api-token (401 "invalid api token"), the pubsub name
 *        (404 ERR_PUBSUB_NOT_FOUND), the content type: a body sent as
 *        application/cloudevents+json is kept and only gains topic,
 *        pubsubname, traceid/traceparent/tracestate ("" when absent) and
 *        time when absent (invalid JSON: 500 ERR_PUBSUB_CLOUD_EVENTS_SER);
 *        any other body is wrapped in a new event (new id, type
 *        com.dapr.event.sent) as Dapr does, and counted as "wrapped".
 *   POST /v1.0-alpha1/publish/bulk/<pubsub>/<topic>   entries; 204, or 500
 *        with failedEntries when injected failures hit some entries.
 *   GET  /v1.0/healthz, /v1.0/healthz/outbound   204.
 * Towards the app: reads GET /dapr/subscribe once the app port answers and
 * (unlike daprd) again every --resubscribe-ms (default 50; 0 = only once,
 * as daprd does), delivers every event of a subscribed topic to the route
 * (bulk when the subscription asks for bulkSubscribe), with the app token
 * when set, and applies the answer: 2xx with SUCCESS, empty or unparseable
 * body = done; RETRY or any other status = redeliver after a backoff
 * (--retry-ms doubling, up to 2 s); DROP = to deadLetterTopic when set;
 * HTTP 404 = dropped; other non-2xx or no answer = redeliver. Events of a
 * topic published before the app subscribed it are kept and delivered when
 * the subscription appears (like pubsub.redis, whose group starts at 0).
 * --fresh-trace gives every delivery a new traceparent (a sidecar tracing
 * each delivery); --no-bulk answers the bulk endpoint with a plain 404 like
 * a sidecar that predates it.
 * Test hooks (not Dapr's):
 *   GET  /standin/stats           counters as JSON
 *   GET  /standin/topic/<topic>   [{"event":{...},"metadata":{...}}, ...]
 *   POST /standin/fail            {"count":N,"status":500,"errorCode":"E",
 *                                  "bulkFailEvery":K}: the next N publishes
 *                                  fail, or (bulkFailEvery) every K-th bulk
 *                                  entry fails until N entries failed.
 */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <cjson/cJSON.h>
#include <curl/curl.h>
#include <microhttpd.h>

/* ------------------------------------------------------------ config */

static int opt_port, opt_app_port, opt_resub_ms = 50, opt_retry_ms = 200;
static int opt_max_redeliveries, opt_workers = 8;
static bool opt_keep_log = true, opt_fresh_trace, opt_no_bulk;
static const char *opt_pubsub = "pubsub", *opt_api_token, *opt_app_token;

/* ------------------------------------------------------------ state */

typedef struct job {
    struct topic *t;
    char *body;
    size_t len;
    int attempt;
    uint64_t due;
    struct job *next;
} job_t;

typedef struct topic {
    char *name;
    cJSON *log; /* array of {"event","metadata"} */
    bool subscribed;
    char *route, *dlq;
    int bulk_max;
    job_t *held_head, *held_tail; /* published while not subscribed */
    struct topic *next;
} topic_t;

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t work_cv = PTHREAD_COND_INITIALIZER;
static topic_t *topics;
static job_t *ready_head, *ready_tail;
static job_t **delayed; /* min-heap by due */
static size_t ndelayed, cap_delayed;
static atomic_int stopping; /* set once SIGTERM/SIGINT arrived */

static struct {
    long published, bulk_requests, bulk_entries, injected_failures, wrapped,
        unauthorized, bad_content_type, deliveries, bulk_deliveries, success,
        retry, drop, app_404, app_401, app_errors, dead_lettered,
        subscribe_reads;
} st;

static struct {
    int count, status, bulk_every;
    long bulk_seen;
    char code[64];
} fail;

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static topic_t *topic_get(const char *name)
{
    for (topic_t *t = topics; t; t = t->next)
        if (strcmp(t->name, name) == 0)
            return t;
    topic_t *t = calloc(1, sizeof *t);
    t->name = strdup(name);
    t->log = cJSON_CreateArray();
    t->next = topics;
    topics = t;
    return t;
}

/* ---- job queues (mu held) */

static void heap_push(job_t *j)
{
    if (ndelayed == cap_delayed) {
        cap_delayed = cap_delayed ? cap_delayed * 2 : 256;
        delayed = realloc(delayed, cap_delayed * sizeof *delayed);
    }
    size_t i = ndelayed++;
    while (i && delayed[(i - 1) / 2]->due > j->due) {
        delayed[i] = delayed[(i - 1) / 2];
        i = (i - 1) / 2;
    }
    delayed[i] = j;
}

static job_t *heap_pop(void)
{
    job_t *top = delayed[0], *last = delayed[--ndelayed];
    size_t i = 0;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= ndelayed)
            break;
        if (c + 1 < ndelayed && delayed[c + 1]->due < delayed[c]->due)
            c++;
        if (delayed[c]->due >= last->due)
            break;
        delayed[i] = delayed[c];
        i = c;
    }
    if (ndelayed)
        delayed[i] = last;
    return top;
}

static void ready_push(job_t *j)
{
    j->next = NULL;
    if (ready_tail)
        ready_tail->next = j;
    else
        ready_head = j;
    ready_tail = j;
    pthread_cond_signal(&work_cv);
}

/* Queues a job for delivery, or holds it while the topic is unsubscribed. */
static void enqueue(topic_t *t, char *body, size_t len, int attempt,
                    int delay_ms)
{
    job_t *j = calloc(1, sizeof *j);
    j->t = t;
    j->body = body;
    j->len = len;
    j->attempt = attempt;
    if (!t->subscribed) {
        if (t->held_tail)
            t->held_tail->next = j;
        else
            t->held_head = j;
        t->held_tail = j;
        return;
    }
    if (delay_ms > 0) {
        j->due = now_ms() + (uint64_t)delay_ms;
        heap_push(j);
        pthread_cond_signal(&work_cv);
    } else {
        ready_push(j);
    }
}

static void job_free(job_t *j)
{
    free(j->body);
    free(j);
}

/* ------------------------------------------------------------ publish */

static atomic_ulong id_counter;

/* Makes body a Dapr-enriched CloudEvent for topic; NULL on invalid JSON.
 * wrap: the body was not sent as a CloudEvent. */
/* Appends s as a JSON string to out (the names here need no escaping
 * beyond quotes and backslashes; control characters cannot occur). */
static void add_json_str(char *out, size_t n, const char *s)
{
    size_t l = strlen(out);
    if (l + 1 < n)
        out[l++] = '"';
    for (; *s && l + 3 < n; s++) {
        if (*s == '"' || *s == '\\')
            out[l++] = '\\';
        out[l++] = *s;
    }
    if (l + 1 < n)
        out[l++] = '"';
    out[l] = '\0';
}

/* The sent text with the added fields spliced in before its closing brace,
 * so the bytes the publisher sent (data included) reach the app as sent;
 * NULL when that is not possible (then the event is printed anew). */
static char *splice(const char *body, size_t len, const cJSON *orig,
                    const char *topic, const char *time_now)
{
    if (cJSON_GetObjectItemCaseSensitive(orig, "topic") ||
        cJSON_GetObjectItemCaseSensitive(orig, "pubsubname"))
        return NULL;
    while (len && (body[len - 1] == ' ' || body[len - 1] == '\n' ||
                   body[len - 1] == '\r' || body[len - 1] == '\t'))
        len--;
    if (!len || body[len - 1] != '}')
        return NULL;
    char add[4096] = "";
    strcat(add, "\"topic\":");
    add_json_str(add, sizeof add, topic);
    strcat(add, ",\"pubsubname\":");
    add_json_str(add, sizeof add, opt_pubsub);
    static const char *const trace[] = {"traceid", "traceparent",
                                        "tracestate"};
    for (int i = 0; i < 3; i++)
        if (!cJSON_GetObjectItemCaseSensitive(orig, trace[i])) {
            strcat(add, ",\"");
            strcat(add, trace[i]);
            strcat(add, "\":\"\"");
        }
    if (!cJSON_GetObjectItemCaseSensitive(orig, "time")) {
        strcat(add, ",\"time\":");
        add_json_str(add, sizeof add, time_now);
    }
    bool empty = orig->child == NULL;
    size_t n = len - 1 + 1 + strlen(add) + 2;
    char *out = malloc(n + 1);
    snprintf(out, n + 1, "%.*s%s%s}", (int)(len - 1), body, empty ? "" : ",",
             add);
    return out;
}

/* Makes body a Dapr-enriched CloudEvent for topic; NULL on invalid JSON.
 * wrap: the body was not sent as a CloudEvent. *text receives the event as
 * it will be delivered. */
static cJSON *enrich(const char *topic, const char *body, size_t len,
                     const char *ctype, bool wrap, char **text)
{
    cJSON *ev;
    char tbuf[64];
    time_t tt = time(NULL);
    struct tm tm;
    strftime(tbuf, sizeof tbuf, "%Y-%m-%dT%H:%M:%SZ", gmtime_r(&tt, &tm));
    *text = NULL;
    if (wrap) {
        ev = cJSON_CreateObject();
        char id[64];
        snprintf(id, sizeof id, "standin-%d-%lu", (int)getpid(),
                 ++id_counter);
        cJSON_AddStringToObject(ev, "id", id);
        cJSON_AddStringToObject(ev, "type", "com.dapr.event.sent");
        cJSON_AddStringToObject(ev, "source", "standin-app");
        cJSON_AddStringToObject(ev, "specversion", "1.0");
        cJSON_AddStringToObject(ev, "datacontenttype",
                                ctype ? ctype : "text/plain");
        cJSON *data = cJSON_ParseWithLength(body, len);
        if (data) {
            cJSON_AddItemToObject(ev, "data", data);
        } else {
            char *s = strndup(body, len);
            cJSON_AddStringToObject(ev, "data", s);
            free(s);
        }
    } else {
        ev = cJSON_ParseWithLength(body, len);
        if (!ev || !cJSON_IsObject(ev)) {
            cJSON_Delete(ev);
            return NULL;
        }
        *text = splice(body, len, ev, topic, tbuf);
    }
    cJSON_DeleteItemFromObjectCaseSensitive(ev, "topic");
    cJSON_AddStringToObject(ev, "topic", topic);
    cJSON_DeleteItemFromObjectCaseSensitive(ev, "pubsubname");
    cJSON_AddStringToObject(ev, "pubsubname", opt_pubsub);
    if (!cJSON_GetObjectItemCaseSensitive(ev, "traceid"))
        cJSON_AddStringToObject(ev, "traceid", "");
    if (!cJSON_GetObjectItemCaseSensitive(ev, "traceparent"))
        cJSON_AddStringToObject(ev, "traceparent", "");
    if (!cJSON_GetObjectItemCaseSensitive(ev, "tracestate"))
        cJSON_AddStringToObject(ev, "tracestate", "");
    if (!cJSON_GetObjectItemCaseSensitive(ev, "time"))
        cJSON_AddStringToObject(ev, "time", tbuf);
    if (!*text)
        *text = cJSON_PrintUnformatted(ev);
    return ev;
}

/* Appends ev (taken) to topic's log and queues body (taken; NULL = print
 * ev) for delivery. mu held. */
static void store(const char *topic, cJSON *ev, cJSON *meta, char *body)
{
    topic_t *t = topic_get(topic);
    if (!body)
        body = cJSON_PrintUnformatted(ev);
    if (opt_keep_log) {
        cJSON *rec = cJSON_CreateObject();
        cJSON_AddItemToObject(rec, "event", ev);
        cJSON_AddItemToObject(rec, "metadata",
                              meta ? meta : cJSON_CreateObject());
        cJSON_AddItemToArray(t->log, rec);
    } else {
        cJSON_Delete(ev);
        cJSON_Delete(meta);
    }
    st.published++;
    enqueue(t, body, strlen(body), 1, 0);
}

/* ------------------------------------------------------------ HTTP server */

typedef struct conn {
    char *body;
    size_t len;
} conn_t;

static enum MHD_Result send_resp(struct MHD_Connection *c, unsigned status,
                                 const char *ctype, const char *body)
{
    struct MHD_Response *r = MHD_create_response_from_buffer(
        strlen(body), (void *)body, MHD_RESPMEM_MUST_COPY);
    if (ctype)
        MHD_add_response_header(r, "Content-Type", ctype);
    enum MHD_Result rc = MHD_queue_response(c, status, r);
    MHD_destroy_response(r);
    return rc;
}

static enum MHD_Result send_json(struct MHD_Connection *c, unsigned status,
                                 cJSON *j)
{
    char *s = cJSON_PrintUnformatted(j);
    cJSON_Delete(j);
    enum MHD_Result rc = send_resp(c, status, "application/json", s);
    free(s);
    return rc;
}

static enum MHD_Result dapr_error(struct MHD_Connection *c, unsigned status,
                                  const char *code, const char *msg)
{
    cJSON *j = cJSON_CreateObject();
    cJSON_AddStringToObject(j, "errorCode", code);
    cJSON_AddStringToObject(j, "message", msg);
    return send_json(c, status, j);
}

static enum MHD_Result collect_meta(void *cls, enum MHD_ValueKind kind,
                                    const char *key, const char *value)
{
    cJSON *meta = cls;
    if (strncmp(key, "metadata.", 9) == 0)
        cJSON_AddStringToObject(meta, key + 9, value ? value : "");
    return MHD_YES;
}

/* Splits "<pubsub>/<topic>" after prefix; topic may contain '/'. */
static bool split_path(const char *url, const char *prefix, char *pubsub,
                       size_t np, const char **topic)
{
    size_t pl = strlen(prefix);
    if (strncmp(url, prefix, pl) != 0)
        return false;
    const char *p = url + pl, *slash = strchr(p, '/');
    if (!slash || slash == p || !slash[1] || (size_t)(slash - p) >= np)
        return false;
    memcpy(pubsub, p, (size_t)(slash - p));
    pubsub[slash - p] = '\0';
    *topic = slash + 1;
    return true;
}

static enum MHD_Result on_publish(struct MHD_Connection *c, const char *url,
                                  conn_t *cn)
{
    char pubsub[256];
    const char *topic;
    if (!split_path(url, "/v1.0/publish/", pubsub, sizeof pubsub, &topic))
        return dapr_error(c, 404, "ERR_NOT_FOUND", "bad publish path");
    if (strcmp(pubsub, opt_pubsub) != 0)
        return dapr_error(c, 404, "ERR_PUBSUB_NOT_FOUND",
                          "pubsub is not found");
    pthread_mutex_lock(&mu);
    if (fail.count > 0 && !fail.bulk_every) {
        fail.count--;
        st.injected_failures++;
        int status = fail.status;
        char code[64];
        snprintf(code, sizeof code, "%s", fail.code);
        pthread_mutex_unlock(&mu);
        return dapr_error(c, (unsigned)status, code, "injected failure");
    }
    pthread_mutex_unlock(&mu);
    const char *ct = MHD_lookup_connection_value(c, MHD_HEADER_KIND,
                                                 "Content-Type");
    bool ce = ct && strncmp(ct, "application/cloudevents+json", 28) == 0;
    char *text;
    cJSON *ev = enrich(topic, cn->body ? cn->body : "", cn->len, ct, !ce,
                       &text);
    if (!ev)
        return dapr_error(c, 500, "ERR_PUBSUB_CLOUD_EVENTS_SER",
                          "error when unmarshalling the request as cloud "
                          "event: invalid JSON");
    cJSON *meta = cJSON_CreateObject();
    MHD_get_connection_values(c, MHD_GET_ARGUMENT_KIND, collect_meta, meta);
    pthread_mutex_lock(&mu);
    if (!ce)
        st.wrapped++;
    store(topic, ev, meta, text);
    pthread_mutex_unlock(&mu);
    return send_resp(c, 204, NULL, "");
}

static enum MHD_Result on_bulk(struct MHD_Connection *c, const char *url,
                               conn_t *cn)
{
    char pubsub[256];
    const char *topic;
    if (!split_path(url, "/v1.0-alpha1/publish/bulk/", pubsub, sizeof pubsub,
                    &topic))
        return dapr_error(c, 404, "ERR_NOT_FOUND", "bad bulk path");
    if (strcmp(pubsub, opt_pubsub) != 0)
        return dapr_error(c, 404, "ERR_PUBSUB_NOT_FOUND",
                          "pubsub is not found");
    const char *ct = MHD_lookup_connection_value(c, MHD_HEADER_KIND,
                                                 "Content-Type");
    cJSON *arr = cJSON_ParseWithLength(cn->body ? cn->body : "", cn->len);
    if (!cJSON_IsArray(arr)) {
        cJSON_Delete(arr);
        return dapr_error(c, 400, "ERR_PUBSUB_EVENTS_SER",
                          "bulk body is not a JSON array of entries");
    }
    cJSON *failed = cJSON_CreateArray();
    pthread_mutex_lock(&mu);
    if (!ct || strncmp(ct, "application/json", 16) != 0)
        st.bad_content_type++;
    st.bulk_requests++;
    cJSON *en;
    cJSON_ArrayForEach(en, arr) {
        cJSON *eid = cJSON_GetObjectItemCaseSensitive(en, "entryId");
        cJSON *evj = cJSON_GetObjectItemCaseSensitive(en, "event");
        cJSON *ect = cJSON_GetObjectItemCaseSensitive(en, "contentType");
        cJSON *md = cJSON_GetObjectItemCaseSensitive(en, "metadata");
        const char *id = cJSON_IsString(eid) ? eid->valuestring : "";
        st.bulk_entries++;
        fail.bulk_seen++;
        bool inject = fail.bulk_every > 0 && fail.count > 0 &&
                      fail.bulk_seen % fail.bulk_every == 0;
        char *text = cJSON_IsString(evj) ? strdup(evj->valuestring)
                                          : cJSON_PrintUnformatted(evj);
        bool ce = cJSON_IsString(ect) &&
                  strstr(ect->valuestring, "cloudevents") != NULL;
        char *out = NULL;
        cJSON *ev = (text && !inject)
                        ? enrich(topic, text, strlen(text),
                                 cJSON_IsString(ect) ? ect->valuestring : NULL,
                                 !ce, &out)
                        : NULL;
        free(text);
        if (!ev) {
            if (inject) {
                fail.count--;
                st.injected_failures++;
            }
            cJSON *f = cJSON_CreateObject();
            cJSON_AddStringToObject(f, "entryId", id);
            cJSON_AddStringToObject(f, "error", inject ? "injected failure"
                                                       : "invalid event");
            cJSON_AddItemToArray(failed, f);
            continue;
        }
        if (!ce)
            st.wrapped++;
        store(topic, ev, cJSON_IsObject(md) ? cJSON_Duplicate(md, 1) : NULL,
              out);
    }
    pthread_mutex_unlock(&mu);
    cJSON_Delete(arr);
    if (cJSON_GetArraySize(failed) == 0) {
        cJSON_Delete(failed);
        return send_resp(c, 204, NULL, "");
    }
    cJSON *j = cJSON_CreateObject();
    cJSON_AddItemToObject(j, "failedEntries", failed);
    cJSON_AddStringToObject(j, "errorCode", "ERR_PUBSUB_PUBLISH_MESSAGE");
    return send_json(c, 500, j);
}

static enum MHD_Result on_stats(struct MHD_Connection *c)
{
    cJSON *j = cJSON_CreateObject();
    pthread_mutex_lock(&mu);
#define S(f) cJSON_AddNumberToObject(j, #f, (double)st.f)
    S(published); S(bulk_requests); S(bulk_entries); S(injected_failures);
    S(wrapped); S(unauthorized); S(bad_content_type); S(deliveries);
    S(bulk_deliveries); S(success); S(retry); S(drop); S(app_404);
    S(app_401); S(app_errors); S(dead_lettered); S(subscribe_reads);
#undef S
    pthread_mutex_unlock(&mu);
    return send_json(c, 200, j);
}

static enum MHD_Result on_topic(struct MHD_Connection *c, const char *name)
{
    pthread_mutex_lock(&mu);
    topic_t *t = topic_get(name);
    cJSON *copy = cJSON_Duplicate(t->log, 1);
    pthread_mutex_unlock(&mu);
    return send_json(c, 200, copy);
}

static enum MHD_Result on_fail(struct MHD_Connection *c, conn_t *cn)
{
    cJSON *j = cJSON_ParseWithLength(cn->body ? cn->body : "", cn->len);
    if (!j)
        return send_resp(c, 400, "text/plain", "bad json");
    cJSON *n = cJSON_GetObjectItem(j, "count");
    cJSON *s = cJSON_GetObjectItem(j, "status");
    cJSON *e = cJSON_GetObjectItem(j, "errorCode");
    cJSON *b = cJSON_GetObjectItem(j, "bulkFailEvery");
    pthread_mutex_lock(&mu);
    fail.count = cJSON_IsNumber(n) ? n->valueint : 0;
    fail.status = cJSON_IsNumber(s) ? s->valueint : 500;
    fail.bulk_every = cJSON_IsNumber(b) ? b->valueint : 0;
    fail.bulk_seen = 0;
    snprintf(fail.code, sizeof fail.code, "%s",
             cJSON_IsString(e) ? e->valuestring : "ERR_PUBSUB_PUBLISH_MESSAGE");
    pthread_mutex_unlock(&mu);
    cJSON_Delete(j);
    return send_resp(c, 204, NULL, "");
}

static bool token_ok(struct MHD_Connection *c)
{
    if (!opt_api_token)
        return true;
    const char *got =
        MHD_lookup_connection_value(c, MHD_HEADER_KIND, "dapr-api-token");
    return got && strcmp(got, opt_api_token) == 0;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *c,
                                  const char *url, const char *method,
                                  const char *version, const char *upload,
                                  size_t *upload_size, void **con_cls)
{
    conn_t *cn = *con_cls;
    if (!cn) {
        *con_cls = calloc(1, sizeof(conn_t));
        return MHD_YES;
    }
    if (*upload_size) {
        cn->body = realloc(cn->body, cn->len + *upload_size + 1);
        memcpy(cn->body + cn->len, upload, *upload_size);
        cn->len += *upload_size;
        cn->body[cn->len] = '\0';
        *upload_size = 0;
        return MHD_YES;
    }
    bool post = strcmp(method, "POST") == 0;
    if (strncmp(url, "/standin/", 9) == 0) {
        if (strcmp(url, "/standin/stats") == 0)
            return on_stats(c);
        if (strncmp(url, "/standin/topic/", 15) == 0)
            return on_topic(c, url + 15);
        if (post && strcmp(url, "/standin/fail") == 0)
            return on_fail(c, cn);
        return send_resp(c, 404, "text/plain", "no such hook");
    }
    if (!token_ok(c)) {
        pthread_mutex_lock(&mu);
        st.unauthorized++;
        pthread_mutex_unlock(&mu);
        return send_resp(c, 401, "text/plain", "invalid api token");
    }
    if (strcmp(url, "/v1.0/healthz") == 0 ||
        strcmp(url, "/v1.0/healthz/outbound") == 0)
        return send_resp(c, 204, NULL, "");
    if (post && strncmp(url, "/v1.0/publish/", 14) == 0)
        return on_publish(c, url, cn);
    if (post && !opt_no_bulk &&
        strncmp(url, "/v1.0-alpha1/publish/bulk/", 26) == 0)
        return on_bulk(c, url, cn);
    return send_resp(c, 404, "text/plain", "404 page not found");
}

static void on_done(void *cls, struct MHD_Connection *c, void **con_cls,
                    enum MHD_RequestTerminationCode toe)
{
    conn_t *cn = *con_cls;
    if (cn) {
        free(cn->body);
        free(cn);
    }
    *con_cls = NULL;
}

/* ------------------------------------------------------------ to the app */

typedef struct resp {
    char *body;
    size_t len;
} resp_t;

static size_t on_body(char *d, size_t s, size_t n, void *o)
{
    resp_t *r = o;
    r->body = realloc(r->body, r->len + s * n + 1);
    memcpy(r->body + r->len, d, s * n);
    r->len += s * n;
    r->body[r->len] = '\0';
    return s * n;
}

/* POSTs (or GETs when body is NULL) to the app; returns the HTTP status,
 * 0 when no answer. */
static long app_call(CURL *h, const char *path, const char *body, size_t len,
                     const char *ctype, resp_t *r)
{
    char url[2048];
    snprintf(url, sizeof url, "http://127.0.0.1:%d%s", opt_app_port, path);
    struct curl_slist *hdrs = curl_slist_append(NULL, "Expect:");
    char line[512];
    if (ctype) {
        snprintf(line, sizeof line, "Content-Type: %s", ctype);
        hdrs = curl_slist_append(hdrs, line);
    }
    if (opt_app_token) {
        snprintf(line, sizeof line, "dapr-api-token: %s", opt_app_token);
        hdrs = curl_slist_append(hdrs, line);
    }
    curl_easy_reset(h);
    curl_easy_setopt(h, CURLOPT_URL, url);
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, hdrs);
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, 120000L);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, r);
    if (body) {
        curl_easy_setopt(h, CURLOPT_POSTFIELDS, body);
        curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)len);
    }
    long status = 0;
    if (curl_easy_perform(h) == CURLE_OK)
        curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &status);
    curl_slist_free_all(hdrs);
    return status;
}

enum { OUT_SUCCESS, OUT_RETRY, OUT_DROP, OUT_GONE };

/* The status word in an app answer, as daprd reads it. */
static int outcome_of(const char *status)
{
    if (!status)
        return OUT_SUCCESS;
    if (strcmp(status, "SUCCESS") == 0)
        return OUT_SUCCESS;
    if (strcmp(status, "DROP") == 0)
        return OUT_DROP;
    return OUT_RETRY; /* RETRY, or anything else (case-sensitive) */
}

/* Applies an outcome to a job (takes it). mu held. */
static void settle_job(job_t *j, int out)
{
    switch (out) {
    case OUT_SUCCESS:
        st.success++;
        job_free(j);
        return;
    case OUT_GONE:
        job_free(j);
        return;
    case OUT_DROP:
        st.drop++;
        break;
    case OUT_RETRY:
        st.retry++;
        if (opt_max_redeliveries <= 0 || j->attempt <= opt_max_redeliveries) {
            int shift = j->attempt - 1 < 5 ? j->attempt - 1 : 5;
            int delay = opt_retry_ms << shift;
            if (delay > 2000)
                delay = 2000;
            j->attempt++;
            j->due = now_ms() + (uint64_t)delay;
            heap_push(j);
            pthread_cond_signal(&work_cv);
            return;
        }
        break;
    }
    /* dropped, or out of redeliveries: to the dead-letter topic */
    if (j->t->dlq && *j->t->dlq) {
        cJSON *ev = cJSON_ParseWithLength(j->body, j->len);
        if (ev) {
            cJSON_DeleteItemFromObjectCaseSensitive(ev, "topic");
            cJSON_AddStringToObject(ev, "topic", j->t->dlq);
            st.dead_lettered++;
            st.published--; /* store counts it; this is not a publish */
            store(j->t->dlq, ev, NULL, NULL);
        }
    }
    job_free(j);
}

/* route: copied under the lock (a re-read of /dapr/subscribe replaces it) */
static void deliver_single(CURL *h, job_t *j, const char *route)
{
    resp_t r = {0};
    char *traced = NULL;
    if (opt_fresh_trace) {
        cJSON *ev = cJSON_ParseWithLength(j->body, j->len);
        if (ev) {
            char tp[64];
            snprintf(tp, sizeof tp, "00-%016lx%016lx-%016lx-01",
                     (unsigned long)random(), (unsigned long)random(),
                     (unsigned long)random());
            cJSON_DeleteItemFromObjectCaseSensitive(ev, "traceparent");
            cJSON_AddStringToObject(ev, "traceparent", tp);
            traced = cJSON_PrintUnformatted(ev);
            cJSON_Delete(ev);
        }
    }
    long status = app_call(h, route, traced ? traced : j->body,
                           traced ? strlen(traced) : j->len,
                           "application/cloudevents+json", &r);
    free(traced);
    int out;
    if (status >= 200 && status < 300) {
        cJSON *a = r.body ? cJSON_Parse(r.body) : NULL;
        cJSON *s = a ? cJSON_GetObjectItemCaseSensitive(a, "status") : NULL;
        out = outcome_of(cJSON_IsString(s) ? s->valuestring : NULL);
        cJSON_Delete(a);
    } else {
        out = status == 404 ? OUT_GONE : OUT_RETRY;
    }
    free(r.body);
    pthread_mutex_lock(&mu);
    st.deliveries++;
    if (status == 404)
        st.app_404++;
    else if (status == 401)
        st.app_401++;
    else if (status < 200 || status >= 300)
        st.app_errors++;
    settle_job(j, out);
    pthread_mutex_unlock(&mu);
}

static void deliver_bulk(CURL *h, job_t **jobs, int n, const char *route)
{
    topic_t *t = jobs[0]->t;
    cJSON *env = cJSON_CreateObject();
    char id[64];
    snprintf(id, sizeof id, "bulk-%d-%lu", (int)getpid(), ++id_counter);
    cJSON_AddStringToObject(env, "id", id);
    cJSON_AddStringToObject(env, "type", "com.dapr.event.sent.bulk");
    cJSON_AddStringToObject(env, "topic", t->name);
    cJSON_AddStringToObject(env, "pubsubname", opt_pubsub);
    cJSON *entries = cJSON_AddArrayToObject(env, "entries");
    for (int i = 0; i < n; i++) {
        cJSON *e = cJSON_CreateObject();
        snprintf(id, sizeof id, "e%d", i);
        cJSON_AddStringToObject(e, "entryId", id);
        cJSON *ev = cJSON_ParseWithLength(jobs[i]->body, jobs[i]->len);
        cJSON_AddItemToObject(e, "event",
                              ev ? ev : cJSON_CreateString(jobs[i]->body));
        cJSON_AddStringToObject(e, "contentType",
                                "application/cloudevents+json");
        cJSON_AddObjectToObject(e, "metadata");
        cJSON_AddItemToArray(entries, e);
    }
    char *body = cJSON_PrintUnformatted(env);
    cJSON_Delete(env);
    resp_t r = {0};
    long status = app_call(h, route, body, strlen(body),
                           "application/cloudevents+json", &r);
    free(body);
    int *outs = calloc((size_t)n, sizeof *outs);
    for (int i = 0; i < n; i++)
        outs[i] = status == 404 ? OUT_GONE : OUT_RETRY;
    if (status >= 200 && status < 300) {
        cJSON *a = r.body ? cJSON_Parse(r.body) : NULL;
        cJSON *sts = a ? cJSON_GetObjectItemCaseSensitive(a, "statuses")
                       : NULL;
        cJSON *s;
        cJSON_ArrayForEach(s, sts) { /* a missing entry stays RETRY */
            cJSON *eid = cJSON_GetObjectItemCaseSensitive(s, "entryId");
            cJSON *stv = cJSON_GetObjectItemCaseSensitive(s, "status");
            int k;
            if (cJSON_IsString(eid) && sscanf(eid->valuestring, "e%d", &k) ==
                                           1 && k >= 0 && k < n)
                outs[k] = outcome_of(cJSON_IsString(stv) ? stv->valuestring
                                                         : "");
        }
        cJSON_Delete(a);
    }
    free(r.body);
    pthread_mutex_lock(&mu);
    st.deliveries++;
    st.bulk_deliveries++;
    if (status == 404)
        st.app_404++;
    else if (status == 401)
        st.app_401++;
    else if (status < 200 || status >= 300)
        st.app_errors++;
    for (int i = 0; i < n; i++)
        settle_job(jobs[i], outs[i]);
    pthread_mutex_unlock(&mu);
    free(outs);
}

static void *worker(void *arg)
{
    CURL *h = curl_easy_init();
    job_t *batch[1000];
    pthread_mutex_lock(&mu);
    while (!stopping) {
        uint64_t now = now_ms();
        while (ndelayed && delayed[0]->due <= now) {
            job_t *j = heap_pop();
            if (j->t->subscribed) {
                ready_push(j);
            } else {
                j->next = NULL;
                if (j->t->held_tail)
                    j->t->held_tail->next = j;
                else
                    j->t->held_head = j;
                j->t->held_tail = j;
            }
        }
        if (!ready_head) {
            struct timespec ts;
            clock_gettime(CLOCK_REALTIME, &ts);
            uint64_t wait = ndelayed ? delayed[0]->due - now : 200;
            if (wait > 200)
                wait = 200;
            ts.tv_nsec += (long)wait * 1000000L;
            ts.tv_sec += ts.tv_nsec / 1000000000L;
            ts.tv_nsec %= 1000000000L;
            pthread_cond_timedwait(&work_cv, &mu, &ts);
            continue;
        }
        job_t *j = ready_head;
        ready_head = j->next;
        if (!ready_head)
            ready_tail = NULL;
        int n = 1;
        batch[0] = j;
        int max = j->t->bulk_max;
        if (max > 1000)
            max = 1000;
        /* bulk: take more of the same topic */
        for (job_t **pp = &ready_head; max > 1 && *pp && n < max;) {
            if ((*pp)->t != j->t) {
                pp = &(*pp)->next;
                continue;
            }
            job_t *k = *pp;
            *pp = k->next;
            if (ready_tail == k) {
                ready_tail = NULL;
                for (job_t *x = ready_head; x; x = x->next)
                    ready_tail = x;
            }
            batch[n++] = k;
        }
        char route[1024];
        snprintf(route, sizeof route, "%s", j->t->route ? j->t->route : "/");
        pthread_mutex_unlock(&mu);
        if (max > 1)
            deliver_bulk(h, batch, n, route);
        else
            deliver_single(h, j, route);
        pthread_mutex_lock(&mu);
    }
    pthread_mutex_unlock(&mu);
    curl_easy_cleanup(h);
    return NULL;
}

/* Reads /dapr/subscribe and applies it. Returns true when the app
 * answered. */
static bool read_subscriptions(CURL *h)
{
    resp_t r = {0};
    long status = app_call(h, "/dapr/subscribe", NULL, 0, NULL, &r);
    cJSON *arr = status == 200 && r.body ? cJSON_Parse(r.body) : NULL;
    free(r.body);
    if (status == 401) {
        pthread_mutex_lock(&mu);
        st.app_401++;
        pthread_mutex_unlock(&mu);
    }
    if (!cJSON_IsArray(arr)) {
        cJSON_Delete(arr);
        return status != 0;
    }
    pthread_mutex_lock(&mu);
    st.subscribe_reads++;
    for (topic_t *t = topics; t; t = t->next)
        t->subscribed = false;
    cJSON *s;
    cJSON_ArrayForEach(s, arr) {
        cJSON *ps = cJSON_GetObjectItemCaseSensitive(s, "pubsubname");
        cJSON *tp = cJSON_GetObjectItemCaseSensitive(s, "topic");
        cJSON *rt = cJSON_GetObjectItemCaseSensitive(s, "route");
        cJSON *dl = cJSON_GetObjectItemCaseSensitive(s, "deadLetterTopic");
        cJSON *bs = cJSON_GetObjectItemCaseSensitive(s, "bulkSubscribe");
        if (!cJSON_IsString(ps) || strcmp(ps->valuestring, opt_pubsub) != 0 ||
            !cJSON_IsString(tp) || !cJSON_IsString(rt))
            continue;
        topic_t *t = topic_get(tp->valuestring);
        free(t->route);
        free(t->dlq);
        t->route = strdup(rt->valuestring);
        t->dlq = cJSON_IsString(dl) ? strdup(dl->valuestring) : NULL;
        t->bulk_max = 0;
        if (cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(bs, "enabled"))) {
            cJSON *mx = cJSON_GetObjectItemCaseSensitive(bs,
                                                         "maxMessagesCount");
            t->bulk_max = cJSON_IsNumber(mx) && mx->valueint > 0
                              ? mx->valueint
                              : 100;
        }
        t->subscribed = true;
        while (t->held_head) { /* held events go out now */
            job_t *j = t->held_head;
            t->held_head = j->next;
            ready_push(j);
        }
        t->held_tail = NULL;
    }
    pthread_mutex_unlock(&mu);
    cJSON_Delete(arr);
    return true;
}

static void *subscriber(void *arg)
{
    CURL *h = curl_easy_init();
    bool read_once = false;
    while (!stopping) {
        if (!read_once || opt_resub_ms > 0) {
            bool ok = read_subscriptions(h);
            read_once |= ok;
        }
        usleep((useconds_t)(read_once && opt_resub_ms > 0 ? opt_resub_ms
                                                          : 20) * 1000);
    }
    curl_easy_cleanup(h);
    return NULL;
}

/* ------------------------------------------------------------ main */

/* A port nobody listens on now (for --app-port 0). */
static int free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {0};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t n = sizeof a;
    if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof a) != 0 ||
        getsockname(fd, (struct sockaddr *)&a, &n) != 0) {
        if (fd >= 0)
            close(fd);
        return -1;
    }
    close(fd);
    return ntohs(a.sin_port);
}

int main(int argc, char **argv)
{
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(a, "--no-log") == 0) {
            opt_keep_log = false;
            continue;
        }
        if (strcmp(a, "--fresh-trace") == 0) {
            opt_fresh_trace = true;
            continue;
        }
        if (strcmp(a, "--no-bulk") == 0) {
            opt_no_bulk = true;
            continue;
        }
        if (!v) {
            fprintf(stderr, "dapr-standin: %s needs a value\n", a);
            return 2;
        }
        i++;
        if (strcmp(a, "--port") == 0)
            opt_port = atoi(v);
        else if (strcmp(a, "--app-port") == 0)
            opt_app_port = atoi(v);
        else if (strcmp(a, "--pubsub") == 0)
            opt_pubsub = v;
        else if (strcmp(a, "--api-token") == 0)
            opt_api_token = v;
        else if (strcmp(a, "--app-token") == 0)
            opt_app_token = v;
        else if (strcmp(a, "--resubscribe-ms") == 0)
            opt_resub_ms = atoi(v);
        else if (strcmp(a, "--retry-ms") == 0)
            opt_retry_ms = atoi(v);
        else if (strcmp(a, "--max-redeliveries") == 0)
            opt_max_redeliveries = atoi(v);
        else if (strcmp(a, "--workers") == 0)
            opt_workers = atoi(v);
        else {
            fprintf(stderr, "dapr-standin: unknown option %s\n", a);
            return 2;
        }
    }
    if (opt_workers < 1)
        opt_workers = 1;
    bool print_app_port = opt_app_port == 0;
    if (print_app_port && (opt_app_port = free_port()) <= 0) {
        fprintf(stderr, "dapr-standin: no free port for the app\n");
        return 1;
    }
    signal(SIGPIPE, SIG_IGN);
    /* SIGTERM/SIGINT are taken by sigwait below: blocked here, before any
     * thread starts, so every thread inherits the mask. (A handler plus
     * pause() would hang when the signal lands on another thread, or
     * between the check and the pause.) */
    sigset_t stop_sigs;
    sigemptyset(&stop_sigs);
    sigaddset(&stop_sigs, SIGTERM);
    sigaddset(&stop_sigs, SIGINT);
    pthread_sigmask(SIG_BLOCK, &stop_sigs, NULL);
    curl_global_init(CURL_GLOBAL_ALL);
    struct MHD_Daemon *d = MHD_start_daemon(
        MHD_USE_THREAD_PER_CONNECTION | MHD_USE_INTERNAL_POLLING_THREAD |
            MHD_USE_POLL,
        (uint16_t)opt_port, NULL, NULL, on_request, NULL,
        MHD_OPTION_NOTIFY_COMPLETED, on_done, NULL, MHD_OPTION_END);
    if (!d) {
        fprintf(stderr, "dapr-standin: cannot listen on port %d\n", opt_port);
        return 1;
    }
    const union MHD_DaemonInfo *info =
        MHD_get_daemon_info(d, MHD_DAEMON_INFO_BIND_PORT);
    printf("PORT %u\n", (unsigned)info->port);
    if (print_app_port)
        printf("APP_PORT %d\n", opt_app_port);
    fflush(stdout);
    pthread_t sub_th, *workers = calloc((size_t)opt_workers, sizeof *workers);
    {
        pthread_create(&sub_th, NULL, subscriber, NULL);
        for (int i = 0; i < opt_workers; i++)
            pthread_create(&workers[i], NULL, worker, NULL);
    }
    int sig;
    sigwait(&stop_sigs, &sig);
    stopping = 1;
    /* A test tool: workers may sit in a request to a vanished app, so do
     * not wait for them. */
    _exit(0);
}
