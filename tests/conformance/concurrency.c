/*
 * Conformance cases for subscriptions with concurrency > 1 (worker
 * threads): nothing lost, per-key order and exclusion kept, ACK / RETRY /
 * DROP as with one thread, evbus_stop waits for running handlers only.
 * Verdicts from counts; timeouts only guard against hangs.
 */
#include <check.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "harness.h"

#define HANG_MS 180000
enum { KEYS = 20, PER_KEY = 50, WORKERS = 8 };

typedef struct {
    pthread_mutex_t mu;
    evbus_t *bus;
    int stop_after;          /* evbus_stop at this call (0: never) */
    int calls, acked, dropped, retried_once;
    long last[KEYS];         /* last seq handled per key */
    bool running[KEYS];      /* a handler of this key runs now */
    int order_violations, overlap_violations;
    int now_running, max_running;
    bool retried[KEYS * PER_KEY];
    strset_t ids;
    int duplicates;
} par_t;

static void par_init(par_t *p, evbus_t *bus)
{
    memset(p, 0, sizeof *p);
    pthread_mutex_init(&p->mu, NULL);
    p->bus = bus;
    for (int i = 0; i < KEYS; i++)
        p->last[i] = -1;
}

static int par_key(const evbus_event_t *ev)
{
    const char *k = evbus_event_ext(ev, "partitionkey");
    return k ? atoi(k + 1) : -1; /* "k7" */
}

/* Seq s of key k: ACK, except s % 10 == 3 (RETRY once, then ACK) and
 * s % 10 == 7 (DROP) in the semantics case. */
static evbus_result_t par_handler(const evbus_event_t *ev, void *opaque,
                                  bool mixed)
{
    par_t *p = opaque;
    int k = par_key(ev);
    long s = atol(evbus_event_ext(ev, "seq"));
    pthread_mutex_lock(&p->mu);
    p->calls++;
    if (p->stop_after && p->calls == p->stop_after)
        evbus_stop(p->bus);
    if (k >= 0) {
        if (p->running[k])
            p->overlap_violations++;
        p->running[k] = true;
    }
    if (++p->now_running > p->max_running)
        p->max_running = p->now_running;
    pthread_mutex_unlock(&p->mu);
    usleep(500); /* a handler that waits on I/O */
    evbus_result_t r = EVBUS_ACK;
    pthread_mutex_lock(&p->mu);
    p->now_running--;
    if (k >= 0)
        p->running[k] = false;
    long idx = (long)(k >= 0 ? k : 0) * PER_KEY + (s % PER_KEY);
    if (mixed && s % 10 == 7) {
        r = EVBUS_DROP;
        p->dropped++;
    } else if (mixed && s % 10 == 3 && !p->retried[idx]) {
        p->retried[idx] = true;
        p->retried_once++;
        r = EVBUS_RETRY;
    } else {
        if (k >= 0 && !mixed) {
            if (s <= p->last[k])
                p->order_violations++;
            p->last[k] = s;
        }
        p->acked++;
        if (!strset_add(&p->ids, evbus_event_id(ev)))
            p->duplicates++;
    }
    pthread_mutex_unlock(&p->mu);
    return r;
}

static evbus_result_t plain(const evbus_event_t *ev, void *o)
{
    return par_handler(ev, o, false);
}

static evbus_result_t mixed(const evbus_event_t *ev, void *o)
{
    return par_handler(ev, o, true);
}

static int par_get(par_t *p, const int *field)
{
    pthread_mutex_lock(&p->mu);
    int v = *field;
    pthread_mutex_unlock(&p->mu);
    return v;
}

static void publish_keyed(evbus_t *bus, const char *topic)
{
    for (int s = 0; s < PER_KEY; s++)
        for (int k = 0; k < KEYS; k++) {
            evbus_event_t *ev = make_event(s);
            char key[16];
            snprintf(key, sizeof key, "k%d", k);
            ck_assert_int_eq(evbus_event_set_ext(ev, "partitionkey", key),
                             EVBUS_OK);
            ck_assert_int_eq(evbus_publish_async(bus, topic, ev, NULL, NULL),
                             EVBUS_OK);
            evbus_event_free(ev);
        }
    ck_assert_int_eq(evbus_flush(bus, HANG_MS), EVBUS_OK);
}

static evbus_sub_t *subscribe_par(evbus_t *bus, const char *topic,
                                  evbus_handler_fn fn, par_t *p)
{
    evbus_sub_opts_t o;
    evbus_retry_policy_t retry;
    fast_retry_opts(&o, &retry, 5);
    o.concurrency = WORKERS;
    char why[512];
    evbus_sub_t *sub =
        evbus_subscribe_opts(bus, topic, "par", &o, fn, p, why, sizeof why);
    ck_assert_msg(sub != NULL, "%s", why);
    return sub;
}

/* Polls until *field reaches want; HANG_MS of wall time is a hang guard
 * (a count of polls is not: a poll may return at once, or take long). */
