/* Counters per bus and per subscription, and their Prometheus rendering. */
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"
#include "support/buf.h"

const uint64_t evbus_hist_bounds_us[EVBUS_HIST_BUCKETS - 1] = {
    10, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 50000, 250000};

void evbus__hist_observe(evbus_sub_counters_t *c, uint64_t us)
{
    size_t i = 0;
    while (i < EVBUS_HIST_BUCKETS - 1 && us > evbus_hist_bounds_us[i])
        i++;
    atomic_fetch_add_explicit(&c->handler_us_hist[i], 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&c->handler_us_sum, us, memory_order_relaxed);
}

#define METRICS_MIN_SIZE EVBUS__SIZE_THROUGH(evbus_metrics_t, publish_eagain)
#define SUB_METRICS_MIN_SIZE                                                   \
    EVBUS__SIZE_THROUGH(evbus_sub_metrics_t, handler_us_hist)

void evbus_metrics_init_sized(evbus_metrics_t *out, size_t size)
{
    evbus__struct_init(out, size);
}

void evbus_sub_metrics_init_sized(evbus_sub_metrics_t *out, size_t size)
{
    evbus__struct_init(out, size);
}

int evbus_metrics_get(evbus_t *bus, evbus_metrics_t *out)
{
    if (!bus || !out)
        return EVBUS_EINVAL;
    evbus_metrics_t m;
    evbus_metrics_init(&m);
    m.published = atomic_load(&bus->published);
    m.publish_failed = atomic_load(&bus->publish_failed);
    m.faults_injected = atomic_load(&bus->faults_injected);
    m.publish_eagain = atomic_load(&bus->publish_eagain);
    return evbus__struct_out(out, &m, sizeof m, METRICS_MIN_SIZE);
}

static void sub_metrics(const evbus_sub_t *sub, evbus_sub_metrics_t *m)
{
    const evbus_sub_counters_t *c = &sub->c;
    evbus_sub_metrics_init(m);
    m->delivered = atomic_load(&c->delivered);
    m->acked = atomic_load(&c->acked);
    m->retried = atomic_load(&c->retried);
    m->dead_lettered = atomic_load(&c->dead_lettered);
    m->undecodable = atomic_load(&c->undecodable);
    m->dlq_failed = atomic_load(&c->dlq_failed);
    m->handler_us_sum = atomic_load(&c->handler_us_sum);
    for (size_t i = 0; i < EVBUS_HIST_BUCKETS; i++)
        m->handler_us_hist[i] = atomic_load(&c->handler_us_hist[i]);
}

int evbus_sub_metrics_get(evbus_sub_t *sub, evbus_sub_metrics_t *out)
{
    if (!sub || !out)
        return EVBUS_EINVAL;
    evbus_sub_metrics_t m;
    sub_metrics(sub, &m);
    return evbus__struct_out(out, &m, sizeof m, SUB_METRICS_MIN_SIZE);
}

/* Label values: escape backslash, quote and newline. */
static void label(char *dst, size_t n, const char *src)
{
    size_t o = 0;
    for (; *src && o + 3 < n; src++) {
        if (*src == '\\' || *src == '"') {
            dst[o++] = '\\';
            dst[o++] = *src;
        } else if (*src == '\n') {
            dst[o++] = '\\';
            dst[o++] = 'n';
        } else {
            dst[o++] = *src;
        }
    }
    dst[o] = '\0';
}

/* A subscription's counters and its topic and group as label values. */
typedef struct {
    evbus_sub_metrics_t m;
    char t[512], g[512];
} sub_view_t;

static void sub_view(const evbus_sub_t *s, sub_view_t *v)
{
    sub_metrics(s, &v->m);
    label(v->t, sizeof v->t, s->topic);
    label(v->g, sizeof v->g, s->group);
}

