/*
 * The poll loop and the delivery pipeline shared by every backend:
 *
 *   fetch -> decode -> handler -> ACK    -> settle(ACK)
 *                              -> RETRY  -> backoff, then again; after the
 *                                           last attempt: dead letter
 *                              -> DROP   -> dead letter now
 *   undecodable bytes -----------------------> dead letter (never retried)
 *
 * A message is settled (removed from the group's backlog) only after its
 * handler answered ACK or it was written to the dead-letter topic. Waiting
 * for a retry never blocks other events: the message goes to a timer heap
 * (or, for backends with EVBUS_FEAT_DELAYED_RETRY, back to the broker) and
 * the loop moves on.
 */
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "internal.h"

_Thread_local struct evbus *evbus__polling_bus;
static _Thread_local int tl_attempt;
static _Thread_local const char *tl_topic;

int evbus_delivery_attempt(void) { return tl_attempt; }
const char *evbus_delivery_topic(void) { return tl_topic; }

/* How long to wait before trying a failed ack or dead-letter write again. */
#define SETTLE_RETRY_MS 1000

/* ------------------------------------------------------------ settling */

static void settle(evbus_t *bus, evbus_sub_t *sub, evbus_msg_t *msg,
                   evbus_settle_t how, int delay_ms)
{
    int rc = bus->be->settle(bus->priv, sub->bsub, msg, how, delay_ms);
    if (rc == EVBUS_OK || how == EVBUS_SETTLE_RELEASE) {
        sub->inflight--;
        return;
    }
    /* The broker did not take the ack: keep the message and try again, so
     * it is neither lost nor acknowledged by accident. */
    evbus__log(EVBUS_LOG_WARN, "core", "settle on %s failed: %s; retrying",
               sub->topic, evbus_strerror(rc));
    evbus_pending_t *p = calloc(1, sizeof *p);
    if (!p) {
        sub->inflight--; /* the broker will redeliver it */
        return;
    }
    p->due_ms = evbus__now_ms() + SETTLE_RETRY_MS;
    p->kind = how == EVBUS_SETTLE_ACK ? EVBUS_PENDING_ACK
                                      : EVBUS_PENDING_REDELIVER;
    p->sub = sub;
    p->msg = *msg;
    if (evbus__heap_push(&bus->heap, p) != EVBUS_OK) {
        free(p);
        sub->inflight--;
    }
}

/* Holds a message for a later step (retry, dead-letter write). Takes
 * ownership of event and reason. */
static void hold(evbus_t *bus, evbus_sub_t *sub, const evbus_msg_t *msg,
                 evbus_pending_kind_t kind, evbus_event_t *event,
                 int attempt, int delay_ms, int prev_delay_ms,
                 uint64_t first_ms, char *reason)
{
    evbus_pending_t *p = calloc(1, sizeof *p);
    if (p) {
        p->due_ms = evbus__now_ms() + (uint64_t)delay_ms;
        p->kind = kind;
        p->sub = sub;
        p->msg = *msg;
        p->event = event;
        p->attempt = attempt;
        p->prev_delay_ms = prev_delay_ms;
        p->first_ms = first_ms;
        p->reason = reason;
        if (evbus__heap_push(&bus->heap, p) == EVBUS_OK)
            return;
    }
    /* Out of memory: give the message back to the broker instead. */
    free(p);
    evbus_event_free(event);
    free(reason);
    evbus_msg_t copy = *msg;
    settle(bus, sub, &copy, EVBUS_SETTLE_RELEASE, 0);
}

/* Writes the dead letter and settles the original; on a failed write the
 * message is held and the write retried with backoff. Takes ownership of
 * event (may be NULL for undecodable bytes). */