static void poll_until_field(evbus_t *bus, par_t *p, const int *field,
                             int want)
{
    uint64_t guard = now_ms() + HANG_MS;
    while (par_get(p, field) < want && now_ms() < guard) {
        int rc = evbus_poll(bus, 20);
        ck_assert_msg(rc >= 0, "evbus_poll: %s", evbus_strerror(rc));
    }
}

/* The subscription's metrics are counted after the handler returns (the
 * settle follows it): poll until metric reaches want, as above. */
static void poll_until_metric(evbus_t *bus, evbus_sub_t *sub,
                              const uint64_t *metric, evbus_sub_metrics_t *m,
                              uint64_t want)
{
    uint64_t guard = now_ms() + HANG_MS;
    for (;;) {
        evbus_sub_metrics_init(m);
        evbus_sub_metrics_get(sub, m);
        if (*metric >= want || now_ms() >= guard)
            return;
        int rc = evbus_poll(bus, 20);
        ck_assert_msg(rc >= 0, "evbus_poll: %s", evbus_strerror(rc));
    }
}

/* Events of one key never run at once and keep their order; all arrive
 * once; handlers of different keys do run at once. */
START_TEST(workers_keep_per_key_order)
{
    char topic[128];
    unique_topic(topic, sizeof topic, "parorder");
    evbus_t *bus = open_bus();
    par_t p;
    par_init(&p, bus);
    subscribe_par(bus, topic, plain, &p);
    publish_keyed(bus, topic);
    poll_until_field(bus, &p, &p.acked, KEYS * PER_KEY);
    pthread_mutex_lock(&p.mu);
    ck_assert_int_eq(p.acked, KEYS * PER_KEY);
    ck_assert_int_eq(p.duplicates, 0);
    ck_assert_int_eq(p.order_violations, 0);
    ck_assert_int_eq(p.overlap_violations, 0);
    ck_assert_msg(p.max_running >= 2, "never more than %d at once",
                  p.max_running);
    ck_assert_int_le(p.max_running, WORKERS);
    pthread_mutex_unlock(&p.mu);
    evbus_close(bus);
    strset_free(&p.ids);
}
END_TEST

/* ACK, RETRY and DROP mean with workers what they mean without. */
START_TEST(workers_keep_ack_retry_drop)
{
    char topic[128], dlq[160];
    unique_topic(topic, sizeof topic, "parmixed");
    snprintf(dlq, sizeof dlq, "%s.dlq", topic);
    evbus_t *bus = open_bus();
    par_t p;
    par_init(&p, bus);
    evbus_sub_t *sub = subscribe_par(bus, topic, mixed, &p);
    collector_t d;
    collector_init(&d, COLLECT_ACK);
    ck_assert_ptr_nonnull(evbus_subscribe(bus, dlq, "ops", collector_handler,
                                          &d));
    publish_keyed(bus, topic);
    int drops = KEYS * (PER_KEY / 10), acks = KEYS * PER_KEY - drops;
    poll_until_field(bus, &p, &p.acked, acks);
    evbus_t *buses[] = {bus, NULL};
    ck_assert_int_eq(poll_until(buses, &d, collector_acked, drops, HANG_MS),
                     drops);
    pthread_mutex_lock(&p.mu);
    ck_assert_int_eq(p.acked, acks);
    ck_assert_int_eq(p.dropped, drops);
    ck_assert_int_eq(p.retried_once, KEYS * (PER_KEY / 10));
    ck_assert_int_eq(p.duplicates, 0);
    ck_assert_int_eq(p.overlap_violations, 0);
    pthread_mutex_unlock(&p.mu);
    evbus_sub_metrics_t m;
    poll_until_metric(bus, sub, &m.acked, &m, (uint64_t)acks);
    ck_assert_uint_eq(m.acked, (uint64_t)acks);
    ck_assert_uint_eq(m.retried, (uint64_t)KEYS * (PER_KEY / 10));
    ck_assert_uint_eq(m.dead_lettered, (uint64_t)drops);
    evbus_close(bus);
    collector_free(&d);
    strset_free(&p.ids);
}
END_TEST

/* evbus_stop: the running handlers finish, nothing new starts, events
 * waiting for a worker go back; none is lost. */
START_TEST(stop_waits_for_workers_only)
{
    char topic[128];
    unique_topic(topic, sizeof topic, "parstop");
    evbus_t *bus = open_bus();
    par_t p;
    par_init(&p, bus);
    p.stop_after = 1;
    subscribe_par(bus, topic, plain, &p);
    publish_keyed(bus, topic);
    ck_assert_int_eq(evbus_run(bus), EVBUS_OK);
    int at_stop = par_get(&p, &p.calls);
    ck_assert_msg(at_stop <= 2 * WORKERS,
                  "%d handler calls after evbus_stop at the first (%d "
                  "workers)", at_stop, WORKERS);
    ck_assert_int_eq(par_get(&p, &p.now_running), 0);
    p.stop_after = 0;
    poll_until_field(bus, &p, &p.acked, KEYS * PER_KEY);
    ck_assert_int_eq(par_get(&p, &p.acked), KEYS * PER_KEY);
    ck_assert_int_eq(par_get(&p, &p.duplicates), 0);
    evbus_close(bus);
    strset_free(&p.ids);
}
END_TEST

