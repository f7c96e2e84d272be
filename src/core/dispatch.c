/*
 * The delivery pipeline shared by every backend:
 *
 *   fetch -> decode -> record the attempt -> handler -> ACK   -> settle(ACK)
 *                                                    -> RETRY -> backoff,
 *                               then again; after the last attempt: dead letter
 *                                                    -> DROP  -> dead letter
 *   undecodable bytes ------------------------------------> dead letter
 *
 * A message is settled (removed from the group's backlog) only after its
 * handler answered ACK or it was written to the dead-letter topic. Waiting
 * for a retry never blocks other events: the message goes to a timer heap
 * (or, for backends with EVBUS_FEAT_DELAYED_RETRY, back to the broker) and
 * the loop moves on.
 *
 * An attempt is a handler call. Its number and context (first-attempt time,
 * previous delay) come from what the backend recorded (evbus_msg_t), are
 * recorded again before each call (record_attempts) and travel with a
 * broker-side retry, so a crash neither resets a poison event's count nor
 * charges events that never reached a handler.
 *
 * Everything here runs on the thread that holds the poll role (poll.c), or
 * on a worker the sleeping poller lends its right to (workers.h); both
 * hold bus->work_mu.
 */
#include <stdlib.h>
#include <string.h>

#include "internal.h"

static _Thread_local int tl_attempt;
static _Thread_local const char *tl_topic;

int evbus_delivery_attempt(void) { return tl_attempt; }
const char *evbus_delivery_topic(void) { return tl_topic; }

/* A failed settle is tried again after this, doubling up to the max. */
#define SETTLE_RETRY_MS 1000
#define SETTLE_RETRY_MAX_MS 30000
/* Shortest time an event whose dead letter failed for good is held. */
#define PARK_MIN_MS 1000

static void dead_letter(evbus_t *bus, evbus_sub_t *sub, evbus_msg_t *msg,
                        evbus_event_t *event, const char *reason,
                        const evbus_retry_ctx_t *ctx, int tries,
                        uint64_t since_ms);

/* ------------------------------------------------------------ holding */

/* A held message due after delay_ms. Takes ownership of event and reason;
 * on allocation failure they are freed and NULL is returned. */
static evbus_pending_t *hold(evbus_t *bus, evbus_sub_t *sub,
                             const evbus_msg_t *msg, evbus_pending_kind_t kind,
                             uint64_t delay_ms, evbus_event_t *event,
                             char *reason)
{
    evbus_pending_t *p = calloc(1, sizeof *p);
    if (p) {
        p->due_ms = evbus__mono_ms() + delay_ms;
        p->kind = kind;
        p->sub = sub;
        p->msg = *msg;
        p->event = event;
        p->reason = reason;
        if (evbus__heap_push(&bus->heap, p) == EVBUS_OK)
            return p;
    }
    free(p);
    evbus_event_free(event);
    free(reason);
    return NULL;
}

static uint64_t settle_backoff(int tries)
{
    uint64_t ms = SETTLE_RETRY_MS;
    for (int i = 1; i < tries && ms < SETTLE_RETRY_MAX_MS; i++)
        ms *= 2;
    return ms < SETTLE_RETRY_MAX_MS ? ms : SETTLE_RETRY_MAX_MS;
}

/* Settles msg (ACK or RETRY). A failed settle is held and tried again with
 * backoff, so the message is neither lost nor acknowledged by accident. */
static void settle(evbus_t *bus, evbus_sub_t *sub, evbus_msg_t *msg,
                   evbus_settle_t how, int delay_ms, int tries)
{
    int rc = bus->be->settle(bus->priv, sub->bsub, msg, how, delay_ms);
    if (rc == EVBUS_OK) {
        sub->inflight--;
        return;
    }
    tries++;
    if (tries == 1)
        evbus__log(EVBUS_LOG_WARN, "core",
                   "%s of an event of %s failed: %s; trying again",
                   how == EVBUS_SETTLE_ACK ? "acknowledging" : "retrying",
                   sub->topic, evbus_strerror(rc));
    evbus_pending_t *p = hold(bus, sub, msg, EVBUS_PENDING_SETTLE,
                              settle_backoff(tries), NULL, NULL);
    if (!p) { /* out of memory: the broker redelivers it after its lease */
        evbus__release_msg(bus, sub, msg);
        return;
    }
    p->how = how;
    p->delay_ms = delay_ms;
    p->tries = tries;
}

