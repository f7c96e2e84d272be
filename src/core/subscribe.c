/*
 * Subscriptions: creating them, and taking them apart safely while another
 * thread may be polling. The poller owns a subscription's in-flight
 * messages, so removal is a request (`removed`) that the poller carries out
 * ("reaping") between handler calls; evbus_unsubscribe waits for it.
 */
#include <poll.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

static _Thread_local int tl_last_error;

int evbus_last_error(const evbus_t *bus)
{
    (void)bus;
    return tl_last_error;
}

void evbus_sub_opts_init(evbus_sub_opts_t *o)
{
    if (!o)
        return;
    memset(o, 0, sizeof *o);
    evbus_retry_policy_init(&o->retry);
    o->max_inflight = 1000;
}

static int fail(int err)
{
    tl_last_error = err;
    return err;
}

evbus_sub_t *evbus_subscribe_opts(evbus_t *bus, const char *topic,
                                  const char *group, const evbus_sub_opts_t *o,
                                  evbus_handler_fn fn, void *opaque)
{
    tl_last_error = EVBUS_OK;
    if (!bus || evbus__check_topic(topic) != EVBUS_OK || !fn ||
        (group && evbus__check_topic(group) != EVBUS_OK)) {
        fail(EVBUS_EINVAL);
        return NULL;
    }
    if (atomic_load(&bus->closing)) {
        fail(EVBUS_ECLOSED);
        return NULL;
    }
    evbus_sub_opts_t defaults;
    if (!o) {
        evbus_sub_opts_init(&defaults);
        o = &defaults;
    }
    if (o->retry.max_attempts < 0 || o->max_inflight < 0) {
        fail(EVBUS_EINVAL);
        return NULL;
    }
    evbus_sub_t *sub = calloc(1, sizeof *sub);
    if (!sub) {
        fail(EVBUS_ENOMEM);
        return NULL;
    }
    sub->bus = bus;
    sub->topic = strdup(topic);
    sub->group = strdup(group ? group : "default");
    if (o->dlq_topic && *o->dlq_topic &&
        evbus__check_topic(o->dlq_topic) != EVBUS_OK) {
        fail(EVBUS_EINVAL);
        return NULL;
    }
    if (o->dlq_topic && *o->dlq_topic) {
        sub->dlq_topic = strdup(o->dlq_topic);
    } else if (sub->topic) {
        size_t n = strlen(topic) + 5;
        if ((sub->dlq_topic = malloc(n)))
            snprintf(sub->dlq_topic, n, "%s.dlq", topic);
    }
    sub->retry = o->retry;
    sub->max_inflight = o->max_inflight ? o->max_inflight : 1000;
    sub->fn = fn;
    sub->opaque = opaque;
    if (!sub->topic || !sub->group || !sub->dlq_topic) {
        evbus__sub_free(sub);
        fail(EVBUS_ENOMEM);
        return NULL;
    }
    char why[256] = "";
    int rc = bus->be->subscribe(bus->priv, sub->topic, sub->group, &sub->bsub,
                                why, sizeof why);
    if (rc != EVBUS_OK) {
        evbus__log(EVBUS_LOG_ERROR, "core", "subscribe to %s (group %s): %s",
                   topic, sub->group, *why ? why : evbus_strerror(rc));
        evbus__sub_free(sub);
        fail(rc);
        return NULL;
    }
    pthread_mutex_lock(&bus->mu);
    sub->next = bus->subs;
    bus->subs = sub;
    pthread_mutex_unlock(&bus->mu);
    evbus_host_notify(&bus->host);
    return sub;
}

evbus_sub_t *evbus_subscribe(evbus_t *bus, const char *topic,
                             const char *group, evbus_handler_fn fn,
                             void *opaque)
{
    return evbus_subscribe_opts(bus, topic, group, NULL, fn, opaque);
}

void evbus__sub_free(evbus_sub_t *sub)
{
    free(sub->topic);
    free(sub->group);
    free(sub->dlq_topic);
    free(sub);
}

