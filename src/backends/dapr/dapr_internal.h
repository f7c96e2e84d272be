/*
 * dapr:// backend internals, shared by its files:
 *   dapr.c          the vtable: open/close, options, health
 *   dapr_http.c     libcurl client: handle pool, requests, error mapping
 *   evbus__dapr_publish.c  publish (single) and publish_async (bulk writer thread)
 *   dapr_server.c   the app's HTTP server (libmicrohttpd): /dapr/subscribe,
 *                   delivery routes, fetch/settle
 *   dapr_delivery.c an HTTP request (headers + body) into deliveries
 *   dapr_routes.c   what each request to the app server gets
 *   dapr_conns.c    the app server's connections under load
 *   dapr_counts.c   bounded (topic, id) -> delivery count map
 * Nothing here is exported (the library builds with -fvisibility=hidden).
 */
#ifndef EVBUS_DAPR_INTERNAL_H
#define EVBUS_DAPR_INTERNAL_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <curl/curl.h>

#include "evbus/backend.h"
#include "support/buf.h"
#include "support/clock.h"
#include "support/cond.h"
#include "evbus/evbus.h"

#define DAPR_DEFAULT_HTTP_PORT 3500
#define DAPR_DEFAULT_PUBSUB "pubsub"
#define DAPR_TOKEN_HEADER "dapr-api-token"
#define DAPR_CT_CLOUDEVENT "application/cloudevents+json"
/* The route prefix the app serves deliveries on: /evbus/<pubsub>/<topic>. */
#define DAPR_ROUTE_PREFIX "/evbus/"


/* ---- libcurl handles, reused so connections stay alive */
typedef struct dapr_curl_pool {
    pthread_mutex_t mu;
    CURL **free;
    size_t n, cap;
} dapr_curl_pool_t;

/* A response: HTTP status (0 when no answer), up to 64 KiB of body. */
typedef struct dapr_resp {
    long status;
    CURLcode cc;
    evbus__buf_t body; /* body.data NULL when there was none */
} dapr_resp_t;

typedef struct dapr_server dapr_server_t;

/* What the app server lets clients hold (URL options app_max_conns,
 * app_max_conns_per_ip, app_conn_timeout_s, app_idle_timeout_s,
 * app_max_buffered_mb). */
typedef struct dapr_conn_limits {
    unsigned max_conns;        /* held at once (MHD's limit is 2x) */
    unsigned max_conns_per_ip; /* MHD_OPTION_PER_IP_CONNECTION_LIMIT, 0 = off */
    unsigned conn_timeout_s;   /* idle limit until a request proved itself */
    unsigned idle_timeout_s;   /* idle limit of a proven keep-alive conn */
    unsigned max_buffered_mb;  /* request bodies held at once, all together */
} dapr_conn_limits_t;
typedef struct dapr_async dapr_async_t;

/* One open bus (the backend's priv). */
typedef struct dapr {
    evbus_host_t *host;
    char *base;        /* "http://host:port" of the sidecar */
    char *pubsub;      /* component name */
    char *api_token;   /* sent as dapr-api-token, or NULL */
    char *app_token;   /* required from the sidecar, or NULL */
    char *app_host;    /* address the app server binds */
    int app_port;      /* 0 = no app server (publish only) */
    long timeout_ms;   /* per request */
    int bulk_max;      /* entries per bulk publish request */
    int async_tries;   /* attempts per async entry before giving up */
    int bulk_subscribe; /* > 0: ask the sidecar for bulk deliveries */
    long deliver_timeout_ms; /* give a delivery back when nobody polls */
    bool undecodable_to_core; /* bad bodies: core dead-letters (else DROP) */
    dapr_conn_limits_t limits; /* the app server's connection limits */
    struct curl_slist *hdr_ce;   /* Content-Type cloudevents+json + token */
    struct curl_slist *hdr_json; /* Content-Type application/json + token */
    struct curl_slist *hdr_none; /* token only */
    dapr_curl_pool_t pool;
    dapr_async_t *async;
    dapr_server_t *server; /* attached at the first subscribe */
    pthread_mutex_t mu;    /* server attach */
} dapr_t;

/* ---- dapr_http.c */
int evbus__dapr_curl_global_init(void);
void evbus__dapr_pool_init(dapr_curl_pool_t *p);
void evbus__dapr_pool_destroy(dapr_curl_pool_t *p);
/* Performs one request with a pooled handle. body may be NULL (GET).
 * Fills resp (free with evbus__dapr_resp_free). Returns EVBUS_OK when an HTTP
 * answer arrived (any status), else ECONN / ETIMEDOUT / EIO / ENOMEM. */
int evbus__dapr_request(dapr_t *d, const char *url, struct curl_slist *hdrs,
                 const void *body, size_t len, long timeout_ms,
                 dapr_resp_t *resp);