/* ------------------------------------------------------------ dead letters */

/* The dead-letter write failed for good: count it, log it, and either hold
 * the event for a while before giving it back, or drop it, as the
 * subscription's dlq_failure says. Never a hot loop. */
static void park(evbus_t *bus, evbus_sub_t *sub, evbus_msg_t *msg,
                 evbus_event_t *event, int rc)
{
    atomic_fetch_add_explicit(&sub->c.dlq_failed, 1, memory_order_relaxed);
    const char *id = event ? evbus_event_id(event) : "(undecodable)";
    if (sub->dlq_failure == EVBUS_DLQ_FAILURE_ACK) {
        evbus__log(EVBUS_LOG_ERROR, "core",
                   "dead-letter write of %s from %s to %s failed for good "
                   "(%s); dropped it (dlq_failure=ACK)",
                   id, sub->topic, sub->dlq_topic, evbus_strerror(rc));
        evbus_event_free(event);
        settle(bus, sub, msg, EVBUS_SETTLE_ACK, 0, 0);
        return;
    }
    int ms = sub->retry.max_ms > PARK_MIN_MS ? sub->retry.max_ms : PARK_MIN_MS;
    evbus__log(EVBUS_LOG_ERROR, "core",
               "dead-letter write of %s from %s to %s failed for good (%s); "
               "holding it %d ms, then giving it back to the broker",
               id, sub->topic, sub->dlq_topic, evbus_strerror(rc), ms);
    evbus_event_free(event);
    if (!hold(bus, sub, msg, EVBUS_PENDING_PARKED, (uint64_t)ms, NULL, NULL))
        evbus__release_msg(bus, sub, msg);
}

/* Writes the dead letter and settles the original. A retriable failure is
 * tried again with the subscription's backoff; a permanent one, or one
 * that outlasts the retry policy, parks the event. Takes ownership of
 * event (NULL for undecodable bytes). tries/since_ms: earlier failed
 * writes of this dead letter and when the first one happened. */
static void dead_letter(evbus_t *bus, evbus_sub_t *sub, evbus_msg_t *msg,
                        evbus_event_t *event, const char *reason,
                        const evbus_retry_ctx_t *ctx, int tries,
                        uint64_t since_ms)
{
    int rc = evbus__deadletter(sub, event, msg, reason, ctx->attempt);
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
        settle(bus, sub, msg, EVBUS_SETTLE_ACK, 0, 0);
        return;
    }
    uint64_t now = evbus__mono_ms();
    if (++tries == 1)
        since_ms = now;
    int delay = evbus_retry_delay_ms(&sub->retry, tries, 0);
    if (!evbus_err_retriable(rc) ||
        !evbus_retry_should_retry(&sub->retry, tries, now - since_ms,
                                  delay)) {
        park(bus, sub, msg, event, rc);
        return;
    }
    evbus__log(EVBUS_LOG_WARN, "core",
               "dead-letter write to %s failed (%s); trying again in %d ms",
               sub->dlq_topic, evbus_strerror(rc), delay);
    evbus_pending_t *p = hold(bus, sub, msg, EVBUS_PENDING_DEADLETTER,
                              (uint64_t)delay, event, strdup(reason));
    if (!p) {
        evbus__release_msg(bus, sub, msg);
        return;
    }
    p->ctx = *ctx;
    p->tries = tries;
    p->tries_since_ms = since_ms;
}

/* ------------------------------------------------------------ handlers */