/* Gives every message sub still holds back to the broker. Poller only. */
static void release_held(evbus_t *bus, evbus_sub_t *sub)
{
    if (!bus->heap.len)
        return;
    evbus_pending_t **taken = malloc(bus->heap.len * sizeof *taken);
    if (!taken)
        return; /* the messages stay unacked at the broker: redelivered */
    size_t n = evbus__heap_take_sub(&bus->heap, sub, taken);
    for (size_t i = 0; i < n; i++) {
        evbus_pending_t *p = taken[i];
        bus->be->settle(bus->priv, p->sub->bsub, &p->msg,
                        p->kind == EVBUS_PENDING_ACK ? EVBUS_SETTLE_ACK
                                                     : EVBUS_SETTLE_RELEASE,
                        0);
        p->sub->inflight--;
        evbus_event_free(p->event);
        free(p->reason);
        free(p);
    }
    free(taken);
}

/* Carries out pending removals. Called by whoever holds the poll role. */
void evbus__reap(evbus_t *bus)
{
    pthread_mutex_lock(&bus->mu);
    evbus_sub_t **pp = &bus->subs, *gone = NULL;
    while (*pp) {
        evbus_sub_t *s = *pp;
        if (atomic_load(&s->removed)) {
            *pp = s->next;
            s->next = gone;
            gone = s;
        } else {
            pp = &s->next;
        }
    }
    pthread_mutex_unlock(&bus->mu);
    while (gone) {
        evbus_sub_t *s = gone;
        gone = s->next;
        release_held(bus, s);
        bus->be->unsubscribe(bus->priv, s->bsub);
        pthread_mutex_lock(&bus->mu);
        bool free_it = s->free_on_reap;
        atomic_store(&s->detached, true);
        pthread_cond_broadcast(&bus->cv);
        pthread_mutex_unlock(&bus->mu);
        if (free_it)
            evbus__sub_free(s);
    }
}

int evbus_unsubscribe(evbus_sub_t *sub)
{
    if (!sub)
        return EVBUS_EINVAL;
    evbus_t *bus = sub->bus;
    if (evbus__polling_bus == bus) {
        /* From a handler: the poller reaps and frees it after the handler. */
        sub->free_on_reap = true;
        atomic_store(&sub->removed, true);
        return EVBUS_OK;
    }
    atomic_store(&sub->removed, true);
    for (;;) {
        bool idle = false;
        if (atomic_compare_exchange_strong(&bus->polling, &idle, true)) {
            evbus__reap(bus);
            atomic_store(&bus->polling, false);
        }
        if (atomic_load(&sub->detached))
            break;
        evbus_host_notify(&bus->host); /* let the poller reap it */
        pthread_mutex_lock(&bus->mu);
        if (!atomic_load(&sub->detached)) {
            struct timespec ts;
            clock_gettime(CLOCK_REALTIME, &ts);
            ts.tv_nsec += 5 * 1000000L;
            if (ts.tv_nsec >= 1000000000L) {
                ts.tv_sec++;
                ts.tv_nsec -= 1000000000L;
            }
            pthread_cond_timedwait(&bus->cv, &bus->mu, &ts);
        }
        pthread_mutex_unlock(&bus->mu);
    }
    evbus__sub_free(sub);
    return EVBUS_OK;
}

/* evbus_close: every subscription goes, the caller holds the poll role. */
void evbus__release_all(evbus_t *bus)
{
    bool idle = false;
    while (!atomic_compare_exchange_strong(&bus->polling, &idle, true)) {
        idle = false;
        poll(NULL, 0, 1);
    }
    pthread_mutex_lock(&bus->mu);
    for (evbus_sub_t *s = bus->subs; s; s = s->next) {
        if (!atomic_load(&s->removed)) { /* else someone waits to free it */
            s->free_on_reap = true;
            atomic_store(&s->removed, true);
        }
    }
    pthread_mutex_unlock(&bus->mu);
    evbus__reap(bus);
    release_held(bus, NULL);
    atomic_store(&bus->polling, false);
}

const char *evbus_sub_topic(const evbus_sub_t *sub)
{
    return sub ? sub->topic : NULL;
}

const char *evbus_sub_group(const evbus_sub_t *sub)
{
    return sub ? sub->group : NULL;
}