static void dead_letter(evbus_t *bus, evbus_sub_t *sub, evbus_msg_t *msg,
                        evbus_event_t *event, const char *reason, int attempt,
                        int prev_delay_ms, uint64_t first_ms)
{
    int rc = evbus__deadletter(sub, event, msg, reason, attempt);
    if (rc == EVBUS_OK) {
        atomic_fetch_add_explicit(&sub->c.dead_lettered, 1,
                                  memory_order_relaxed);
        if (!event)
            atomic_fetch_add_explicit(&sub->c.undecodable, 1,
                                      memory_order_relaxed);
        evbus__log(EVBUS_LOG_INFO, "core", "dead-lettered %s from %s to %s: %s",
                   event ? evbus_event_id(event) : "(undecodable)",
                   sub->topic, sub->dlq_topic, reason);
        evbus_event_free(event);
        settle(bus, sub, msg, EVBUS_SETTLE_ACK, 0);
        return;
    }
    int delay = evbus_retry_delay_ms(&sub->retry, attempt, prev_delay_ms);
    if (delay < SETTLE_RETRY_MS)
        delay = SETTLE_RETRY_MS;
    evbus__log(EVBUS_LOG_WARN, "core",
               "dead-letter write to %s failed (%s); trying again in %d ms",
               sub->dlq_topic, evbus_strerror(rc), delay);
    hold(bus, sub, msg, EVBUS_PENDING_DEADLETTER, event, attempt, delay,
         delay, first_ms, strdup(reason));
}

/* ------------------------------------------------------------ handlers */

/* *started_us gets the monotonic time the handler started. */
static evbus_result_t run_handler(evbus_sub_t *sub, const evbus_event_t *ev,
                                  int attempt, uint64_t *started_us)
{
    tl_attempt = attempt;
    tl_topic = sub->topic;
    uint64_t t0 = evbus__now_us();
    *started_us = t0;
    evbus_result_t r = sub->fn(ev, sub->opaque);
    uint64_t us = evbus__now_us() - t0;
    tl_attempt = 0;
    tl_topic = NULL;
    atomic_fetch_add_explicit(&sub->c.delivered, 1, memory_order_relaxed);
    evbus__hist_observe(&sub->c, us);
    return r;
}

/* Runs one delivery attempt of a decoded event and acts on the answer.
 * Takes ownership of event. first_ms is when the first attempt started, or
 * 0 when this is the first (then the handler's start time is used: one
 * clock read per event fewer on the common path). */
static void deliver(evbus_t *bus, evbus_sub_t *sub, evbus_msg_t *msg,
                    evbus_event_t *event, int attempt, int prev_delay_ms,
                    uint64_t first_ms)
{
    uint64_t started_us;
    evbus_result_t r = run_handler(sub, event, attempt, &started_us);
    if (!first_ms)
        first_ms = started_us / 1000u;
    if (r == EVBUS_ACK) {
        atomic_fetch_add_explicit(&sub->c.acked, 1, memory_order_relaxed);
        evbus_event_free(event);
        settle(bus, sub, msg, EVBUS_SETTLE_ACK, 0);
        return;
    }
    if (r != EVBUS_RETRY) {
        char reason[96];
        if (r == EVBUS_DROP)
            snprintf(reason, sizeof reason, "handler answered DROP");
        else
            snprintf(reason, sizeof reason,
                     "handler returned invalid result %d", (int)r);
        dead_letter(bus, sub, msg, event, reason, attempt, prev_delay_ms,
                    first_ms);
        return;
    }
    int delay = evbus_retry_delay_ms(&sub->retry, attempt, prev_delay_ms);
    uint64_t elapsed = evbus__now_ms() - first_ms;
    if (!evbus_retry_should_retry(&sub->retry, attempt, elapsed, delay)) {
        char reason[128];
        snprintf(reason, sizeof reason,
                 "handler answered RETRY %d times (max attempts %d)", attempt,
                 sub->retry.max_attempts);
        dead_letter(bus, sub, msg, event, reason, attempt, prev_delay_ms,
                    first_ms);
        return;
    }
    atomic_fetch_add_explicit(&sub->c.retried, 1, memory_order_relaxed);
    if (bus->be->features & EVBUS_FEAT_DELAYED_RETRY) {
        /* The broker keeps it and counts the attempt. */
        evbus_event_free(event);
        settle(bus, sub, msg, EVBUS_SETTLE_RETRY, delay);
        return;
    }
    hold(bus, sub, msg, EVBUS_PENDING_REDELIVER, event, attempt, delay, delay,
         first_ms, NULL);
}

