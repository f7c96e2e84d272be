/*
 * What the app server answers (libmicrohttpd callbacks, on each
 * connection's thread):
 *
 *   GET  /dapr/subscribe        every subscription of every bus on this port
 *   POST /evbus/<pubsub>/<topic> a delivery (dapr_delivery.c turns the
 *                               request into entries)
 *   GET  /healthz               200 while the server runs
 *   another method on these     405 with Allow
 *
 * A delivery is queued to one member of each consumer group subscribed to
 * the route (the sidecar delivers once per app, so groups inside one
 * process fan out here), the bus's poller is woken and the connection
 * thread waits until the core has settled every copy.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <cjson/cJSON.h>

#include "dapr_server_internal.h"

static const char *const status_name[] = {"SUCCESS", "RETRY", "DROP"};

/* ------------------------------------------------------------ replies */

static enum MHD_Result reply(struct MHD_Connection *c, unsigned status,
                             const char *ctype, char *body)
{
    struct MHD_Response *r =
        body ? MHD_create_response_from_buffer(strlen(body), body,
                                               MHD_RESPMEM_MUST_FREE)
             : MHD_create_response_from_buffer(0, (void *)"",
                                               MHD_RESPMEM_PERSISTENT);
    if (!r) {
        free(body);
        return MHD_NO;
    }
    if (ctype)
        MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, ctype);
    enum MHD_Result rc = MHD_queue_response(c, status, r);
    MHD_destroy_response(r);
    return rc;
}

static enum MHD_Result reply_text(struct MHD_Connection *c, unsigned status,
                                  const char *text)
{
    return reply(c, status, "text/plain", strdup(text));
}

/* 405 with the one method the route takes. */
static enum MHD_Result reply_allow(struct MHD_Connection *c, const char *allow)
{
    char text[64];
    snprintf(text, sizeof text, "method not allowed (use %s)", allow);
    struct MHD_Response *r = MHD_create_response_from_buffer(
        strlen(text), text, MHD_RESPMEM_MUST_COPY);
    if (!r)
        return MHD_NO;
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, "text/plain");
    MHD_add_response_header(r, MHD_HTTP_HEADER_ALLOW, allow);
    enum MHD_Result rc = MHD_queue_response(c, MHD_HTTP_METHOD_NOT_ALLOWED, r);
    MHD_destroy_response(r);
    return rc;
}

/* ------------------------------------------------------------ tokens */

static bool token_ok(struct MHD_Connection *c, const char *want)
{
    const char *got =
        MHD_lookup_connection_value(c, MHD_HEADER_KIND, DAPR_TOKEN_HEADER);
    if (!got)
        return false;
    size_t a = strlen(got), b = strlen(want);
    unsigned char diff = (unsigned char)(a != b);
    for (size_t i = 0; i < b; i++) /* constant time over the secret */
        diff |= (unsigned char)(want[i] ^ (i < a ? got[i] : 0));
    return diff == 0;
}

/* ------------------------------------------------------------ /dapr/subscribe */

static char *subscriptions_json(dapr_server_t *srv)
{
    cJSON *arr = cJSON_CreateArray();
    if (!arr)
        return NULL;
    pthread_mutex_lock(&srv->mu);
    for (dsub_t *s = srv->subs; s; s = s->next) {
        bool seen = false; /* one entry per route; groups fan out here */
        for (dsub_t *t = srv->subs; t != s && !seen; t = t->next)
            seen = strcmp(t->path, s->path) == 0;
        if (seen)
            continue;
        cJSON *o = cJSON_CreateObject();
        if (!o)
            break;
        cJSON_AddStringToObject(o, "pubsubname", s->bus->pubsub);
        cJSON_AddStringToObject(o, "topic", s->topic);
        cJSON_AddStringToObject(o, "route", s->route);
        size_t n = strlen(s->topic) + 5;
        char *dlq = malloc(n);
        if (dlq) {
            snprintf(dlq, n, "%s.dlq", s->topic);
            cJSON_AddStringToObject(o, "deadLetterTopic", dlq);
            free(dlq);
        }
        if (srv->bulk_subscribe > 0) {
            cJSON *bs = cJSON_AddObjectToObject(o, "bulkSubscribe");
            cJSON_AddBoolToObject(bs, "enabled", 1);
            cJSON_AddNumberToObject(bs, "maxMessagesCount",
                                    srv->bulk_subscribe);
            cJSON_AddNumberToObject(bs, "maxAwaitDurationMs", 100);
        }
        cJSON_AddItemToArray(arr, o);
    }
    pthread_mutex_unlock(&srv->mu);
    char *s = cJSON_PrintUnformatted(arr);
    cJSON_Delete(arr);
    return s;
}

