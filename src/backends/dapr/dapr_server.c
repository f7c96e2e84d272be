/*
 * The app side: an HTTP server (libmicrohttpd, one thread per connection)
 * on app_port that the sidecar calls.
 *
 *   GET  /dapr/subscribe        every subscription of every bus on this port
 *   POST /evbus/<pubsub>/<topic> a delivery (one CloudEvent, or a bulk
 *                               envelope with entries)
 *   GET  /healthz               200 while the server runs
 *
 * A delivery is decoded on the connection's thread, queued to one member of
 * each consumer group subscribed to the route (the sidecar delivers once per
 * app, so groups inside one process fan out here), the bus's poller is woken
 * and the connection thread waits until the core has settled every copy:
 * ACK -> {"status":"SUCCESS"} (also after the core dead-lettered it), RETRY
 * or RELEASE -> {"status":"RETRY"} (the sidecar redelivers under its
 * resiliency policy), bodies that are not a CloudEvent -> {"status":"DROP"}
 * (the sidecar moves them to the deadLetterTopic), with the reason logged.
 *
 * Several buses in one process may share an app port (one Dapr app, one
 * server); servers are kept in a process-wide list keyed by port.
 *
 * The server opens its port on the first fetch (the first evbus_poll after
 * subscribing), never earlier: daprd reads /dapr/subscribe once, when the
 * port first answers, so subscriptions must all be registered by then.
 *
 * Locking: servers_mu guards the list and reference counts; each server's
 * mu guards its subscriptions, their queues and pending requests. Order:
 * servers_mu, then a server's mu. The daemon is never stopped with mu held
 * (stopping joins connection threads that take mu).
 */
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include <cjson/cJSON.h>
#include <microhttpd.h>

#include "dapr_internal.h"

#define MAX_BODY (64u * 1024 * 1024)
#define COUNTS_MAX 100000
#define START_RETRY_MS 1000

enum { ST_SUCCESS = 0, ST_RETRY = 1, ST_DROP = 2 };
static const char *const status_name[] = {"SUCCESS", "RETRY", "DROP"};

typedef struct request request_t;
typedef struct dsub dsub_t;

/* One copy of one entry, queued for (then fetched by) one subscription. */
typedef struct delivery {
    request_t *req;
    int idx;
    dsub_t *sub;
    evbus_event_t *event; /* until fetched; then the core owns it */
    struct delivery *next;
} delivery_t;

typedef struct rentry {
    char *entry_id; /* bulk only */
    char *json;     /* the event as delivered */
    size_t len;
    char *id;       /* event id (counting); NULL when undecodable */
    uint64_t hash;  /* fingerprint of the event (counting) */
    int count;
    int status;
    evbus_event_t *event;
    char *why; /* not a CloudEvent: the reason (then event is NULL) */
} rentry_t;

struct request {
    pthread_cond_t cv;
    int pending; /* deliveries not settled */
    int n;
    rentry_t *e;
    const char *topic;
};

struct dsub {
    dapr_server_t *srv;
    dapr_t *bus;
    char *topic, *group;
    char *path;  /* decoded route, for matching */
    char *route; /* encoded route, as advertised */
    delivery_t *qhead, *qtail;
    dsub_t *next;
};

typedef struct bus_link {
    dapr_t *bus;
    struct bus_link *next;
} bus_link_t;

struct dapr_server {
    int port;
    char *bind_host, *app_token;
    int bulk_subscribe;
    long deliver_timeout_ms;
    bool undecodable_to_core; /* dead-letter bad bodies through the core */
    int refs;
    pthread_mutex_t mu;
    pthread_mutex_t log_mu; /* buses (taken after mu, never before) */
    struct MHD_Daemon *mhd;
    bool closing;
    uint64_t next_start_ms;
    dsub_t *subs;
    bus_link_t *buses; /* attached buses (for logging) */
    dapr_counts_t *counts;
    unsigned rr;
    struct dapr_server *next;
};