/* A fresh message from fetch(): decode it and deliver. */
static void process(evbus_t *bus, evbus_sub_t *sub, evbus_msg_t *msg)
{
    int attempt = msg->delivery_count > 0 ? msg->delivery_count : 1;
    evbus_event_t *event = msg->event;
    msg->event = NULL;
    if (!event) {
        char why[256];
        if (msg->decode_error) {
            snprintf(why, sizeof why, "%s", msg->decode_error);
        } else {
            event = evbus_event_from_json_limit(msg->payload, msg->len,
                                                bus->max_event_bytes, why,
                                                sizeof why);
        }
        if (!event) {
            char reason[300];
            snprintf(reason, sizeof reason, "undecodable: %s", why);
            dead_letter(bus, sub, msg, NULL, reason, attempt, 0,
                        evbus__now_ms());
            return;
        }
    }
    /* A broker that counts deliveries may report a poison message that has
     * already used up its attempts in earlier lives of this process. */
    if (sub->retry.max_attempts > 0 && attempt > sub->retry.max_attempts) {
        char reason[128];
        snprintf(reason, sizeof reason,
                 "delivered %d times, more than max attempts %d", attempt - 1,
                 sub->retry.max_attempts);
        dead_letter(bus, sub, msg, event, reason, attempt - 1, 0,
                    evbus__now_ms());
        return;
    }
    deliver(bus, sub, msg, event, attempt, 0, 0);
}

/* Runs what is due in the timer heap. Returns handler calls made. */
static int run_due(evbus_t *bus)
{
    int calls = 0;
    uint64_t now = evbus__now_ms();
    evbus_pending_t *p;
    while ((p = evbus__heap_peek(&bus->heap)) && p->due_ms <= now) {
        evbus__heap_pop(&bus->heap);
        evbus_sub_t *sub = p->sub;
        switch (p->kind) {
        case EVBUS_PENDING_REDELIVER:
            if (!p->event) { /* a release that failed to settle: retry it */
                settle(bus, sub, &p->msg, EVBUS_SETTLE_RELEASE, 0);
                break;
            }
            deliver(bus, sub, &p->msg, p->event, p->attempt + 1,
                    p->prev_delay_ms, p->first_ms);
            calls++;
            break;
        case EVBUS_PENDING_DEADLETTER:
            dead_letter(bus, sub, &p->msg, p->event, p->reason, p->attempt,
                        p->prev_delay_ms, p->first_ms);
            break;
        case EVBUS_PENDING_ACK:
            settle(bus, sub, &p->msg, EVBUS_SETTLE_ACK, 0);
            break;
        }
        free(p->reason);
        free(p);
    }
    return calls;
}

/* Asks every subscription once for a batch. Returns handler calls made. */
static int fetch_round(evbus_t *bus)
{
    evbus_msg_t msgs[EVBUS_FETCH_BATCH];
    int calls = 0;
    pthread_mutex_lock(&bus->mu);
    evbus_sub_t *s = bus->subs;
    pthread_mutex_unlock(&bus->mu);
    /* The list only changes at its head (subscribe) or through reaping,
     * which this thread does, so walking it unlocked is safe. */
    for (; s; s = s->next) {
        if (atomic_load_explicit(&s->removed, memory_order_relaxed))
            continue;
        int room = s->max_inflight - s->inflight;
        if (room <= 0)
            continue;
        if (room > EVBUS_FETCH_BATCH)
            room = EVBUS_FETCH_BATCH;
        memset(msgs, 0, sizeof(evbus_msg_t) * (size_t)room);
        int n = bus->be->fetch(bus->priv, s->bsub, msgs, room);
        if (n < 0) {
            evbus__log(EVBUS_LOG_WARN, "core", "fetch from %s failed: %s",
                       s->topic, evbus_strerror(n));
            continue;
        }
        for (int i = 0; i < n; i++) {
            s->inflight++;
            if (atomic_load_explicit(&s->removed, memory_order_relaxed)) {
                evbus_event_free(msgs[i].event);
                msgs[i].event = NULL;
                settle(bus, s, &msgs[i], EVBUS_SETTLE_RELEASE, 0);
                continue;
            }
            process(bus, s, &msgs[i]);
            calls++;
        }
    }
    return calls;
}