/* A long backlog of one key does not hold back the other keys: while the
 * first "hot" event's handler runs, its later events can only wait, so the
 * core fetches past them (up to max_inflight) for keys that can run. */
enum { HOT = 100, COLD = 10 };

typedef struct {
    pthread_mutex_t mu;
    int acked, cold_ran;
    bool hot0_saw_cold;
} hot_t;

static evbus_result_t hot_handler(const evbus_event_t *ev, void *opaque)
{
    hot_t *h = opaque;
    const char *key = evbus_event_ext(ev, "partitionkey");
    bool hot = key && strcmp(key, "hot") == 0;
    pthread_mutex_lock(&h->mu);
    if (hot && atol(evbus_event_ext(ev, "seq")) == 0) {
        /* Wait for a cold key to run; the guard only stops a hang. */
        uint64_t guard = now_ms() + HANG_MS / 6;
        while (h->cold_ran == 0 && now_ms() < guard) {
            pthread_mutex_unlock(&h->mu);
            usleep(1000);
            pthread_mutex_lock(&h->mu);
        }
        h->hot0_saw_cold = h->cold_ran > 0;
    } else if (!hot) {
        h->cold_ran++;
    }
    h->acked++;
    pthread_mutex_unlock(&h->mu);
    return EVBUS_ACK;
}

static void publish_with_key(evbus_t *bus, const char *topic,
                             const char *key, int seq)
{
    evbus_event_t *ev = make_event(seq);
    ck_assert_int_eq(evbus_event_set_ext(ev, "partitionkey", key), EVBUS_OK);
    ck_assert_int_eq(evbus_publish_async(bus, topic, ev, NULL, NULL),
                     EVBUS_OK);
    evbus_event_free(ev);
}

START_TEST(hot_key_backlog_lets_others_run)
{
    char topic[128];
    unique_topic(topic, sizeof topic, "parhot");
    evbus_t *bus = open_bus();
    hot_t h;
    memset(&h, 0, sizeof h);
    pthread_mutex_init(&h.mu, NULL);
    evbus_sub_opts_t o;
    evbus_retry_policy_t retry;
    fast_retry_opts(&o, &retry, 5);
    o.concurrency = WORKERS;
    char why[512];
    ck_assert_msg(evbus_subscribe_opts(bus, topic, "par", &o, hot_handler, &h,
                                       why, sizeof why) != NULL,
                  "%s", why);
    for (int s = 0; s < HOT; s++)
        publish_with_key(bus, topic, "hot", s);
    for (int s = 0; s < COLD; s++) {
        char key[16];
        snprintf(key, sizeof key, "c%d", s);
        publish_with_key(bus, topic, key, s);
    }
    ck_assert_int_eq(evbus_flush(bus, HANG_MS), EVBUS_OK);
    uint64_t guard = now_ms() + HANG_MS;
    for (;;) {
        pthread_mutex_lock(&h.mu);
        int acked = h.acked;
        pthread_mutex_unlock(&h.mu);
        if (acked >= HOT + COLD || now_ms() >= guard)
            break;
        int rc = evbus_poll(bus, 20);
        ck_assert_msg(rc >= 0, "evbus_poll: %s", evbus_strerror(rc));
    }
    pthread_mutex_lock(&h.mu);
    ck_assert_int_eq(h.acked, HOT + COLD);
    ck_assert_msg(h.hot0_saw_cold,
                  "no other key ran while the first of %d events of one key "
                  "ran", HOT);
    pthread_mutex_unlock(&h.mu);
    evbus_close(bus);
    pthread_mutex_destroy(&h.mu);
}
END_TEST

size_t concurrency_cases(conf_case_t *out, size_t max)
{
    const conf_case_t cases[] = {
        {"workers_keep_per_key_order", workers_keep_per_key_order, 0,
         EVBUS_FEAT_ORDERED | EVBUS_FEAT_ORDERED_BY_KEY,
         "backend promises no order", 0},
        {"workers_keep_ack_retry_drop", workers_keep_ack_retry_drop, 0, 0,
         NULL, 0},
        {"stop_waits_for_workers_only", stop_waits_for_workers_only, 0, 0,
         NULL, 0},
        {"hot_key_backlog_lets_others_run", hot_key_backlog_lets_others_run,
         0, EVBUS_FEAT_ORDERED | EVBUS_FEAT_ORDERED_BY_KEY,
         "backend promises no order", 0},
    };
    size_t n = sizeof cases / sizeof cases[0];
    for (size_t i = 0; i < n && i < max; i++)
        out[i] = cases[i];
    return n < max ? n : max;
}