evbus_result_t evbus__run_handler(evbus_sub_t *sub, const evbus_event_t *ev,
                                  int attempt)
{
    tl_attempt = attempt;
    tl_topic = sub->topic;
    uint64_t t0 = evbus__mono_us();
    evbus_result_t r = sub->fn(ev, sub->opaque);
    uint64_t us = evbus__mono_us() - t0;
    tl_attempt = 0;
    tl_topic = NULL;
    atomic_fetch_add_explicit(&sub->c.delivered, 1, memory_order_relaxed);
    evbus__hist_observe(&sub->c, us);
    return r;
}

/* Acts on a handler's answer. Takes ownership of event. */
static void outcome(evbus_t *bus, evbus_sub_t *sub, evbus_msg_t *msg,
                    evbus_event_t *event, evbus_retry_ctx_t *ctx,
                    evbus_result_t r)
{
    if (r == EVBUS_ACK) {
        atomic_fetch_add_explicit(&sub->c.acked, 1, memory_order_relaxed);
        evbus_event_free(event);
        settle(bus, sub, msg, EVBUS_SETTLE_ACK, 0, 0);
        return;
    }
    char reason[160];
    if (r != EVBUS_RETRY) {
        if (r == EVBUS_DROP)
            snprintf(reason, sizeof reason, "handler answered DROP");
        else
            snprintf(reason, sizeof reason,
                     "handler returned invalid result %d", (int)r);
        dead_letter(bus, sub, msg, event, reason, ctx, 0, 0);
        return;
    }
    int delay = evbus_retry_delay_ms(&sub->retry, ctx->attempt,
                                     ctx->prev_delay_ms);
    int64_t elapsed = evbus__wall_ms() - ctx->first_ms;
    if (!evbus_retry_should_retry(&sub->retry, ctx->attempt,
                                  elapsed > 0 ? (uint64_t)elapsed : 0,
                                  delay)) {
        if (sub->retry.max_attempts > 0 &&
            ctx->attempt >= sub->retry.max_attempts)
            snprintf(reason, sizeof reason,
                     "handler answered RETRY %d times (max attempts %d)",
                     ctx->attempt, sub->retry.max_attempts);
        else
            snprintf(reason, sizeof reason,
                     "handler answered RETRY %d times over %lld ms (max "
                     "elapsed %d ms)",
                     ctx->attempt, (long long)elapsed,
                     sub->retry.max_elapsed_ms);
        dead_letter(bus, sub, msg, event, reason, ctx, 0, 0);
        return;
    }
    atomic_fetch_add_explicit(&sub->c.retried, 1, memory_order_relaxed);
    ctx->prev_delay_ms = delay;
    if (bus->features & EVBUS_FEAT_DELAYED_RETRY) {
        /* The broker keeps it; the context goes with it (stored by the
         * backend, or remembered here when the backend keeps none). */
        if (sub->memo)
            evbus__memo_put(sub->memo, event, ctx);
        evbus_event_free(event);
        settle(bus, sub, msg, EVBUS_SETTLE_RETRY, delay, 0);
        return;
    }
    evbus_pending_t *p = hold(bus, sub, msg, EVBUS_PENDING_REDELIVER,
                              (uint64_t)delay, event, NULL);
    if (p)
        p->ctx = *ctx;
    else
        evbus__release_msg(bus, sub, msg);
}

/* Has the backend store the attempts about to start (msgs[i] carry their
 * context). A backend that keeps no count answers EVBUS_ENOTSUP: then the
 * core counts in memory, and remembers broker-side retries itself. */
static int record(evbus_t *bus, evbus_sub_t *sub, evbus_msg_t *const *msgs,
                  int n)
{
    if (!bus->record_attempts || n == 0)
        return EVBUS_OK;
    int rc = bus->record_attempts(bus->priv, sub->bsub, msgs, n);
    if (rc == EVBUS_ENOTSUP) {
        if (!sub->memo && (bus->features & EVBUS_FEAT_DELAYED_RETRY))
            sub->memo = evbus__memo_new(EVBUS_MEMO_CAPACITY);
        return EVBUS_OK;
    }
    if (rc != EVBUS_OK)
        evbus__log(EVBUS_LOG_WARN, "core",
                   "recording %d attempt(s) on %s failed (%s); giving the "
                   "events back to the broker",
                   n, sub->topic, evbus_strerror(rc));
    return rc;
}