/* ------------------------------------------------------------ the loop */

/* Sleeps until a backend notifies (gen moves past gen0), evbus_stop, or
 * ms pass. The sleeping flag and gen are both seq_cst, so either the
 * notifier sees sleeping and writes the eventfd, or we see the new gen. */
static void idle_wait(evbus_t *bus, uint64_t gen0, int ms)
{
    atomic_store(&bus->sleeping, true);
    if (atomic_load(&bus->gen) == gen0 && !atomic_load(&bus->stop)) {
        struct pollfd pfd = {bus->wake_fd, POLLIN, 0};
        poll(&pfd, 1, ms);
    }
    atomic_store(&bus->sleeping, false);
    uint64_t drain;
    ssize_t r = read(bus->wake_fd, &drain, sizeof drain);
    (void)r;
}

/* The body of evbus_poll; the caller holds the poll role. *stopped tells
 * whether evbus_stop ended it. */
static int poll_once(evbus_t *bus, int timeout_ms, bool *stopped)
{
    uint64_t deadline = timeout_ms < 0 ? UINT64_MAX
                                       : evbus__now_ms() + (uint64_t)timeout_ms;
    *stopped = false;
    for (;;) {
        if (atomic_load(&bus->closing))
            return EVBUS_ECLOSED;
        evbus__reap(bus);
        uint64_t gen0 = atomic_load(&bus->gen);
        int calls = run_due(bus) + fetch_round(bus);
        int callbacks = evbus__run_completions(bus);
        if (calls > 0 || callbacks > 0)
            return calls;
        if (atomic_exchange(&bus->stop, false)) {
            *stopped = true;
            return 0;
        }
        uint64_t now = evbus__now_ms();
        if (now >= deadline)
            return 0;
        uint64_t wait = deadline - now;
        evbus_pending_t *next = evbus__heap_peek(&bus->heap);
        if (next)
            wait = next->due_ms > now ? next->due_ms - now : 0;
        if (wait > EVBUS_IDLE_RECHECK_MS)
            wait = EVBUS_IDLE_RECHECK_MS;
        if (deadline - now < wait)
            wait = deadline - now;
        idle_wait(bus, gen0, (int)wait);
    }
}

static int enter_poll(evbus_t *bus)
{
    if (atomic_load(&bus->closing))
        return EVBUS_ECLOSED;
    bool idle = false;
    if (!atomic_compare_exchange_strong(&bus->polling, &idle, true))
        return EVBUS_EBUSY;
    evbus__polling_bus = bus;
    return EVBUS_OK;
}

int evbus_poll(evbus_t *bus, int timeout_ms)
{
    if (!bus)
        return EVBUS_EINVAL;
    int rc = enter_poll(bus);
    if (rc != EVBUS_OK)
        return rc;
    bool stopped;
    rc = poll_once(bus, timeout_ms, &stopped);
    evbus__polling_bus = NULL;
    /* Last touch of bus: evbus_close may free it right after. */
    atomic_store(&bus->polling, false);
    return rc;
}

int evbus_run(evbus_t *bus)
{
    if (!bus)
        return EVBUS_EINVAL;
    int rc = enter_poll(bus);
    if (rc != EVBUS_OK)
        return rc;
    bool stopped = false;
    while (!stopped) {
        rc = poll_once(bus, -1, &stopped);
        if (rc < 0)
            break;
    }
    rc = rc == EVBUS_ECLOSED || rc >= 0 ? EVBUS_OK : rc;
    evbus__polling_bus = NULL;
    atomic_store(&bus->polling, false);
    return rc;
}
