#include "harness.h"

#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

const char *conf_url;
unsigned conf_features;

static size_t hash(const char *s)
{
    size_t h = 1469598103934665603u;
    while (*s)
        h = (h ^ (unsigned char)*s++) * 1099511628211u;
    return h;
}

static int strset_grow(strset_t *s)
{
    size_t cap = s->cap ? s->cap * 2 : 1024;
    char **slots = calloc(cap, sizeof *slots);
    if (!slots)
        return -1;
    for (size_t i = 0; i < s->cap; i++)
        if (s->slots[i]) {
            size_t j = hash(s->slots[i]) & (cap - 1);
            while (slots[j])
                j = (j + 1) & (cap - 1);
            slots[j] = s->slots[i];
        }
    free(s->slots);
    s->slots = slots;
    s->cap = cap;
    return 0;
}

int strset_has(const strset_t *s, const char *str)
{
    if (!s->cap)
        return 0;
    for (size_t j = hash(str) & (s->cap - 1); s->slots[j];
         j = (j + 1) & (s->cap - 1))
        if (strcmp(s->slots[j], str) == 0)
            return 1;
    return 0;
}

int strset_add(strset_t *s, const char *str)
{
    if (strset_has(s, str))
        return 0;
    if ((s->len + 1) * 2 > s->cap && strset_grow(s) != 0)
        abort();
    size_t j = hash(str) & (s->cap - 1);
    while (s->slots[j])
        j = (j + 1) & (s->cap - 1);
    s->slots[j] = strdup(str);
    s->len++;
    return 1;
}

void strset_free(strset_t *s)
{
    for (size_t i = 0; i < s->cap; i++)
        free(s->slots[i]);
    free(s->slots);
    memset(s, 0, sizeof *s);
}

void collector_init(collector_t *c, collect_mode_t mode)
{
    memset(c, 0, sizeof *c);
    pthread_mutex_init(&c->mu, NULL);
    c->mode = mode;
}

void collector_free(collector_t *c)
{
    strset_free(&c->ids);
    strset_free(&c->seen);
    evbus_event_free(c->last);
    pthread_mutex_destroy(&c->mu);
}

static void check_order(collector_t *c, const evbus_event_t *ev)
{
    const char *key = evbus_event_ext(ev, "partitionkey");
    const char *seq = evbus_event_ext(ev, "seq");
    if (!key || !seq)
        return;
    long s = atol(seq);
    for (int i = 0; i < c->nkeys; i++)
        if (strcmp(c->keys[i], key) == 0) {
            if (s <= c->last_seq[i])
                c->order_violations++;
            c->last_seq[i] = s;
            return;
        }
    if (c->nkeys < 64) {
        snprintf(c->keys[c->nkeys], sizeof c->keys[0], "%s", key);
        c->last_seq[c->nkeys++] = s;
    }
}

evbus_result_t collector_handler(const evbus_event_t *ev, void *opaque)
{
    collector_t *c = opaque;
    int attempt = evbus_delivery_attempt();
    if (c->mode == COLLECT_SLEEP_ACK)
        usleep((useconds_t)c->sleep_ms * 1000);
    pthread_mutex_lock(&c->mu);
    c->calls++;
    c->distinct += strset_add(&c->seen, evbus_event_id(ev));
    if (attempt > c->max_attempt)
        c->max_attempt = attempt;
    evbus_event_free(c->last);
    c->last = evbus_event_clone(ev);
    evbus_result_t r = EVBUS_ACK;
    if (c->mode == COLLECT_DROP)
        r = EVBUS_DROP;
    else if (c->mode == COLLECT_RETRY_N && attempt <= c->retry_n)
        r = EVBUS_RETRY;
    if (r == EVBUS_ACK) {
        c->acked++;
        if (!strset_add(&c->ids, evbus_event_id(ev)))
            c->duplicates++;
        check_order(c, ev);
    }
    if (c->mode == COLLECT_SLEEP_ACK)
        c->handler_done = 1;
    pthread_mutex_unlock(&c->mu);
    return r;
}

int collector_acked(collector_t *c)
{
    pthread_mutex_lock(&c->mu);
    int n = c->acked;
    pthread_mutex_unlock(&c->mu);
    return n;
}

int collector_distinct(collector_t *c)
{
    pthread_mutex_lock(&c->mu);
    int n = c->distinct;
    pthread_mutex_unlock(&c->mu);
    return n;
}

int collector_calls(collector_t *c)
{
    pthread_mutex_lock(&c->mu);
    int n = c->calls;
    pthread_mutex_unlock(&c->mu);
    return n;
}

evbus_t *open_bus(void)
{
    char err[512] = "";
    evbus_t *bus = evbus_open(conf_url, err, sizeof err);
    ck_assert_msg(bus != NULL, "evbus_open(%s): %s", conf_url, err);
    return bus;
}

void unique_topic(char *buf, size_t n, const char *name)
{
    static unsigned counter;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    snprintf(buf, n, "conf.%s.%ld%06ld.%d.%u", name, (long)ts.tv_sec,
             ts.tv_nsec / 1000, (int)getpid(), counter++);
}

uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

int poll_until(evbus_t **buses, collector_t *c, int (*value)(collector_t *),
               int want, int timeout_ms)
{
    uint64_t end = now_ms() + (uint64_t)timeout_ms;
    int v;
    while ((v = value(c)) < want && now_ms() < end)
        for (evbus_t **b = buses; *b; b++) {
            int rc = evbus_poll(*b, buses[1] ? 5 : 50);
            ck_assert_msg(rc >= 0, "evbus_poll: %s", evbus_strerror(rc));
        }
    return v;
}

void poll_for(evbus_t **buses, int ms)
{
    uint64_t end = now_ms() + (uint64_t)ms;
    while (now_ms() < end)
        for (evbus_t **b = buses; *b; b++)
            evbus_poll(*b, 10);
}

evbus_event_t *make_event(int seq)
{
    evbus_event_t *ev = evbus_event_new("conf.test.event", "/conformance");
    ck_assert_ptr_nonnull(ev);
    char buf[64];
    snprintf(buf, sizeof buf, "%d", seq);
    ck_assert_int_eq(evbus_event_set_ext(ev, "seq", buf), EVBUS_OK);
    snprintf(buf, sizeof buf, "{\"seq\":%d}", seq);
    ck_assert_int_eq(evbus_event_set_data_json(ev, buf), EVBUS_OK);
    return ev;
}

void publish_events(evbus_t *bus, const char *topic, int from, int to,
                    publish_mode_t mode)
{
    for (int i = from; i < to; i++) {
        evbus_event_t *ev = make_event(i);
        int rc = mode == PUBLISH_SYNC
                     ? evbus_publish(bus, topic, ev)
                     : evbus_publish_async(bus, topic, ev, NULL, NULL);
        ck_assert_msg(rc == EVBUS_OK, "publish %d to %s: %s", i, topic,
                      evbus_strerror(rc));
        evbus_event_free(ev);
    }
}

void fast_retry_opts(evbus_sub_opts_t *o, evbus_retry_policy_t *retry,
                     int max_attempts)
{
    evbus_sub_opts_init(o);
    evbus_retry_policy_init(retry);
    retry->initial_ms = 10;
    retry->max_ms = 50;
    retry->jitter = EVBUS_JITTER_NONE;
    retry->max_attempts = max_attempts;
    o->retry = retry;
}

const char *conf_url_with(const char *param)
{
    static char buf[2048];
    snprintf(buf, sizeof buf, "%s%c%s", conf_url,
             strchr(conf_url, '?') ? '&' : '?', param);
    return buf;
}