static void set_ctx(evbus_msg_t *msg, evbus_retry_ctx_t *ctx)
{
    if (!ctx->first_ms)
        ctx->first_ms = evbus__wall_ms();
    msg->attempts = ctx->attempt;
    msg->first_attempt_ms = ctx->first_ms;
    msg->prev_delay_ms = ctx->prev_delay_ms;
}

/* Records attempt ctx->attempt with the backend and runs the handler here.
 * Takes ownership of event. Returns 1 when the handler ran, else 0. */
static int attempt(evbus_t *bus, evbus_sub_t *sub, evbus_msg_t *msg,
                   evbus_event_t *event, evbus_retry_ctx_t *ctx)
{
    set_ctx(msg, ctx);
    evbus_msg_t *one = msg;
    if (record(bus, sub, &one, 1) != EVBUS_OK) {
        evbus_event_free(event);
        evbus__release_msg(bus, sub, msg);
        return 0;
    }
    evbus_result_t r = evbus__run_handler(sub, event, ctx->attempt);
    outcome(bus, sub, msg, event, ctx, r);
    return 1;
}

/* Runs the attempt here (concurrency 1) or queues it for the workers
 * behind the events of its key. Takes ownership of event. Returns handler
 * calls made here. */
static int run_or_queue(evbus_t *bus, evbus_sub_t *sub, evbus_msg_t *msg,
                        evbus_event_t *event, evbus_retry_ctx_t *ctx)
{
    if (sub->concurrency <= 1)
        return attempt(bus, sub, msg, event, ctx);
    evbus_job_t *job = calloc(1, sizeof *job);
    if (job) {
        job->msg = *msg;
        job->event = event;
        job->ctx = *ctx;
        if (evbus__lanes_push(&sub->lanes, job) == EVBUS_OK)
            return 0;
    }
    free(job);
    evbus_event_free(event);
    evbus__release_msg(bus, sub, msg);
    return 0;
}

/* ------------------------------------------------------------ workers */

/* Acts on one worker's answer. */
static void finish(evbus_t *bus, evbus_sub_t *sub, evbus_job_t *job)
{
    sub->started--;
    evbus__lanes_done(&sub->lanes, job);
    outcome(bus, sub, &job->msg, job->event, &job->ctx, job->result);
    free(job);
}

/* Acts on a list of answers. Returns how many. */
static int finish_all(evbus_t *bus, evbus_sub_t *sub, evbus_job_t *job)
{
    int n = 0;
    while (job) {
        evbus_job_t *next = job->next;
        finish(bus, sub, job);
        job = next;
        n++;
    }
    return n;
}

/* Acts on the answers sub's workers handed back. Returns how many. */
static int collect(evbus_t *bus, evbus_sub_t *sub)
{
    return finish_all(bus, sub, evbus__pool_take_done(&sub->pool));
}

/* Starts jobs whose key is free, as many as workers are idle, their
 * attempts recorded in one call first. The first of them is returned
 * when mine (for the calling worker); the rest are appended to *others
 * when given (the caller hands them to the workers), else handed over. */
static evbus_job_t *start_jobs(evbus_t *bus, evbus_sub_t *sub, bool mine,
                               evbus_job_t ***others)
{
    int n = 0;
    evbus_job_t *head = NULL, **tail = &head;
    while (sub->started + n < sub->concurrency) {
        evbus_job_t *job = evbus__lanes_next(&sub->lanes);
        if (!job)
            break;
        set_ctx(&job->msg, &job->ctx);
        sub->recbuf[n++] = &job->msg;
        *tail = job;
        tail = &job->next;
    }
    if (n == 0)
        return NULL;
    if (record(bus, sub, sub->recbuf, n) != EVBUS_OK) {
        while (head) {
            evbus_job_t *next = head->next;
            evbus__lanes_done(&sub->lanes, head);
            evbus_event_free(head->event);
            evbus__release_msg(bus, sub, &head->msg);
            free(head);
            head = next;
        }
        return NULL;
    }
    sub->started += n;
    evbus_job_t *own = NULL;
    if (mine) {
        own = head;
        head = head->next;
        own->next = NULL;
    }
    if (others && head) {
        **others = head;
        *others = tail;
    } else {
        evbus__pool_assign(&sub->pool, head);
    }
    return own;
}

