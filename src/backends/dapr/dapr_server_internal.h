/*
 * The dapr:// app server's shared state, for its files:
 *   dapr_server.c  the daemon's life and the backend vtable (subscribe,
 *                  fetch, settle), the process-wide list of servers
 *   dapr_routes.c  what each HTTP request gets (libmicrohttpd callbacks)
 *   dapr_conns.c   the open connections and who gets evicted under load
 * Locking: see dapr_server.c.
 */
#ifndef EVBUS_DAPR_SERVER_INTERNAL_H
#define EVBUS_DAPR_SERVER_INTERNAL_H

#include <microhttpd.h>

#include "dapr_internal.h"

typedef struct dapr_conns dapr_conns_t;

#define MAX_BODY (64u * 1024 * 1024)
#define COUNTS_MAX 100000
#define START_RETRY_MS 1000

/* An entry's answer to the sidecar (dapr_entry_t.status). */
enum { ST_SUCCESS = 0, ST_RETRY = 1, ST_DROP = 2 };

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

struct request {
    pthread_cond_t cv;
    int pending; /* deliveries not settled */
    dapr_delivery_t d; /* the entries (dapr_delivery.c) */
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
    dapr_conn_limits_t limits;
    dapr_conns_t *conns; /* open connections (dapr_conns.c) */
    int active;          /* requests not answered yet (under mu) */
    size_t buffered;     /* bytes of request bodies held (under mu) */
    pthread_cond_t answered; /* signalled when active drops to 0 */
    bool closing;
    uint64_t next_start_ms;
    dsub_t *subs;
    bus_link_t *buses; /* attached buses (for logging) */
    dapr_counts_t *counts;
    unsigned rr;
    struct dapr_server *next;
};

/* Logs through any attached bus, with srv->mu held or not. log_mu keeps
 * that bus from detaching (and its host from going away) meanwhile. */
#define SRV_LOG(srv, level, ...)                                               \
    do {                                                                       \
        pthread_mutex_lock(&(srv)->log_mu);                                    \
        if ((srv)->buses)                                                      \
            evbus_host_log((srv)->buses->bus->host, level, __VA_ARGS__);       \
        pthread_mutex_unlock(&(srv)->log_mu);                                  \
    } while (0)

/* ---- dapr_routes.c: libmicrohttpd callbacks (cls = the server) */
enum MHD_Result evbus__dapr_on_request(void *cls, struct MHD_Connection *c,
                                       const char *url, const char *method,
                                       const char *version,
                                       const char *upload,
                                       size_t *upload_size, void **con_cls);
void evbus__dapr_on_completed(void *cls, struct MHD_Connection *c,
                              void **con_cls,
                              enum MHD_RequestTerminationCode toe);
/* Records a settled copy. Called with srv->mu held; frees d. */
void evbus__dapr_resolve(delivery_t *d, int status);

/* ---- dapr_conns.c */
dapr_conns_t *evbus__dapr_conns_new(const dapr_conn_limits_t *lim);
void evbus__dapr_conns_free(dapr_conns_t *cs);
/* libmicrohttpd's connection limit for app_max_conns: twice it, the
 * difference being room for evicted connections not yet reaped. */
unsigned evbus__dapr_conns_mhd_limit(const dapr_conn_limits_t *lim);
/* MHD_OPTION_NOTIFY_CONNECTION callback (cls = the dapr_conns_t). */
void evbus__dapr_on_connection(void *cls, struct MHD_Connection *c,
                               void **socket_context,
                               enum MHD_ConnectionNotificationCode code);
/* A request on c starts (trusted: it passed the token check, or no token
 * is required) / ends. Any thread. */
void evbus__dapr_conn_request(dapr_conns_t *cs, struct MHD_Connection *c,
                              bool trusted);
void evbus__dapr_conn_idle(dapr_conns_t *cs, struct MHD_Connection *c);
/* How many connections were evicted so far (for logs and tests). */
unsigned long evbus__dapr_conns_evicted(dapr_conns_t *cs);

#endif /* EVBUS_DAPR_SERVER_INTERNAL_H */
