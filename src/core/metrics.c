/* Counters per bus and per subscription, and their Prometheus rendering. */
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

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

void evbus_metrics_get(evbus_t *bus, evbus_metrics_t *out)
{
    if (!bus || !out)
        return;
    out->published = atomic_load(&bus->published);
    out->publish_failed = atomic_load(&bus->publish_failed);
    out->faults_injected = atomic_load(&bus->faults_injected);
}

void evbus_sub_metrics_get(evbus_sub_t *sub, evbus_sub_metrics_t *out)
{
    if (!sub || !out)
        return;
    const evbus_sub_counters_t *c = &sub->c;
    out->delivered = atomic_load(&c->delivered);
    out->acked = atomic_load(&c->acked);
    out->retried = atomic_load(&c->retried);
    out->dead_lettered = atomic_load(&c->dead_lettered);
    out->undecodable = atomic_load(&c->undecodable);
    out->handler_us_sum = atomic_load(&c->handler_us_sum);
    for (size_t i = 0; i < EVBUS_HIST_BUCKETS; i++)
        out->handler_us_hist[i] = atomic_load(&c->handler_us_hist[i]);
}

/* A growing string buffer; on allocation failure it stays failed. */
typedef struct {
    char *s;
    size_t len, cap;
    bool failed;
} sbuf_t;

__attribute__((format(printf, 2, 3))) static void
sb_printf(sbuf_t *b, const char *fmt, ...)
{
    if (b->failed)
        return;
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        int n = vsnprintf(b->s + b->len, b->cap - b->len, fmt, ap);
        va_end(ap);
        if (n < 0) {
            b->failed = true;
            return;
        }
        if ((size_t)n < b->cap - b->len) {
            b->len += (size_t)n;
            return;
        }
        size_t cap = (b->cap + (size_t)n + 1) * 2;
        char *s = realloc(b->s, cap);
        if (!s) {
            b->failed = true;
            return;
        }
        b->s = s;
        b->cap = cap;
    }
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

char *evbus_metrics_prometheus(evbus_t *bus)
{
    if (!bus)
        return NULL;
    sbuf_t b = {malloc(4096), 0, 4096, false};
    if (!b.s)
        return NULL;
    b.s[0] = '\0';
    evbus_metrics_t m;
    evbus_metrics_get(bus, &m);
    sb_printf(&b,
              "# HELP evbus_published_total Publishes the broker accepted.\n"
              "# TYPE evbus_published_total counter\n"
              "evbus_published_total{backend=\"%s\"} %llu\n"
              "# HELP evbus_publish_failed_total Publishes that failed.\n"
              "# TYPE evbus_publish_failed_total counter\n"
              "evbus_publish_failed_total{backend=\"%s\"} %llu\n",
              bus->scheme, (unsigned long long)m.published, bus->scheme,
              (unsigned long long)m.publish_failed);
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
    };
    pthread_mutex_lock(&bus->mu);
    for (size_t k = 0; k < sizeof counters / sizeof counters[0]; k++) {
        sb_printf(&b, "# HELP evbus_%s_total %s\n# TYPE evbus_%s_total counter\n",
                  counters[k].name, counters[k].help, counters[k].name);
        for (evbus_sub_t *s = bus->subs; s; s = s->next) {
            evbus_sub_metrics_t sm;
            evbus_sub_metrics_get(s, &sm);
            char t[512], g[512];
            label(t, sizeof t, s->topic);
            label(g, sizeof g, s->group);
            uint64_t v = *(const uint64_t *)((const char *)&sm + counters[k].off);
            sb_printf(&b, "evbus_%s_total{topic=\"%s\",group=\"%s\"} %llu\n",
                      counters[k].name, t, g, (unsigned long long)v);
        }
    }
    sb_printf(&b, "# HELP evbus_handler_seconds Handler run time.\n"
                  "# TYPE evbus_handler_seconds histogram\n");
    for (evbus_sub_t *s = bus->subs; s; s = s->next) {
        evbus_sub_metrics_t sm;
        evbus_sub_metrics_get(s, &sm);
        char t[512], g[512];
        label(t, sizeof t, s->topic);
        label(g, sizeof g, s->group);
        uint64_t cum = 0;
        for (size_t i = 0; i < EVBUS_HIST_BUCKETS; i++) {
            cum += sm.handler_us_hist[i];
            if (i < EVBUS_HIST_BUCKETS - 1)
                sb_printf(&b,
                          "evbus_handler_seconds_bucket{topic=\"%s\",group=\"%s\","
                          "le=\"%g\"} %llu\n",
                          t, g, (double)evbus_hist_bounds_us[i] / 1e6,
                          (unsigned long long)cum);
            else
                sb_printf(&b,
                          "evbus_handler_seconds_bucket{topic=\"%s\",group=\"%s\","
                          "le=\"+Inf\"} %llu\n",
                          t, g, (unsigned long long)cum);
        }
        sb_printf(&b, "evbus_handler_seconds_sum{topic=\"%s\",group=\"%s\"} %g\n"
                      "evbus_handler_seconds_count{topic=\"%s\",group=\"%s\"} %llu\n",
                  t, g, (double)sm.handler_us_sum / 1e6, t, g,
                  (unsigned long long)cum);
    }
    pthread_mutex_unlock(&bus->mu);
    if (b.failed) {
        free(b.s);
        return NULL;
    }
    return b.s;
}
