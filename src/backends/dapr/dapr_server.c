/*
 * The app side: an HTTP server (libmicrohttpd, one thread per connection)
 * on app_port that the sidecar calls; this file runs the daemon and the
 * backend's subscribe/fetch/settle, dapr_routes.c answers the requests,
 * dapr_conns.c keeps slow or idle clients from using up the connections.
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
#include <time.h>
#include <unistd.h>

#include "dapr_server_internal.h"

#define COUNTS_MAX 100000
#define START_RETRY_MS 1000
#define ANSWER_WAIT_MS 10000

static pthread_mutex_t servers_mu = PTHREAD_MUTEX_INITIALIZER;
static dapr_server_t *servers;

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
    unsigned flags = MHD_USE_THREAD_PER_CONNECTION | MHD_USE_ITC |
                     MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_POLL;
    if (ai->ai_family == AF_INET6)
        flags |= MHD_USE_IPv6;
    srv->mhd = MHD_start_daemon(
        flags, (uint16_t)srv->port, NULL, NULL, evbus__dapr_on_request, srv,
        MHD_OPTION_SOCK_ADDR, ai->ai_addr, MHD_OPTION_NOTIFY_COMPLETED,
        evbus__dapr_on_completed, srv, MHD_OPTION_NOTIFY_CONNECTION,
        evbus__dapr_on_connection, srv->conns, MHD_OPTION_CONNECTION_LIMIT,
        evbus__dapr_conns_mhd_limit(&srv->limits),
        MHD_OPTION_PER_IP_CONNECTION_LIMIT,
        srv->limits.max_conns_per_ip, MHD_OPTION_CONNECTION_TIMEOUT,
        srv->limits.conn_timeout_s, MHD_OPTION_END);
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

/* Stops the daemon once the requests it is answering are answered: the
 * port stops accepting first, then (up to ANSWER_WAIT_MS, so a stuck
 * client cannot hold up the close) the last answers are written - an
 * acknowledged delivery whose answer is lost would come again. */
static void stop_daemon(dapr_server_t *srv)
{
    MHD_socket ls = MHD_quiesce_daemon(srv->mhd);
    struct timespec ts = evbus__deadline_in(ANSWER_WAIT_MS);
    pthread_mutex_lock(&srv->mu);
    while (srv->active > 0 &&
           evbus__cond_wait_until(&srv->answered, &srv->mu, &ts) == 0)
        ;
    pthread_mutex_unlock(&srv->mu);
    MHD_stop_daemon(srv->mhd);
    if (ls != MHD_INVALID_SOCKET)
        close(ls);
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
            srv->limits = d->limits; /* the first bus on a port sets them */
            srv->conns = evbus__dapr_conns_new(&d->limits);
            srv->counts = evbus__dapr_counts_new(COUNTS_MAX);
            pthread_mutex_init(&srv->mu, NULL);
            evbus__cond_init(&srv->answered);
            pthread_mutex_init(&srv->log_mu, NULL);
        }
        if (!srv || !srv->bind_host || !srv->counts || !srv->conns ||
            (d->app_token && !srv->app_token)) {
            if (srv) {
                free(srv->bind_host);
                free(srv->app_token);
                evbus__dapr_counts_free(srv->counts);
                evbus__dapr_conns_free(srv->conns);
                pthread_mutex_destroy(&srv->mu);
                pthread_cond_destroy(&srv->answered);
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

void evbus__dapr_server_detach(dapr_t *d)
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
        stop_daemon(srv);
    evbus__dapr_counts_free(srv->counts);
    evbus__dapr_conns_free(srv->conns);
    free(srv->bind_host);
    free(srv->app_token);
    pthread_mutex_destroy(&srv->mu);
    pthread_cond_destroy(&srv->answered);
    pthread_mutex_destroy(&srv->log_mu);
    free(srv);
}

int evbus__dapr_subscribe(void *priv, const char *topic, const char *group,
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
    char *pe = evbus__dapr_urlenc(d->pubsub), *te = evbus__dapr_urlenc(topic);
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

void evbus__dapr_unsubscribe(void *priv, void *bsub)
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
        evbus__dapr_resolve(d, ST_RETRY);
    }
    pthread_mutex_unlock(&srv->mu);
    free(s->topic);
    free(s->group);
    free(s->path);
    free(s->route);
    free(s);
}

int evbus__dapr_fetch(void *priv, void *bsub, evbus_msg_t *out, int max)
{
    dsub_t *s = bsub;
    dapr_server_t *srv = s->srv;
    pthread_mutex_lock(&srv->mu);
    if (!srv->mhd) {
        uint64_t now = evbus__mono_ms();
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
        dapr_entry_t *e = &d->req->d.e[d->idx];
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

int evbus__dapr_settle(void *priv, void *bsub, evbus_msg_t *msg, evbus_settle_t how,
                int delay_ms)
{
    dsub_t *s = bsub;
    delivery_t *d = msg->cookie;
    pthread_mutex_lock(&s->srv->mu);
    /* RETRY is answered at once: the sidecar owns redelivery timing (its
     * resiliency policy), delay_ms cannot be passed on. */
    evbus__dapr_resolve(d, how == EVBUS_SETTLE_ACK ? ST_SUCCESS : ST_RETRY);
    pthread_mutex_unlock(&s->srv->mu);
    return EVBUS_OK;
}