char *evbus_metrics_prometheus(evbus_t *bus)
{
    if (!bus)
        return NULL;
    evbus__buf_t b = {0};
    evbus_metrics_t m;
    evbus_metrics_init(&m);
    evbus_metrics_get(bus, &m);
    evbus__buf_printf(&b,
              "# HELP evbus_published_total Publishes the broker accepted.\n"
              "# TYPE evbus_published_total counter\n"
              "evbus_published_total{backend=\"%s\"} %llu\n"
              "# HELP evbus_publish_failed_total Publishes that failed.\n"
              "# TYPE evbus_publish_failed_total counter\n"
              "evbus_publish_failed_total{backend=\"%s\"} %llu\n"
              "# HELP evbus_publish_eagain_total Asynchronous publishes "
              "refused with EAGAIN (back-pressure).\n"
              "# TYPE evbus_publish_eagain_total counter\n"
              "evbus_publish_eagain_total{backend=\"%s\"} %llu\n",
              bus->scheme, (unsigned long long)m.published, bus->scheme,
              (unsigned long long)m.publish_failed, bus->scheme,
              (unsigned long long)m.publish_eagain);
    static const struct {
        const char *name, *help;
        size_t off;
    } counters[] = {
        {"delivered", "Handler invocations.",
         offsetof(evbus_sub_metrics_t, delivered)},
        {"acked", "Events the handler acknowledged.",
         offsetof(evbus_sub_metrics_t, acked)},
        {"retried", "RETRY answers scheduled for redelivery.",
         offsetof(evbus_sub_metrics_t, retried)},
        {"dead_lettered", "Events written to the dead-letter topic.",
         offsetof(evbus_sub_metrics_t, dead_lettered)},
        {"undecodable", "Payloads that were not CloudEvents.",
         offsetof(evbus_sub_metrics_t, undecodable)},
        {"dlq_failed", "Dead-letter writes that failed for good (the event "
                       "was parked).",
         offsetof(evbus_sub_metrics_t, dlq_failed)},
    };
    pthread_mutex_lock(&bus->mu);
    for (size_t k = 0; k < sizeof counters / sizeof counters[0]; k++) {
        evbus__buf_printf(&b, "# HELP evbus_%s_total %s\n# TYPE evbus_%s_total counter\n",
                  counters[k].name, counters[k].help, counters[k].name);
        for (evbus_sub_t *s = bus->subs; s; s = s->next) {
            sub_view_t sv;
            sub_view(s, &sv);
            uint64_t v =
                *(const uint64_t *)((const char *)&sv.m + counters[k].off);
            evbus__buf_printf(&b, "evbus_%s_total{topic=\"%s\",group=\"%s\"} %llu\n",
                      counters[k].name, sv.t, sv.g, (unsigned long long)v);
        }
    }
    evbus__buf_printf(&b, "# HELP evbus_handler_seconds Handler run time.\n"
                  "# TYPE evbus_handler_seconds histogram\n");
    for (evbus_sub_t *s = bus->subs; s; s = s->next) {
        sub_view_t sv;
        sub_view(s, &sv);
        const evbus_sub_metrics_t *sm = &sv.m;
        const char *t = sv.t, *g = sv.g;
        uint64_t cum = 0;
        for (size_t i = 0; i < EVBUS_HIST_BUCKETS; i++) {
            cum += sm->handler_us_hist[i];
            if (i < EVBUS_HIST_BUCKETS - 1)
                evbus__buf_printf(&b,
                          "evbus_handler_seconds_bucket{topic=\"%s\",group=\"%s\","
                          "le=\"%g\"} %llu\n",
                          t, g, (double)evbus_hist_bounds_us[i] / 1e6,
                          (unsigned long long)cum);
            else
                evbus__buf_printf(&b,
                          "evbus_handler_seconds_bucket{topic=\"%s\",group=\"%s\","
                          "le=\"+Inf\"} %llu\n",
                          t, g, (unsigned long long)cum);
        }
        evbus__buf_printf(&b, "evbus_handler_seconds_sum{topic=\"%s\",group=\"%s\"} %g\n"
                      "evbus_handler_seconds_count{topic=\"%s\",group=\"%s\"} %llu\n",
                  t, g, (double)sm->handler_us_sum / 1e6, t, g,
                  (unsigned long long)cum);
    }
    pthread_mutex_unlock(&bus->mu);
    return evbus__buf_take(&b, NULL);
}
