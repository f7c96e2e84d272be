/*
 * Subscriptions: creating them, and taking them apart safely while another
 * thread may be polling. The poll-role holder owns a subscription's
 * in-flight messages, so removal is a request (`removed`) that the holder
 * carries out ("reaping") between handler calls; evbus_unsubscribe from
 * another thread either reaps itself (nobody polls) or waits for the
 * poller to do it, without ever disturbing the poller.
 */
#include <stdlib.h>
#include <string.h>

#include "internal.h"

/* The options as of the first release that carried struct_size. */
#define SUB_OPTS_MIN_SIZE EVBUS__SIZE_THROUGH(evbus_sub_opts_t, concurrency)

void evbus_sub_opts_init_sized(evbus_sub_opts_t *out, size_t size)
{
    evbus_sub_opts_t defaults, *o = &defaults;
    memset(o, 0, sizeof *o);
    o->struct_size = sizeof *o;
    o->max_inflight = 1000;
    o->dlq_failure = EVBUS_DLQ_FAILURE_RELEASE;
    o->concurrency = 1;
    evbus__struct_defaults(out, size, o, sizeof *o);
}

void evbus__sub_free(evbus_sub_t *sub)
{
    evbus__pool_stop(&sub->pool);
    evbus__lanes_free(&sub->lanes);
    free(sub->recbuf);
    evbus__memo_free(sub->memo);
    free(sub->topic);
    free(sub->group);
    free(sub->dlq_topic);
    free(sub);
}

/* Checks the options and the names and builds the subscription (not yet
 * known to the backend). NULL with the reason in errstr. */
static evbus_sub_t *sub_new(evbus_t *bus, const char *topic, const char *group,
                            const evbus_sub_opts_t *user, evbus_handler_fn fn,
                            void *opaque, char *errstr, size_t n)
{
    evbus_sub_opts_t o;
    evbus_sub_opts_init(&o);
    if (user && evbus__struct_in(&o, sizeof o, user, SUB_OPTS_MIN_SIZE)) {
        evbus__seterr(errstr, n, "options not initialised with "
                      "evbus_sub_opts_init (struct_size %zu)",
                      user->struct_size);
        return NULL;
    }
    if (!fn) {
        evbus__seterr(errstr, n, "handler is NULL");
        return NULL;
    }
    if (evbus__check_name(topic, "topic", bus->native_names, errstr, n) ||
        (group && evbus__check_name(group, "group", bus->native_names,
                                    errstr, n)) ||
        (o.dlq_topic && *o.dlq_topic &&
         evbus__check_name(o.dlq_topic, "dead-letter topic",
                           bus->native_names, errstr, n)))
        return NULL;
    if (o.max_inflight < 0 ||
        (o.dlq_failure != EVBUS_DLQ_FAILURE_RELEASE &&
         o.dlq_failure != EVBUS_DLQ_FAILURE_ACK) ||
        o.concurrency < 1 || o.concurrency > EVBUS_MAX_CONCURRENCY) {
        evbus__seterr(errstr, n, "invalid option: max_inflight %d (>= 0), "
                      "dlq_failure %d (RELEASE or ACK), concurrency %d (1 to "
                      "%d)", o.max_inflight, (int)o.dlq_failure,
                      o.concurrency, EVBUS_MAX_CONCURRENCY);
        return NULL;
    }
    evbus_retry_policy_t retry;
    if (evbus__retry_policy_copy(&retry, o.retry) != EVBUS_OK ||
        retry.max_attempts < 0) {
        evbus__seterr(errstr, n, "retry policy not initialised with "
                      "evbus_retry_policy_init, or max_attempts < 0");
        return NULL;
    }
    /* A generated dead-letter name must follow the rule too. */
    char dlq[EVBUS__NAME_MAX + 8];
    if (!o.dlq_topic || !*o.dlq_topic) {
        snprintf(dlq, sizeof dlq, "%s.dlq", topic);
        if (evbus__check_name(dlq,
                              "default dead-letter topic (TOPIC.dlq; "
                              "evbus_sub_opts_t.dlq_topic names another)",
                              bus->native_names, errstr, n))
            return NULL;
    }
    evbus_sub_t *sub = calloc(1, sizeof *sub);
    if (!sub) {
        evbus__seterr(errstr, n, "out of memory");
        return NULL;
    }
    sub->bus = bus;
    sub->retry = retry;
    sub->max_inflight = o.max_inflight ? o.max_inflight : 1000;
    sub->dlq_failure = o.dlq_failure;
    sub->concurrency = o.concurrency;
    evbus__lanes_init(&sub->lanes);
    sub->fn = fn;
    sub->opaque = opaque;
    sub->topic = strdup(topic);
    sub->group = strdup(group ? group : "default");
    sub->dlq_topic = strdup(o.dlq_topic && *o.dlq_topic ? o.dlq_topic : dlq);
    /* A backend that redelivers a RETRY itself and stores no attempt
     * count: the context is remembered here instead. */
    if ((bus->features & EVBUS_FEAT_DELAYED_RETRY) && !bus->record_attempts)
        sub->memo = evbus__memo_new(EVBUS_MEMO_CAPACITY);
    if (!sub->topic || !sub->group || !sub->dlq_topic ||
        ((bus->features & EVBUS_FEAT_DELAYED_RETRY) &&
         !bus->record_attempts && !sub->memo) ||
        (sub->concurrency > 1 &&
         (!(sub->recbuf = calloc((size_t)sub->concurrency,
                                 sizeof *sub->recbuf)) ||
          evbus__pool_start(&sub->pool, sub, sub->concurrency)))) {
        evbus__sub_free(sub);
        evbus__seterr(errstr, n, "out of memory (or no threads) for the "
                      "subscription");
        return NULL;
    }
    return sub;
}