static pthread_mutex_t servers_mu = PTHREAD_MUTEX_INITIALIZER;
static dapr_server_t *servers;

/* Logs through any attached bus, with srv->mu held or not. log_mu keeps
 * that bus from detaching (and its host from going away) meanwhile. */
#define SRV_LOG(srv, level, ...)                                               \
    do {                                                                       \
        pthread_mutex_lock(&(srv)->log_mu);                                    \
        if ((srv)->buses)                                                      \
            evbus_host_log((srv)->buses->bus->host, level, __VA_ARGS__);       \
        pthread_mutex_unlock(&(srv)->log_mu);                                  \
    } while (0)

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

/* Dapr adds routing and tracing fields to every event it passes on; drop
 * the ones that carry nothing the publisher set, so the handler sees the
 * event as published. A non-empty traceparent/tracestate is kept. */
static void strip_dapr_fields(evbus_event_t *ev)
{
    evbus_event_set_ext(ev, "topic", NULL);
    evbus_event_set_ext(ev, "pubsubname", NULL);
    evbus_event_set_ext(ev, "traceid", NULL);
    static const char *const maybe_empty[] = {"traceparent", "tracestate"};
    for (int i = 0; i < 2; i++) {
        const char *v = evbus_event_ext(ev, maybe_empty[i]);
        if (v && !*v)
            evbus_event_set_ext(ev, maybe_empty[i], NULL);
    }
}

static uint64_t fnv(uint64_t h, const void *bytes, size_t len)
{
    const unsigned char *p = bytes;
    for (size_t i = 0; i < len; i++)
        h = (h ^ p[i]) * 1099511628211u;
    return (h ^ 0xff) * 1099511628211u; /* field separator */
}

static uint64_t fnv_str(uint64_t h, const char *s)
{
    return fnv(h, s ? s : "", s ? strlen(s) : 0);
}

/* What identifies one published event beyond its id, for counting its
 * deliveries: everything the publisher set, but none of the fields a
 * sidecar may write per delivery (tracing, routing). A producer that
 * reuses ids is then counted per event, while a redelivery counts up. */
static uint64_t fingerprint(const evbus_event_t *ev)
{
    uint64_t h = 1469598103934665603u;
    h = fnv_str(h, evbus_event_source(ev));
    h = fnv_str(h, evbus_event_type(ev));
    h = fnv_str(h, evbus_event_subject(ev));
    h = fnv_str(h, evbus_event_time(ev));
    h = fnv(h, evbus_event_data(ev) ? evbus_event_data(ev) : "",
            evbus_event_data_len(ev));
    size_t n = evbus_event_ext_count(ev);
    for (size_t i = 0; i < n; i++) {
        const char *name, *value;
        if (evbus_event_ext_at(ev, i, &name, &value) != EVBUS_OK ||
            strcmp(name, "traceparent") == 0 ||
            strcmp(name, "tracestate") == 0)
            continue;
        h = fnv_str(fnv_str(h, name), value);
    }
    return h;
}

/* Decodes entry e; on failure marks it DROP and logs why. */
static void decode_entry(dapr_server_t *srv, const char *topic, rentry_t *e,
                         size_t max_bytes)
{
    char why[256];
    e->event = evbus_event_from_json_limit(e->json, e->len, max_bytes, why,
                                           sizeof why);
    if (!e->event) {
        if (srv->undecodable_to_core && (e->why = strdup(why))) {
            /* the core wraps and dead-letters it, then it is acked */
            SRV_LOG(srv, EVBUS_LOG_WARN,
                    "delivery on %s is not a CloudEvent (%s); dead-lettering",
                    topic, why);
            return;
        }
        e->status = ST_DROP;
        SRV_LOG(srv, EVBUS_LOG_WARN,
                "delivery on %s is not a CloudEvent (%s); answering DROP",
                topic, why);
        return;
    }
    strip_dapr_fields(e->event);
    e->hash = fingerprint(e->event);
    e->id = strdup(evbus_event_id(e->event));
    if (!e->id) {
        evbus_event_free(e->event);
        e->event = NULL;
        e->status = ST_RETRY;
    }
}