void evbus__dapr_resp_free(dapr_resp_t *r);
/* Maps a non-2xx answer to an evbus error and writes "HTTP 500
 * ERR_PUBSUB_PUBLISH_MESSAGE: message" into why. */
int evbus__dapr_map_status(const dapr_resp_t *r, char *why, size_t n);
/* Describes a transport failure (no HTTP answer). */
void evbus__dapr_describe_curl(const dapr_resp_t *r, char *why, size_t n);
/* Percent-encodes s into a malloc'd string (unreserved chars kept). */
char *evbus__dapr_urlenc(const char *s);

/* The URL of a sidecar API path ("/v1.0/healthz/outbound"); malloc'd. */
char *evbus__dapr_url(const dapr_t *d, const char *path);

/* ---- evbus__dapr_publish.c */
int evbus__dapr_publish(void *priv, const char *topic, const evbus_event_t *ev,
                 const void *payload, size_t len);
int evbus__dapr_publish_async(void *priv, const char *topic, const evbus_event_t *ev,
                       const void *payload, size_t len,
                       evbus_publish_done_fn done, void *token);
int evbus__dapr_flush(void *priv, int timeout_ms);
int evbus__dapr_async_start(dapr_t *d, char *errstr, size_t n);
/* Stops the writer; completes what is left with EVBUS_ETIMEDOUT. */
void evbus__dapr_async_stop(dapr_t *d);

/* ---- dapr_server.c */
int evbus__dapr_subscribe(void *priv, const char *topic, const char *group,
                   void **bsub, char *errstr, size_t errstr_size);
void evbus__dapr_unsubscribe(void *priv, void *bsub);
int evbus__dapr_fetch(void *priv, void *bsub, evbus_msg_t *out, int max);
int evbus__dapr_settle(void *priv, void *bsub, evbus_msg_t *msg, evbus_settle_t how,
                int delay_ms);
/* Lets go of the app server (stops it when no other bus uses it). */
void evbus__dapr_server_detach(dapr_t *d);

/* ---- dapr_delivery.c: an HTTP request into deliveries (no socket) */

/* One entry of a delivery request: a CloudEvent, or why it is not one. */
typedef struct dapr_entry {
    char *entry_id; /* bulk envelope: the sidecar's entryId; else NULL */
    char *json;     /* the bytes as delivered (event JSON, or binary body) */
    size_t len;
    evbus_event_t *event; /* NULL when not a CloudEvent */
    char *why;            /* not a CloudEvent: the reason */
    char *id;             /* event id, for counting deliveries */
    uint64_t hash;        /* fingerprint, for counting deliveries */
    int count;            /* set by the server */
    int status;           /* set by the server */
} dapr_entry_t;

typedef enum {
    DAPR_BODY_SINGLE, /* structured mode or a bare JSON event */
    DAPR_BODY_BINARY, /* HTTP binary mode (ce- headers) */
    DAPR_BODY_BULK,   /* Dapr's bulk envelope: answered per entry */
    DAPR_BODY_BATCH   /* application/cloudevents-batch+json */
} dapr_body_kind_t;

/* The request as received: headers (names as sent) and body. */
typedef struct dapr_http_req {
    const char *content_type; /* NULL when absent */
    size_t n_headers;
    const char *const *names;
    const char *const *values;
    const char *body; /* may be NULL when len is 0 */
    size_t len;
    size_t max_bytes; /* the subscription's max_event_bytes */
} dapr_http_req_t;

typedef struct dapr_delivery {
    dapr_body_kind_t kind;
    int n;
    dapr_entry_t *e;
    unsigned refuse_status; /* non-zero: answer it, deliver nothing */
    char refuse_why[256];
} dapr_delivery_t;

/* Parses in into out (free with evbus__dapr_delivery_free, also after a
 * failure). Entries that are not CloudEvents carry the reason. Returns
 * EVBUS_OK or EVBUS_ENOMEM. Thread-safe; in is only read. */
int evbus__dapr_parse_delivery(const dapr_http_req_t *in,
                               dapr_delivery_t *out);
void evbus__dapr_delivery_free(dapr_delivery_t *d);

/* ---- dapr_counts.c: how often the sidecar delivered (topic, id, fp);
 * fp = fingerprint of the event's content (dapr_server.c) */
typedef struct dapr_counts dapr_counts_t;
dapr_counts_t *evbus__dapr_counts_new(size_t max_entries);
void evbus__dapr_counts_free(dapr_counts_t *c);
/* Increments and returns the count (1 the first time; 1 when out of
 * memory). Not thread-safe: callers hold the server lock. */
int evbus__dapr_counts_hit(dapr_counts_t *c, const char *topic, const char *id,
                    uint64_t fp);
void evbus__dapr_counts_forget(dapr_counts_t *c, const char *topic, const char *id,
                        uint64_t fp);

#endif /* EVBUS_DAPR_INTERNAL_H */