/* ------------------------------------------------------------ deliveries */

void evbus__dapr_resolve(delivery_t *d, int status)
{
    request_t *req = d->req;
    dapr_entry_t *e = &req->d.e[d->idx];
    if (status > e->status)
        e->status = status;
    evbus_event_free(d->event);
    free(d);
    if (--req->pending == 0)
        pthread_cond_signal(&req->cv);
}

/* Takes queued (not fetched) copies of req off their queues as RETRY.
 * Called with srv->mu held. */
static void withdraw(dapr_server_t *srv, request_t *req)
{
    for (dsub_t *s = srv->subs; s; s = s->next) {
        delivery_t **pp = &s->qhead, *prev = NULL;
        while (*pp) {
            delivery_t *d = *pp;
            if (d->req != req) {
                prev = d;
                pp = &d->next;
                continue;
            }
            *pp = d->next;
            if (s->qtail == d)
                s->qtail = prev;
            evbus__dapr_resolve(d, ST_RETRY);
        }
    }
}

/* Queues a copy of every decoded entry to one member of each group
 * subscribed to path. Called with srv->mu held. Returns the number of
 * subscriptions matching (0 = nobody serves this route). */
static int dispatch(dapr_server_t *srv, request_t *req, const char *path)
{
    dsub_t *match[256];
    int nm = 0;
    for (dsub_t *s = srv->subs; s && nm < 256; s = s->next)
        if (strcmp(s->path, path) == 0)
            match[nm++] = s;
    if (nm == 0)
        return 0;
    req->topic = match[0]->topic;
    unsigned rr = srv->rr++;
    for (int g = 0; g < nm; g++) {
        /* the first subscription of each group stands for the group */
        bool first = true;
        for (int h = 0; h < g && first; h++)
            first = strcmp(match[h]->group, match[g]->group) != 0;
        if (!first)
            continue;
        dsub_t *members[256];
        int nmem = 0;
        for (int h = g; h < nm; h++)
            if (strcmp(match[h]->group, match[g]->group) == 0)
                members[nmem++] = match[h];
        for (int i = 0; i < req->d.n; i++) {
            dapr_entry_t *e = &req->d.e[i];
            if ((!e->event && !e->why) || e->status != ST_SUCCESS)
                continue;
            dsub_t *s = members[(rr + (unsigned)i) % (unsigned)nmem];
            delivery_t *d = calloc(1, sizeof *d);
            evbus_event_t *copy =
                d && e->event ? evbus_event_clone(e->event) : NULL;
            if (!d || (e->event && !copy)) {
                free(d);
                e->status = ST_RETRY;
                continue;
            }
            d->req = req;
            d->idx = i;
            d->sub = s;
            d->event = copy;
            if (s->qtail)
                s->qtail->next = d;
            else
                s->qhead = d;
            s->qtail = d;
            req->pending++;
        }
        for (int m = 0; m < nmem; m++)
            evbus_host_notify(members[m]->bus->host);
    }
    return nm;
}

static char *answer_json(const request_t *req)
{
    const dapr_delivery_t *d = &req->d;
    evbus__buf_t b = {0};
    if (d->kind != DAPR_BODY_BULK) {
        /* one status for the request; a batch is RETRYed (all of it) when
         * any entry asks for it: at-least-once, the acked ones repeat */
        int st = ST_SUCCESS;
        for (int i = 0; i < d->n; i++)
            if (d->e[i].status > st)
                st = d->e[i].status;
        evbus__buf_puts(&b, "{\"status\":\"");
        evbus__buf_puts(&b, status_name[st]);
        evbus__buf_puts(&b, "\"}");
    } else {
        evbus__buf_puts(&b, "{\"statuses\":[");
        for (int i = 0; i < d->n; i++) {
            evbus__buf_puts(&b, i ? ",{\"entryId\":" : "{\"entryId\":");
            evbus__buf_json_str(&b, d->e[i].entry_id ? d->e[i].entry_id
                                                          : "");
            evbus__buf_puts(&b, ",\"status\":\"");
            evbus__buf_puts(&b, status_name[d->e[i].status]);
            evbus__buf_puts(&b, "\"}");
        }
        evbus__buf_puts(&b, "]}");
    }
    return evbus__buf_take(&b, NULL);
}