/* Fills req's entries from the body: the entries of a bulk envelope, or the
 * body as one entry (which fails to decode when it is not a CloudEvent).
 * Returns false only when out of memory. */
static bool parse_body(request_t *req, const char *body, size_t len,
                       bool *bulk)
{
    cJSON *j = cJSON_ParseWithLength(body, len);
    *bulk = false;
    cJSON *type = cJSON_GetObjectItemCaseSensitive(j, "type");
    cJSON *entries = cJSON_GetObjectItemCaseSensitive(j, "entries");
    if (cJSON_IsArray(entries) && cJSON_IsString(type) &&
        strcmp(type->valuestring, "com.dapr.event.sent.bulk") == 0) {
        *bulk = true;
        int n = cJSON_GetArraySize(entries);
        req->e = calloc(n ? (size_t)n : 1, sizeof *req->e);
        if (!req->e) {
            cJSON_Delete(j);
            return false;
        }
        req->n = n;
        int i = 0;
        cJSON *en;
        cJSON_ArrayForEach(en, entries) {
            rentry_t *e = &req->e[i++];
            cJSON *eid = cJSON_GetObjectItemCaseSensitive(en, "entryId");
            cJSON *ev = cJSON_GetObjectItemCaseSensitive(en, "event");
            e->entry_id = strdup(cJSON_IsString(eid) ? eid->valuestring : "");
            if (cJSON_IsString(ev))
                e->json = strdup(ev->valuestring);
            else if (cJSON_IsObject(ev))
                e->json = cJSON_PrintUnformatted(ev);
            e->len = e->json ? strlen(e->json) : 0;
            if (!e->json) /* no event in the entry: decoding reports it */
                e->json = strdup("");
        }
        cJSON_Delete(j);
        return true;
    }
    cJSON_Delete(j);
    req->e = calloc(1, sizeof *req->e);
    if (!req->e)
        return false;
    req->n = 1;
    req->e[0].json = malloc(len + 1);
    if (!req->e[0].json)
        return false;
    memcpy(req->e[0].json, body, len);
    req->e[0].json[len] = '\0';
    req->e[0].len = len;
    return true;
}

static void request_free(request_t *req)
{
    for (int i = 0; i < req->n; i++) {
        free(req->e[i].entry_id);
        free(req->e[i].json);
        free(req->e[i].id);
        free(req->e[i].why);
        evbus_event_free(req->e[i].event);
    }
    free(req->e);
}