static bool may_start(evbus_t *bus, evbus_sub_t *sub)
{
    return !atomic_load(&bus->stop) &&
           !atomic_load_explicit(&sub->removed, memory_order_relaxed);
}

int evbus__workers_round(evbus_t *bus, evbus_sub_t *sub)
{
    if (sub->concurrency <= 1)
        return 0;
    int n = collect(bus, sub);
    if (may_start(bus, sub))
        start_jobs(bus, sub, false, NULL);
    return n;
}

/* Would the poller's next round fetch for sub (see fetch_sub)? While
 * few events wait for a worker, or too few of them could start at once
 * (a batch of a few keys, as from one Kafka partition, waits mostly
 * behind its own keys), up to max_inflight. */
static bool wants_fetch(const evbus_sub_t *s)
{
    int room = s->max_inflight - s->inflight;
    /* Fetching for more keys asks for a batch worth the round trip. */
    int batch = s->max_inflight / 8 + 1;
    if (batch > EVBUS_FETCH_BATCH / 4)
        batch = EVBUS_FETCH_BATCH / 4;
    return room > 0 && (s->lanes.waiting <= (size_t)s->concurrency ||
                        (room >= batch &&
                         s->lanes.startable < (size_t)s->concurrency));
}

bool evbus__workers_answer(evbus_sub_t *sub, evbus_job_t *job,
                           evbus_job_t **next)
{
    evbus_t *bus = sub->bus;
    *next = NULL;
    if (pthread_mutex_trylock(&bus->work_mu) != 0)
        return false;
    if (!bus->lend) { /* the poller is busy, or nobody polls */
        pthread_mutex_unlock(&bus->work_mu);
        return false;
    }
    bool wanted = wants_fetch(sub);
    size_t held = bus->heap.len;
    evbus__pool_begin_acting(&sub->pool);
    int n = 0;
    bool left = false;
    evbus_job_t *others = NULL, **others_tail = &others;
    for (;;) {
        n += finish_all(bus, sub, job);
        *next = may_start(bus, sub) ? start_jobs(bus, sub, true, &others_tail)
                                    : NULL;
        /* Answers handed back meanwhile (while the record went to the
         * broker) are taken too, until this worker has a job of its own:
         * then the poller takes the rest, so that job does not wait for
         * more round trips. */
        if (*next) {
            left = evbus__pool_end_acting(&sub->pool);
            break;
        }
        if (!(job = evbus__pool_take_done_or_end(&sub->pool)))
            break;
    }
    /* Wake the poller only for what it must do itself: answers left, fetch
     * again (the lanes ran low or room came back), or a retry timer that
     * may be due before its sleep ends. */
    bool wake = left || (!wanted && wants_fetch(sub)) ||
                bus->heap.len != held;
    atomic_fetch_add_explicit(&bus->lent_calls, n, memory_order_relaxed);
    pthread_mutex_unlock(&bus->work_mu);
    /* Started (recorded, counted): handing them over needs no right. */
    evbus__pool_assign(&sub->pool, others);
    if (wake)
        evbus_host_notify(&bus->host);
    return true;
}

void evbus__workers_drain(evbus_t *bus, evbus_sub_t *sub)
{
    if (sub->concurrency <= 1)
        return;
    while (collect(bus, sub), sub->started > 0)
        evbus__pool_wait_done(&sub->pool);
    evbus_job_t *job = evbus__lanes_drain(&sub->lanes);
    while (job) {
        evbus_job_t *next = job->next;
        evbus_event_free(job->event);
        evbus__release_msg(bus, sub, &job->msg);
        free(job);
        job = next;
    }
}