static bool route_served(dapr_server_t *srv, const char *path, size_t *max)
{
    bool found = false;
    pthread_mutex_lock(&srv->mu);
    for (dsub_t *s = srv->subs; s; s = s->next)
        if (strcmp(s->path, path) == 0) {
            found = true;
            *max = evbus_host_max_event_bytes(s->bus->host);
            break;
        }
    pthread_mutex_unlock(&srv->mu);
    return found;
}

/* Request headers collected for the parser (MHD owns the strings for the
 * length of the request). As many as come: libmicrohttpd's per-connection
 * memory limit bounds them, and dropping one would drop an attribute. */
typedef struct {
    const char **names, **values;
    size_t n, cap;
    bool oom;
} headers_t;

static enum MHD_Result collect_header(void *cls, enum MHD_ValueKind kind,
                                      const char *key, const char *value)
{
    headers_t *h = cls;
    /* the attributes live in ce- headers; keep those and Content-Type */
    if (!value || (strncasecmp(key, "ce-", 3) != 0 &&
                   strcasecmp(key, MHD_HTTP_HEADER_CONTENT_TYPE) != 0))
        return MHD_YES;
    if (h->n == h->cap) {
        size_t cap = h->cap ? h->cap * 2 : 16;
        const char **n = realloc(h->names, cap * sizeof *n);
        if (n)
            h->names = n;
        const char **v = n ? realloc(h->values, cap * sizeof *v) : NULL;
        if (v)
            h->values = v;
        if (!n || !v) {
            h->oom = true;
            return MHD_NO;
        }
        h->cap = cap;
    }
    h->names[h->n] = key;
    h->values[h->n++] = value;
    return MHD_YES;
}

/* Decides what happens to entries that are not CloudEvents: DROP (the
 * sidecar dead-letters them) or, with undecodable=deadletter, the core
 * wraps and dead-letters them. A batch with such entries is refused as a
 * whole: 400, nothing delivered (a DROP would throw away its good ones).
 * Returns the HTTP status to answer at once, or 0. */
static unsigned judge_entries(dapr_server_t *srv, const char *topic,
                              request_t *req, char *why, size_t n)
{
    dapr_delivery_t *d = &req->d;
    if (d->refuse_status) {
        snprintf(why, n, "%s", d->refuse_why);
        return d->refuse_status;
    }
    for (int i = 0; i < d->n; i++) {
        dapr_entry_t *e = &d->e[i];
        if (e->event)
            continue;
        if (srv->undecodable_to_core) {
            /* the core wraps and dead-letters it, then it is acked */
            SRV_LOG(srv, EVBUS_LOG_WARN,
                    "delivery on %s is not a CloudEvent (%s); dead-lettering",
                    topic, e->why);
            continue;
        }
        if (d->kind == DAPR_BODY_BATCH) {
            snprintf(why, n, "batch entry %d is not a CloudEvent: %s", i,
                     e->why);
            return MHD_HTTP_BAD_REQUEST;
        }
        e->status = ST_DROP;
        SRV_LOG(srv, EVBUS_LOG_WARN,
                "delivery on %s is not a CloudEvent (%s); answering DROP",
                topic, e->why);
    }
    return 0;
}