/* Records a settled copy. Called with srv->mu held; frees d. */
static void resolve(delivery_t *d, int status)
{
    request_t *req = d->req;
    rentry_t *e = &req->e[d->idx];
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
            resolve(d, ST_RETRY);
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
        for (int i = 0; i < req->n; i++) {
            rentry_t *e = &req->e[i];
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

static char *answer_json(const request_t *req, bool bulk)
{
    dapr_buf_t b = {0};
    int bad = 0;
    if (!bulk) {
        bad |= dapr_buf_str(&b, "{\"status\":\"");
        bad |= dapr_buf_str(&b, status_name[req->n ? req->e[0].status
                                                   : ST_DROP]);
        bad |= dapr_buf_str(&b, "\"}");
    } else {
        bad |= dapr_buf_str(&b, "{\"statuses\":[");
        for (int i = 0; i < req->n; i++) {
            bad |= dapr_buf_str(&b, i ? ",{\"entryId\":" : "{\"entryId\":");
            bad |= dapr_buf_json_str(&b, req->e[i].entry_id
                                             ? req->e[i].entry_id
                                             : "");
            bad |= dapr_buf_str(&b, ",\"status\":\"");
            bad |= dapr_buf_str(&b, status_name[req->e[i].status]);
            bad |= dapr_buf_str(&b, "\"}");
        }
        bad |= dapr_buf_str(&b, "]}");
    }
    if (bad) {
        free(b.p);
        return NULL;
    }
    return b.p;
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
    request_t req;
    memset(&req, 0, sizeof req);
    bool bulk;
    if (!parse_body(&req, body ? body : "", len, &bulk)) {
        request_free(&req); /* out of memory: the sidecar tries again */
        return reply(c, MHD_HTTP_INTERNAL_SERVER_ERROR, "application/json",
                     strdup("{\"status\":\"RETRY\"}"));
    }
    const char *topic = path + strlen(DAPR_ROUTE_PREFIX);
    for (int i = 0; i < req.n; i++)
        decode_entry(srv, topic, &req.e[i], max_bytes);

    pthread_cond_init(&req.cv, NULL);
    pthread_mutex_lock(&srv->mu);
    for (int i = 0; i < req.n; i++)
        if (req.e[i].id)
            req.e[i].count = dapr_counts_hit(srv->counts, path, req.e[i].id,
                                             req.e[i].hash);
    int served = dispatch(srv, &req, path);
    if (served == 0)
        for (int i = 0; i < req.n; i++)
            if (req.e[i].status == ST_SUCCESS)
                req.e[i].status = ST_RETRY; /* unsubscribed meanwhile */
    /* Every copy is settled by the core (or withdrawn here when nobody
     * polls for deliver_timeout_ms: it then goes back to the sidecar). */
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_sec += srv->deliver_timeout_ms / 1000;
    ts.tv_nsec += (srv->deliver_timeout_ms % 1000) * 1000000L;
    if (ts.tv_nsec >= 1000000000L) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000L;
    }
    bool withdrawn = false;
    while (req.pending > 0) {
        if (withdrawn) {
            pthread_cond_wait(&req.cv, &srv->mu);
        } else if (pthread_cond_timedwait(&req.cv, &srv->mu, &ts) != 0 &&
                   req.pending > 0) {
            withdraw(srv, &req);
            withdrawn = true;
        }
    }
    for (int i = 0; i < req.n; i++)
        if (req.e[i].id && req.e[i].status == ST_SUCCESS)
            dapr_counts_forget(srv->counts, path, req.e[i].id,
                               req.e[i].hash);
    pthread_mutex_unlock(&srv->mu);
    pthread_cond_destroy(&req.cv);
    char *answer = answer_json(&req, bulk);
    request_free(&req);
    return reply(c, MHD_HTTP_OK, "application/json", answer);
}

/* ------------------------------------------------------------ the daemon */

typedef struct conn_state {
    dapr_buf_t body;
    bool denied, too_big;
} conn_state_t;

static enum MHD_Result on_request(void *cls, struct MHD_Connection *c,
                                  const char *url, const char *method,
                                  const char *version, const char *upload,
                                  size_t *upload_size, void **con_cls)
{
    dapr_server_t *srv = cls;
    conn_state_t *st = *con_cls;
    if (!st) {
        if (!(st = calloc(1, sizeof *st)))
            return MHD_NO;
        *con_cls = st;
        st->denied = srv->app_token && !token_ok(c, srv->app_token);
        return MHD_YES;
    }
    if (*upload_size) {
        if (!st->denied && !st->too_big &&
            (st->body.len + *upload_size > MAX_BODY ||
             dapr_buf_add(&st->body, upload, *upload_size) != 0))
            st->too_big = true;
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
    bool get = strcmp(method, "GET") == 0;
    if (get && strcmp(url, "/dapr/subscribe") == 0) {
        char *s = subscriptions_json(srv);
        return s ? reply(c, MHD_HTTP_OK, "application/json", s)
                 : reply_text(c, MHD_HTTP_INTERNAL_SERVER_ERROR,
                              "out of memory");
    }
    if (get && strcmp(url, "/healthz") == 0)
        return reply(c, MHD_HTTP_OK, "application/json",
                     strdup("{\"status\":\"ok\"}"));
    if (strcmp(method, "POST") == 0 &&
        strncmp(url, DAPR_ROUTE_PREFIX, strlen(DAPR_ROUTE_PREFIX)) == 0)
        return on_delivery(srv, c, url, st->body.p, st->body.len);
    return reply_text(c, MHD_HTTP_NOT_FOUND, "not found");
}

static void on_completed(void *cls, struct MHD_Connection *c, void **con_cls,
                         enum MHD_RequestTerminationCode toe)
{
    conn_state_t *st = *con_cls;
    if (st) {
        free(st->body.p);
        free(st);
        *con_cls = NULL;
    }
}

/* Opens the port. Called with srv->mu held. */
static int server_start(dapr_server_t *srv)
{
    struct addrinfo hints = {0}, *ai = NULL;
    hints.ai_family = AF_INET; /* "localhost": where a sidecar connects */
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
    char port[16];
    snprintf(port, sizeof port, "%d", srv->port);
    int gai = getaddrinfo(srv->bind_host, port, &hints, &ai);
    if (gai != 0) { /* an IPv6-only name or address */
        hints.ai_family = AF_UNSPEC;
        gai = getaddrinfo(srv->bind_host, port, &hints, &ai);
    }
    if (gai != 0) {
        SRV_LOG(srv, EVBUS_LOG_ERROR, "cannot resolve app_host %s: %s",
                srv->bind_host, gai_strerror(gai));
        return EVBUS_EOPTION;
    }
    unsigned flags = MHD_USE_THREAD_PER_CONNECTION |
                     MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_POLL;
    if (ai->ai_family == AF_INET6)
        flags |= MHD_USE_IPv6;
    srv->mhd = MHD_start_daemon(
        flags, (uint16_t)srv->port, NULL, NULL, on_request, srv,
        MHD_OPTION_SOCK_ADDR, ai->ai_addr, MHD_OPTION_NOTIFY_COMPLETED,
        on_completed, srv, MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)300,
        MHD_OPTION_END);
    freeaddrinfo(ai);
    if (!srv->mhd) {
        SRV_LOG(srv, EVBUS_LOG_ERROR,
                "cannot serve the app port %s:%d (in use?); retrying",
                srv->bind_host, srv->port);
        return EVBUS_EIO;
    }
    SRV_LOG(srv, EVBUS_LOG_INFO, "serving the sidecar on %s:%d",
            srv->bind_host, srv->port);
    return EVBUS_OK;
}

/* ------------------------------------------------------------ vtable */

static int server_attach(dapr_t *d, char *errstr, size_t n)
{
    pthread_mutex_lock(&d->mu);
    if (d->server) {
        pthread_mutex_unlock(&d->mu);
        return EVBUS_OK;
    }
    pthread_mutex_lock(&servers_mu);
    dapr_server_t *srv = servers;
    while (srv && srv->port != d->app_port)
        srv = srv->next;
    int rc = EVBUS_OK;
    bus_link_t *link = calloc(1, sizeof *link);
    if (!link) {
        rc = EVBUS_ENOMEM;
    } else if (srv) {
        const char *a = srv->app_token ? srv->app_token : "";
        const char *b = d->app_token ? d->app_token : "";
        if (strcmp(a, b) != 0) {
            snprintf(errstr, n,
                     "dapr: app_port %d is already served with another "
                     "app token",
                     d->app_port);
            rc = EVBUS_EINVAL;
        }
    } else {
        srv = calloc(1, sizeof *srv);
        if (srv) {
            srv->port = d->app_port;
            srv->bind_host = strdup(d->app_host);
            srv->app_token = d->app_token ? strdup(d->app_token) : NULL;
            srv->bulk_subscribe = d->bulk_subscribe;
            srv->deliver_timeout_ms = d->deliver_timeout_ms;
            srv->undecodable_to_core = d->undecodable_to_core;
            srv->counts = dapr_counts_new(COUNTS_MAX);
            pthread_mutex_init(&srv->mu, NULL);
            pthread_mutex_init(&srv->log_mu, NULL);
        }
        if (!srv || !srv->bind_host || !srv->counts ||
            (d->app_token && !srv->app_token)) {
            if (srv) {
                free(srv->bind_host);
                free(srv->app_token);
                dapr_counts_free(srv->counts);
                pthread_mutex_destroy(&srv->mu);
                pthread_mutex_destroy(&srv->log_mu);
                free(srv);
            }
            srv = NULL;
            rc = EVBUS_ENOMEM;
        } else {
            srv->next = servers;
            servers = srv;
        }
    }
    if (rc == EVBUS_OK) {
        srv->refs++;
        link->bus = d;
        pthread_mutex_lock(&srv->mu);
        pthread_mutex_lock(&srv->log_mu);
        link->next = srv->buses;
        srv->buses = link;
        pthread_mutex_unlock(&srv->log_mu);
        pthread_mutex_unlock(&srv->mu);
        d->server = srv;
    } else {
        free(link);
        if (rc == EVBUS_ENOMEM)
            snprintf(errstr, n, "dapr: out of memory");
    }
    pthread_mutex_unlock(&servers_mu);
    pthread_mutex_unlock(&d->mu);
    return rc;
}

void dapr_server_detach(dapr_t *d)
{
    dapr_server_t *srv = d->server;
    if (!srv)
        return;
    pthread_mutex_lock(&servers_mu);
    pthread_mutex_lock(&srv->mu);
    pthread_mutex_lock(&srv->log_mu);
    for (bus_link_t **pp = &srv->buses; *pp; pp = &(*pp)->next)
        if ((*pp)->bus == d) {
            bus_link_t *l = *pp;
            *pp = l->next;
            free(l);
            break;
        }
    pthread_mutex_unlock(&srv->log_mu);
    bool last = --srv->refs == 0;
    if (last) {
        srv->closing = true;
        for (dapr_server_t **pp = &servers; *pp; pp = &(*pp)->next)
            if (*pp == srv) {
                *pp = srv->next;
                break;
            }
    }
    pthread_mutex_unlock(&srv->mu);
    pthread_mutex_unlock(&servers_mu);
    d->server = NULL;
    if (!last)
        return;
    if (srv->mhd)
        MHD_stop_daemon(srv->mhd);
    dapr_counts_free(srv->counts);
    free(srv->bind_host);
    free(srv->app_token);
    pthread_mutex_destroy(&srv->mu);
    pthread_mutex_destroy(&srv->log_mu);
    free(srv);
}

int dapr_subscribe(void *priv, const char *topic, const char *group,
                   void **bsub, char *errstr, size_t errstr_size)
{
    dapr_t *d = priv;
    if (d->app_port <= 0) {
        snprintf(errstr, errstr_size,
                 "dapr: no app port to receive deliveries on; set app_port= "
                 "in the URL or APP_PORT in the environment");
        return EVBUS_EINVAL;
    }
    int rc = server_attach(d, errstr, errstr_size);
    if (rc != EVBUS_OK)
        return rc;
    dapr_server_t *srv = d->server;
    dsub_t *s = calloc(1, sizeof *s);
    char *pe = dapr_urlenc(d->pubsub), *te = dapr_urlenc(topic);
    size_t np = strlen(DAPR_ROUTE_PREFIX) + strlen(d->pubsub) +
                strlen(topic) + 2;
    size_t nr = strlen(DAPR_ROUTE_PREFIX) + (pe ? strlen(pe) : 0) +
                (te ? strlen(te) : 0) + 2;
    if (s) {
        s->srv = srv;
        s->bus = d;
        s->topic = strdup(topic);
        s->group = strdup(group ? group : "default");
        s->path = malloc(np);
        s->route = malloc(nr);
    }
    if (!s || !s->topic || !s->group || !s->path || !s->route || !pe || !te) {
        if (s) {
            free(s->topic);
            free(s->group);
            free(s->path);
            free(s->route);
            free(s);
        }
        free(pe);
        free(te);
        snprintf(errstr, errstr_size, "dapr: out of memory");
        return EVBUS_ENOMEM;
    }
    snprintf(s->path, np, DAPR_ROUTE_PREFIX "%s/%s", d->pubsub, topic);
    snprintf(s->route, nr, DAPR_ROUTE_PREFIX "%s/%s", pe, te);
    free(pe);
    free(te);
    pthread_mutex_lock(&srv->mu);
    bool late = srv->mhd != NULL;
    dsub_t **tail = &srv->subs; /* keep subscription order */
    while (*tail)
        tail = &(*tail)->next;
    *tail = s;
    pthread_mutex_unlock(&srv->mu);
    if (late)
        evbus_host_log(d->host, EVBUS_LOG_WARN,
                       "subscribed to %s after the app port opened: a "
                       "sidecar that already read /dapr/subscribe will not "
                       "deliver it until it restarts",
                       topic);
    *bsub = s;
    return EVBUS_OK;
}

void dapr_unsubscribe(void *priv, void *bsub)
{
    dsub_t *s = bsub;
    dapr_server_t *srv = s->srv;
    pthread_mutex_lock(&srv->mu);
    for (dsub_t **pp = &srv->subs; *pp; pp = &(*pp)->next)
        if (*pp == s) {
            *pp = s->next;
            break;
        }
    /* Copies nobody fetched go back to the sidecar. */
    while (s->qhead) {
        delivery_t *d = s->qhead;
        s->qhead = d->next;
        resolve(d, ST_RETRY);
    }
    pthread_mutex_unlock(&srv->mu);
    free(s->topic);
    free(s->group);
    free(s->path);
    free(s->route);
    free(s);
}

int dapr_fetch(void *priv, void *bsub, evbus_msg_t *out, int max)
{
    dsub_t *s = bsub;
    dapr_server_t *srv = s->srv;
    pthread_mutex_lock(&srv->mu);
    if (!srv->mhd) {
        uint64_t now = dapr_now_ms();
        if (now < srv->next_start_ms) {
            pthread_mutex_unlock(&srv->mu);
            return 0;
        }
        int rc = server_start(srv);
        if (rc != EVBUS_OK) {
            srv->next_start_ms = now + START_RETRY_MS;
            pthread_mutex_unlock(&srv->mu);
            return rc;
        }
    }
    int n = 0;
    while (n < max && s->qhead) {
        delivery_t *d = s->qhead;
        s->qhead = d->next;
        if (!s->qhead)
            s->qtail = NULL;
        d->next = NULL;
        rentry_t *e = &d->req->e[d->idx];
        evbus_msg_t *m = &out[n++];
        m->topic = s->topic;
        m->payload = e->json;
        m->len = e->len;
        m->event = d->event;
        d->event = NULL;
        m->decode_error = e->why; /* lives until the request is answered */
        m->attempts = e->count > 1 ? e->count - 1 : 0;
        m->cookie = d;
    }
    pthread_mutex_unlock(&srv->mu);
    return n;
}

int dapr_settle(void *priv, void *bsub, evbus_msg_t *msg, evbus_settle_t how,
                int delay_ms)
{
    dsub_t *s = bsub;
    delivery_t *d = msg->cookie;
    pthread_mutex_lock(&s->srv->mu);
    /* RETRY is answered at once: the sidecar owns redelivery timing (its
     * resiliency policy), delay_ms cannot be passed on. */
    resolve(d, how == EVBUS_SETTLE_ACK ? ST_SUCCESS : ST_RETRY);
    pthread_mutex_unlock(&s->srv->mu);
    return EVBUS_OK;
}