evbus_sub_t *evbus_subscribe_opts(evbus_t *bus, const char *topic,
                                  const char *group, const evbus_sub_opts_t *o,
                                  evbus_handler_fn fn, void *opaque,
                                  char *errstr, size_t n)
{
    char why[512] = "";
    evbus_sub_t *sub = NULL;
    int rc = EVBUS_EINVAL;
    if (!bus) {
        evbus__seterr(why, sizeof why, "bus is NULL");
    } else if (atomic_load(&bus->closing)) {
        rc = EVBUS_ECLOSED;
        evbus__seterr(why, sizeof why, "bus is closing");
    } else if ((sub = sub_new(bus, topic, group, o, fn, opaque, why,
                              sizeof why))) {
        rc = bus->be->subscribe(bus->priv, sub->topic, sub->group,
                                &sub->bsub, why, sizeof why);
        if (rc != EVBUS_OK) {
            if (!*why)
                evbus__seterr(why, sizeof why, "%s", evbus_strerror(rc));
            evbus__sub_free(sub);
            sub = NULL;
        }
    }
    if (!sub) {
        evbus__log(EVBUS_LOG_ERROR, "core", "subscribe to %s (group %s): %s",
                   topic ? topic : "(null)", group ? group : "default", why);
        evbus__seterr(errstr, n, "%s: %s", evbus_err_name(rc), why);
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
    return evbus_subscribe_opts(bus, topic, group, NULL, fn, opaque, NULL, 0);
}

void evbus__release_msg(evbus_t *bus, evbus_sub_t *sub, evbus_msg_t *msg)
{
    int rc = bus->be->settle(bus->priv, sub->bsub, msg, EVBUS_SETTLE_RELEASE,
                             0);
    if (rc != EVBUS_OK)
        evbus__log(EVBUS_LOG_WARN, "core",
                   "giving an event of %s back to the broker failed (%s); it "
                   "is delivered again once its lease or claim times out",
                   sub->topic, evbus_strerror(rc));
    sub->inflight--;
}

/* Gives one held message back (heap drain callback). */
static void release_pending(evbus_pending_t *p, void *arg)
{
    evbus_t *bus = arg;
    evbus_event_free(p->event);
    if (p->kind == EVBUS_PENDING_SETTLE && p->how == EVBUS_SETTLE_ACK) {
        /* Handled: one more try at the ack before letting go. */
        if (bus->be->settle(bus->priv, p->sub->bsub, &p->msg,
                            EVBUS_SETTLE_ACK, 0) == EVBUS_OK)
            p->sub->inflight--;
        else
            evbus__release_msg(bus, p->sub, &p->msg);
    } else {
        evbus__release_msg(bus, p->sub, &p->msg);
    }
    free(p->reason);
    free(p);
}

/* Carries out pending removals. Called by the poll-role holder. */
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
        evbus__workers_drain(bus, s); /* running handlers finish first */
        evbus__heap_drain_sub(&bus->heap, s, release_pending, bus);
        bus->be->unsubscribe(bus->priv, s->bsub);
        pthread_mutex_lock(&bus->mu);
        bool free_it = s->free_on_reap;
        atomic_store(&s->detached, true);
        pthread_cond_broadcast(&bus->role_cv);
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
    pthread_mutex_lock(&bus->mu);
    atomic_store(&sub->removed, true);
    while (!atomic_load(&sub->detached)) {
        if (bus->role == EVBUS_ROLE_FREE) {
            /* Nobody polls: reap it ourselves. */
            bus->role = EVBUS_ROLE_CONTROL;
            pthread_mutex_unlock(&bus->mu);
            evbus__reap(bus);
            evbus__role_release(bus);
            pthread_mutex_lock(&bus->mu);
            continue;
        }
        /* A poller (or another control step) has the role: it reaps at its
         * next round; wake it and wait for the detach broadcast. */
        pthread_mutex_unlock(&bus->mu);
        evbus_host_notify(&bus->host);
        pthread_mutex_lock(&bus->mu);
        if (!atomic_load(&sub->detached)) {
            bus->role_waiters++;
            pthread_cond_wait(&bus->role_cv, &bus->mu);
            bus->role_waiters--;
        }
    }
    pthread_mutex_unlock(&bus->mu);
    evbus__sub_free(sub);
    return EVBUS_OK;
}

/* evbus_close: every subscription goes. The caller holds the role. */
void evbus__release_all(evbus_t *bus)
{
    pthread_mutex_lock(&bus->mu);
    for (evbus_sub_t *s = bus->subs; s; s = s->next) {
        if (!atomic_load(&s->removed)) { /* else someone waits to free it */
            s->free_on_reap = true;
            atomic_store(&s->removed, true);
        }
    }
    pthread_mutex_unlock(&bus->mu);
    evbus__reap(bus);
    evbus__heap_drain_sub(&bus->heap, NULL, release_pending, bus);
}

const char *evbus_sub_topic(const evbus_sub_t *sub)
{
    return sub ? sub->topic : NULL;
}

const char *evbus_sub_group(const evbus_sub_t *sub)
{
    return sub ? sub->group : NULL;
}