static enum MHD_Result on_delivery(dapr_server_t *srv,
                                   struct MHD_Connection *c, const char *path,
                                   const char *body, size_t len)
{
    size_t max_bytes = EVBUS_EVENT_MAX_BYTES_DEFAULT;
    if (!route_served(srv, path, &max_bytes)) {
        SRV_LOG(srv, EVBUS_LOG_WARN,
                "delivery to %s: no subscription serves it (any more)", path);
        return reply(c, MHD_HTTP_NOT_FOUND, "application/json",
                     strdup("{\"status\":\"DROP\"}"));
    }
    headers_t h = {.n = 0};
    MHD_get_connection_values(c, MHD_HEADER_KIND, collect_header, &h);
    if (h.oom) {
        free(h.names);
        free(h.values);
        return reply(c, MHD_HTTP_INTERNAL_SERVER_ERROR, "application/json",
                     strdup("{\"status\":\"RETRY\"}"));
    }
    dapr_http_req_t in = {
        .content_type = MHD_lookup_connection_value(
            c, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_TYPE),
        .n_headers = h.n,
        .names = h.names,
        .values = h.values,
        .body = body,
        .len = len,
        .max_bytes = max_bytes,
    };
    request_t req;
    memset(&req, 0, sizeof req);
    int prc = evbus__dapr_parse_delivery(&in, &req.d);
    free(h.names);
    free(h.values);
    if (prc != EVBUS_OK) {
        evbus__dapr_delivery_free(&req.d); /* out of memory: sidecar retries */
        return reply(c, MHD_HTTP_INTERNAL_SERVER_ERROR, "application/json",
                     strdup("{\"status\":\"RETRY\"}"));
    }
    const char *topic = path + strlen(DAPR_ROUTE_PREFIX);
    char why[512];
    unsigned refuse = judge_entries(srv, topic, &req, why, sizeof why);
    if (refuse) {
        SRV_LOG(srv, EVBUS_LOG_WARN, "delivery on %s refused with %u: %s",
                topic, refuse, why);
        evbus__dapr_delivery_free(&req.d);
        evbus__buf_t b = {0};
        evbus__buf_puts(&b, "{\"error\":");
        evbus__buf_json_str(&b, why);
        evbus__buf_puts(&b, "}");
        return reply(c, refuse, "application/json",
                     evbus__buf_take(&b, NULL));
    }

    evbus__cond_init(&req.cv);
    pthread_mutex_lock(&srv->mu);
    dapr_entry_t *e = req.d.e;
    for (int i = 0; i < req.d.n; i++)
        if (e[i].id)
            e[i].count = evbus__dapr_counts_hit(srv->counts, path, e[i].id,
                                         e[i].hash);
    int served = dispatch(srv, &req, path);
    if (served == 0)
        for (int i = 0; i < req.d.n; i++)
            if (e[i].status == ST_SUCCESS)
                e[i].status = ST_RETRY; /* unsubscribed meanwhile */
    /* Every copy is settled by the core (or withdrawn here when nobody
     * polls for deliver_timeout_ms: it then goes back to the sidecar). */
    struct timespec ts = evbus__deadline_in(srv->deliver_timeout_ms);
    bool withdrawn = false;
    while (req.pending > 0) {
        if (withdrawn) {
            pthread_cond_wait(&req.cv, &srv->mu);
        } else if (evbus__cond_wait_until(&req.cv, &srv->mu, &ts) != 0 &&
                   req.pending > 0) {
            withdraw(srv, &req);
            withdrawn = true;
        }
    }
    for (int i = 0; i < req.d.n; i++)
        if (e[i].id && e[i].status == ST_SUCCESS)
            evbus__dapr_counts_forget(srv->counts, path, e[i].id, e[i].hash);
    pthread_mutex_unlock(&srv->mu);
    pthread_cond_destroy(&req.cv);
    char *answer = answer_json(&req);
    evbus__dapr_delivery_free(&req.d);
    return reply(c, MHD_HTTP_OK, "application/json", answer);
}

/* ------------------------------------------------------------ the daemon */

typedef struct conn_state {
    evbus__buf_t body;
    size_t held;  /* bytes counted in srv->buffered for this request */
    bool denied, too_big;
    bool busy;    /* the bodies of all requests would pass the budget */
} conn_state_t;

/* Takes n more bytes of st's body into the server-wide budget
 * (app_max_buffered_mb), so many slow uploads at once cannot hold more
 * memory than that. false: over it. */
