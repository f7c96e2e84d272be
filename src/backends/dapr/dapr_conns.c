/*
 * Keeping the app server's connections for the sidecar.
 *
 * Every connection costs the server a thread, and libmicrohttpd's limits
 * (app_max_conns, app_max_conns_per_ip, the idle timeout) cap how many
 * exist. Limits alone let ~1,000 clients that open a request and never
 * finish it ("POST ... HTTP/1.1\r\nHost: x\r\n" and nothing more) hold
 * every slot until their timeout, and the sidecar - on the same address
 * when the app binds 127.0.0.1 - then cannot deliver at all.
 *
 * So the server tracks its connections in arrival order, and when a new
 * one arrives while the open ones reach the eviction mark (app_max_conns
 * less a reserve of a quarter, at least 16), it closes the oldest
 * connection that has not proven
 * itself: one on which no request has yet passed the token check (no token
 * configured: no complete request yet). Only when there is none does it
 * close the oldest idle proven one (keep-alive between requests, which
 * HTTP lets a server close at any time). A request being handled is never
 * interrupted. Slow clients thus only ever compete with each other; a
 * delivery with the right token always finds a slot.
 *
 * Closing: shutdown(2) of the connection's socket (its fd comes from
 * MHD_get_connection_info) wakes its thread, which ends the connection the
 * normal way. libmicrohttpd (thread per connection) reports
 * MHD_CONNECTION_NOTIFY_CLOSED before it closes the fd, and the report
 * takes the same lock as the eviction, so a shut fd is always still ours.
 *
 * libmicrohttpd counts a closed connection until its daemon thread reaps
 * it - between two accepts, and only once the connection's thread has
 * ended - and refuses new ones at its own limit. So that limit is twice
 * app_max_conns (evbus__dapr_conns_mhd_limit): the reserve and app_max_conns
 * more are room for connections being torn down, and a delivery is not
 * refused while a loaded machine is slow to end the evicted connections'
 * threads. When as many as half of the reserve are still waiting to be
 * reaped, accepting pauses for a millisecond (5 past the whole reserve) so
 * their threads can end (only under such a flood).
 */
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

#include "dapr_server_internal.h"

typedef struct dconn {
    struct dconn *prev, *next; /* arrival order */
    int fd;
    bool trusted;  /* a request on it passed the token check */
    bool busy;     /* a request is being handled */
    bool evicting; /* shut down, its close not reported yet */
} dconn_t;

struct dapr_conns {
    pthread_mutex_t mu;
    dconn_t *head, *tail;
    unsigned open, evicting;
    unsigned evict_at, reserve;
    unsigned idle_timeout_s;
    unsigned long evicted;
};

dapr_conns_t *evbus__dapr_conns_new(const dapr_conn_limits_t *lim)
{
    dapr_conns_t *cs = calloc(1, sizeof *cs);
    if (!cs)
        return NULL;
    pthread_mutex_init(&cs->mu, NULL);
    cs->reserve = lim->max_conns / 4 > 16 ? lim->max_conns / 4 : 16;
    cs->evict_at = lim->max_conns > cs->reserve + 1
                       ? lim->max_conns - cs->reserve
                       : 1;
    cs->idle_timeout_s = lim->idle_timeout_s;
    return cs;
}

unsigned evbus__dapr_conns_mhd_limit(const dapr_conn_limits_t *lim)
{
    return 2u * (unsigned)lim->max_conns;
}

void evbus__dapr_conns_free(dapr_conns_t *cs)
{
    if (!cs)
        return;
    while (cs->head) {
        dconn_t *x = cs->head;
        cs->head = x->next;
        free(x);
    }
    pthread_mutex_destroy(&cs->mu);
    free(cs);
}

/* The connection to close to make room, or NULL. Called with mu held. */
static dconn_t *victim(dapr_conns_t *cs, const dconn_t *newest)
{
    for (dconn_t *x = cs->head; x; x = x->next)
        if (x != newest && !x->evicting && !x->trusted)
            return x;
    for (dconn_t *x = cs->head; x; x = x->next)
        if (x != newest && !x->evicting && !x->busy)
            return x;
    return NULL;
}

void evbus__dapr_on_connection(void *cls, struct MHD_Connection *c,
                               void **socket_context,
                               enum MHD_ConnectionNotificationCode code)
{
    dapr_conns_t *cs = cls;
    useconds_t pause_us = 0;
    pthread_mutex_lock(&cs->mu);
    if (code == MHD_CONNECTION_NOTIFY_STARTED) {
        const union MHD_ConnectionInfo *ci =
            MHD_get_connection_info(c, MHD_CONNECTION_INFO_CONNECTION_FD);
        dconn_t *x = calloc(1, sizeof *x);
        if (x) {
            x->fd = ci ? ci->connect_fd : -1;
            x->prev = cs->tail;
            if (cs->tail)
                cs->tail->next = x;
            else
                cs->head = x;
            cs->tail = x;
            cs->open++;
        }
        *socket_context = x;
        while (cs->open - cs->evicting > cs->evict_at) {
            dconn_t *v = victim(cs, x);
            if (!v || v->fd < 0)
                break;
            shutdown(v->fd, SHUT_RDWR);
            v->evicting = true;
            cs->evicting++;
            cs->evicted++;
        }
        pause_us = cs->evicting >= cs->reserve       ? 5000
                   : cs->evicting >= cs->reserve / 2 ? 1000
                                                     : 0;
    } else {
        dconn_t *x = *socket_context;
        if (x) {
            if (x->prev)
                x->prev->next = x->next;
            else
                cs->head = x->next;
            if (x->next)
                x->next->prev = x->prev;
            else
                cs->tail = x->prev;
            cs->open--;
            if (x->evicting)
                cs->evicting--;
            free(x);
            *socket_context = NULL;
        }
    }
    pthread_mutex_unlock(&cs->mu);
    if (pause_us)
        usleep(pause_us);
}

static dconn_t *conn_of(struct MHD_Connection *c)
{
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(c, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
    return ci ? ci->socket_context : NULL;
}

void evbus__dapr_conn_request(dapr_conns_t *cs, struct MHD_Connection *c,
                              bool trusted)
{
    dconn_t *x = conn_of(c);
    if (!x)
        return;
    bool raise = false;
    pthread_mutex_lock(&cs->mu);
    x->busy = true;
    if (trusted && !x->trusted) {
        x->trusted = true;
        raise = true;
    }
    pthread_mutex_unlock(&cs->mu);
    /* a proven connection may idle as long as a keep-alive client expects
     * (Go's default is 90 s); others keep the short daemon timeout */
    if (raise && cs->idle_timeout_s)
        MHD_set_connection_option(c, MHD_CONNECTION_OPTION_TIMEOUT,
                                  cs->idle_timeout_s);
}

void evbus__dapr_conn_idle(dapr_conns_t *cs, struct MHD_Connection *c)
{
    dconn_t *x = conn_of(c);
    if (!x)
        return;
    pthread_mutex_lock(&cs->mu);
    x->busy = false;
    pthread_mutex_unlock(&cs->mu);
}

unsigned long evbus__dapr_conns_evicted(dapr_conns_t *cs)
{
    pthread_mutex_lock(&cs->mu);
    unsigned long n = cs->evicted;
    pthread_mutex_unlock(&cs->mu);
    return n;
}