/* The retry context a fetched message arrives with. */
static evbus_retry_ctx_t arrival_ctx(const evbus_t *bus, const evbus_msg_t *m)
{
    int before = m->attempts;
    if (bus->be->version < 2) /* counted hand-outs, 1 the first time */
        before = m->delivery_count > 1 ? m->delivery_count - 1 : 0;
    return (evbus_retry_ctx_t){before + 1, m->prev_delay_ms,
                               m->first_attempt_ms};
}

/* A fresh message from fetch(): decode it, check what earlier lives of this
 * event used up, and run its next attempt. Returns handler calls made. */
static int process(evbus_t *bus, evbus_sub_t *sub, evbus_msg_t *msg)
{
    evbus_retry_ctx_t ctx = arrival_ctx(bus, msg);
    evbus_event_t *event = msg->event;
    msg->event = NULL;
    if (!event) {
        char why[256];
        if (msg->decode_error)
            snprintf(why, sizeof why, "%s", msg->decode_error);
        else if (msg->len > bus->max_event_bytes)
            snprintf(why, sizeof why,
                     "%zu bytes, over max_event_bytes %zu (a CloudEvent "
                     "too large for this bus)",
                     msg->len, bus->max_event_bytes);
        else
            event = evbus_event_from_json_limit(msg->payload, msg->len,
                                                bus->max_event_bytes, why,
                                                sizeof why);
        if (!event) {
            char reason[300];
            snprintf(reason, sizeof reason, "undecodable: %s", why);
            ctx.attempt--; /* no handler ran */
            dead_letter(bus, sub, msg, NULL, reason, &ctx, 0, 0);
            return 0;
        }
    }
    evbus_retry_ctx_t mem;
    if (sub->memo && evbus__memo_take(sub->memo, event, &mem)) {
        /* What this process remembers of a broker-side retry. */
        if (mem.attempt + 1 > ctx.attempt)
            ctx.attempt = mem.attempt + 1;
        if (!ctx.first_ms || (mem.first_ms && mem.first_ms < ctx.first_ms))
            ctx.first_ms = mem.first_ms;
        if (!ctx.prev_delay_ms)
            ctx.prev_delay_ms = mem.prev_delay_ms;
    }
    int before = ctx.attempt - 1;
    char reason[200];
    if (sub->retry.max_attempts > 0 && before >= sub->retry.max_attempts) {
        /* Its attempts were used up in an earlier life of a consumer: the
         * handler (or the process) failed on it every time. */
        snprintf(reason, sizeof reason,
                 "handler already called %d times (max attempts %d); "
                 "earlier consumers failed or crashed on it",
                 before, sub->retry.max_attempts);
        ctx.attempt = before;
        dead_letter(bus, sub, msg, event, reason, &ctx, 0, 0);
        return 0;
    }
    if (before > 0 && sub->retry.max_elapsed_ms > 0 && ctx.first_ms > 0) {
        int64_t elapsed = evbus__wall_ms() - ctx.first_ms;
        if (elapsed > sub->retry.max_elapsed_ms) {
            snprintf(reason, sizeof reason,
                     "retried for %lld ms, over max elapsed %d ms, after %d "
                     "attempts",
                     (long long)elapsed, sub->retry.max_elapsed_ms, before);
            ctx.attempt = before;
            dead_letter(bus, sub, msg, event, reason, &ctx, 0, 0);
            return 0;
        }
    }
    return run_or_queue(bus, sub, msg, event, &ctx);
}

/* ------------------------------------------------------------ rounds */