static bool hold_body(dapr_server_t *srv, conn_state_t *st, size_t n)
{
    size_t budget = (size_t)srv->limits.max_buffered_mb << 20;
    pthread_mutex_lock(&srv->mu);
    bool ok = srv->buffered + n <= budget;
    if (ok) {
        srv->buffered += n;
        st->held += n;
    }
    pthread_mutex_unlock(&srv->mu);
    return ok;
}

enum MHD_Result evbus__dapr_on_request(void *cls, struct MHD_Connection *c,
                                       const char *url, const char *method,
                                       const char *version,
                                       const char *upload,
                                       size_t *upload_size, void **con_cls)
{
    dapr_server_t *srv = cls;
    conn_state_t *st = *con_cls;
    if (!st) {
        if (!(st = calloc(1, sizeof *st)))
            return MHD_NO;
        *con_cls = st;
        pthread_mutex_lock(&srv->mu);
        srv->active++;
        pthread_mutex_unlock(&srv->mu);
        st->denied = srv->app_token && !token_ok(c, srv->app_token);
        evbus__dapr_conn_request(srv->conns, c, !st->denied);
        return MHD_YES;
    }
    if (*upload_size) {
        if (!st->denied && !st->too_big && !st->busy) {
            /* over the limit, or no memory for it: refused either way */
            st->too_big = st->body.len + *upload_size > MAX_BODY;
            st->busy = !st->too_big && !hold_body(srv, st, *upload_size);
            if (!st->too_big && !st->busy) {
                evbus__buf_append(&st->body, upload, *upload_size);
                st->too_big = st->body.failed;
            }
        }
        *upload_size = 0;
        return MHD_YES;
    }
    if (st->denied) {
        SRV_LOG(srv, EVBUS_LOG_WARN,
                "%s %s refused: missing or wrong " DAPR_TOKEN_HEADER, method,
                url);
        return reply_text(c, MHD_HTTP_UNAUTHORIZED, "invalid api token");
    }
    if (st->too_big)
        return reply_text(c, MHD_HTTP_CONTENT_TOO_LARGE, "body too large");
    if (st->busy) {
        SRV_LOG(srv, EVBUS_LOG_WARN,
                "%s %s answered 503: request bodies held would pass "
                "app_max_buffered_mb=%u", method, url,
                srv->limits.max_buffered_mb);
        return reply_text(c, MHD_HTTP_SERVICE_UNAVAILABLE,
                          "busy: too many request bodies held at once "
                          "(app_max_buffered_mb), retry");
    }
    bool get = strcmp(method, "GET") == 0;
    bool post = strcmp(method, "POST") == 0;
    bool delivery_route =
        strncmp(url, DAPR_ROUTE_PREFIX, strlen(DAPR_ROUTE_PREFIX)) == 0;
    bool get_route = strcmp(url, "/dapr/subscribe") == 0 ||
                     strcmp(url, "/healthz") == 0;
    if ((delivery_route && !post) || (get_route && !get))
        return reply_allow(c, delivery_route ? "POST" : "GET");
    if (get && strcmp(url, "/dapr/subscribe") == 0) {
        char *s = subscriptions_json(srv);
        return s ? reply(c, MHD_HTTP_OK, "application/json", s)
                 : reply_text(c, MHD_HTTP_INTERNAL_SERVER_ERROR,
                              "out of memory");
    }
    if (get && strcmp(url, "/healthz") == 0)
        return reply(c, MHD_HTTP_OK, "application/json",
                     strdup("{\"status\":\"ok\"}"));
    if (delivery_route)
        return on_delivery(srv, c, url, st->body.data, st->body.len);
    return reply_text(c, MHD_HTTP_NOT_FOUND, "not found");
}

void evbus__dapr_on_completed(void *cls, struct MHD_Connection *c,
                              void **con_cls,
                              enum MHD_RequestTerminationCode toe)
{
    dapr_server_t *srv = cls;
    conn_state_t *st = *con_cls;
    if (st) {
        evbus__dapr_conn_idle(srv->conns, c);
        pthread_mutex_lock(&srv->mu);
        if (--srv->active == 0)
            pthread_cond_broadcast(&srv->answered);
        srv->buffered -= st->held;
        pthread_mutex_unlock(&srv->mu);
        free(st->body.data);
        free(st);
        *con_cls = NULL;
    }
}