int evbus__run_due(evbus_t *bus)
{
    int calls = 0;
    uint64_t now = evbus__mono_ms();
    evbus_pending_t *p;
    while ((p = evbus__heap_peek(&bus->heap)) && p->due_ms <= now) {
        if (calls > 0 && atomic_load(&bus->stop))
            break; /* evbus_stop: after the handler that ran */
        evbus__heap_pop(&bus->heap);
        evbus_sub_t *sub = p->sub;
        switch (p->kind) {
        case EVBUS_PENDING_REDELIVER:
            if (atomic_load_explicit(&sub->removed, memory_order_relaxed)) {
                evbus_event_free(p->event);
                evbus__release_msg(bus, sub, &p->msg);
                break;
            }
            p->ctx.attempt++;
            calls += run_or_queue(bus, sub, &p->msg, p->event, &p->ctx);
            break;
        case EVBUS_PENDING_DEADLETTER:
            dead_letter(bus, sub, &p->msg, p->event, p->reason, &p->ctx,
                        p->tries, p->tries_since_ms);
            break;
        case EVBUS_PENDING_SETTLE:
            settle(bus, sub, &p->msg, p->how, p->delay_ms, p->tries);
            break;
        case EVBUS_PENDING_PARKED:
            evbus__release_msg(bus, sub, &p->msg);
            break;
        }
        free(p->reason);
        free(p);
    }
    return calls;
}

/* Asks sub once for a batch and handles it. Returns handler calls made. */
static int fetch_sub(evbus_t *bus, evbus_sub_t *s)
{
    /* Room for a batch of the largest element size any version uses. */
    evbus_msg_t batch[EVBUS_FETCH_BATCH];
    int room = s->max_inflight - s->inflight;
    /* With workers: fetch only while few jobs wait for one (the bulkhead:
     * back-pressure goes to the broker, no queue grows). */
    if (room <= 0 || (s->concurrency > 1 && !wants_fetch(s)))
        return 0;
    if (room > EVBUS_FETCH_BATCH)
        room = EVBUS_FETCH_BATCH;
    size_t stride = bus->msg_stride;
    memset(batch, 0, stride * (size_t)room);
    int n = bus->be->fetch(bus->priv, s->bsub, batch, room);
    uint64_t repeats;
    if (n < 0) {
        if (evbus__lograte_fail(&s->fetch_log, n, &repeats))
            evbus__log(EVBUS_LOG_WARN, "core",
                       repeats ? "fetch from %s still failing: %s (%llu "
                                 "times since the last report)"
                               : "fetch from %s failed: %s",
                       s->topic, evbus_strerror(n),
                       (unsigned long long)repeats);
        return 0;
    }
    if ((repeats = evbus__lograte_ok(&s->fetch_log)) > 0)
        evbus__log(EVBUS_LOG_INFO, "core",
                   "fetch from %s works again after %llu failures", s->topic,
                   (unsigned long long)repeats);
    s->inflight += n;
    int calls = 0;
    for (int i = 0; i < n; i++) {
        evbus_msg_t m;
        memset(&m, 0, sizeof m);
        memcpy(&m, (const char *)batch + (size_t)i * stride, stride);
        if (atomic_load(&bus->stop) ||
            atomic_load_explicit(&s->removed, memory_order_relaxed)) {
            /* Not handed to a handler: back to the broker, uncounted. */
            evbus_event_free(m.event);
            m.event = NULL;
            evbus__release_msg(bus, s, &m);
            continue;
        }
        calls += process(bus, s, &m);
    }
    return calls;
}

int evbus__fetch_round(evbus_t *bus)
{
    int calls = 0;
    pthread_mutex_lock(&bus->mu);
    evbus_sub_t *s = bus->subs;
    pthread_mutex_unlock(&bus->mu);
    /* The list only changes at its head (subscribe) or through reaping,
     * which the role holder does, so walking it unlocked is safe. */
    for (; s && !atomic_load(&bus->stop); s = s->next) {
        if (atomic_load_explicit(&s->removed, memory_order_relaxed))
            continue;
        calls += evbus__workers_round(bus, s);
        calls += fetch_sub(bus, s);
        calls += evbus__workers_round(bus, s); /* start what was fetched */
    }
    return calls;
}
