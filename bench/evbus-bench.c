/*
 * evbus-bench: throughput and latency of one bus URL.
 *
 *   evbus-bench --url URL [--events N] [--size BYTES] [--mode MODE]
 *               [--window W] [--topic T] [--fresh-events] [--progress]
 *
 * Modes:
 *   publish       publish_async all N, then flush (latency: the call,
 *                 sampled every 8th call - the raw baselines time nothing
 *                 per call, and two clock reads per event would show)
 *   publish-sync  evbus_publish one at a time (latency: the call)
 *   consume       N events already on a fresh topic (published untimed),
 *                 read and ACKed by a fresh group (latency: gap between
 *                 handler calls)
 *   roundtrip     one thread publishes while this one consumes; at most
 *                 --window events in flight (default 4096) so memory stays
 *                 flat (latency: publish to handler). --rate R paces the
 *                 publisher at R events/s, for latency at a given load.
 *
 * Prints one JSON line: mode, url, events, size, seconds, events_per_s,
 * p50_us, p99_us, max_us, max_rss_kb. Data are size bytes of text/plain.
 * By default one event object is reused (its benchts extension changes per
 * publish) so the figure measures the bus, not event construction;
 * --fresh-events creates a new event (new UUID) per publish.
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include <evbus/evbus.h>

static uint64_t now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

/* ---- a log-linear latency histogram: fixed memory whatever N is */
#define SUB 64
#define POW 40
typedef struct {
    uint64_t counts[POW][SUB];
    uint64_t total, max;
} hist_t;

static void hist_add(hist_t *h, uint64_t us)
{
    int p = 0;
    uint64_t v = us;
    while (v >= SUB) {
        v >>= 1;
        p++;
    }
    if (p >= POW)
        p = POW - 1;
    h->counts[p][v % SUB]++;
    h->total++;
    if (us > h->max)
        h->max = us;
}

static uint64_t hist_pct(const hist_t *h, double pct)
{
    uint64_t want = (uint64_t)(pct / 100.0 * (double)h->total + 0.5), seen = 0;
    if (want == 0)
        want = 1;
    for (int p = 0; p < POW; p++)
        for (int s = 0; s < SUB; s++) {
            seen += h->counts[p][s];
            if (seen >= want)
                return (uint64_t)s << p;
        }
    return h->max;
}

/* ---- options */
static struct {
    const char *url, *mode, *topic;
    long events, size, window, rate;
    int fresh, progress;
} opt = {NULL, "roundtrip", NULL, 100000, 256, 4096, 0, 0, 0};

static char *payload;

static evbus_event_t *new_event(void)
{
    evbus_event_t *ev = evbus_event_new("bench.event.sent", "/evbus/bench");
    if (!ev || evbus_event_set_data(ev, payload, (size_t)opt.size,
                                    "text/plain") != EVBUS_OK) {
        fprintf(stderr, "evbus-bench: cannot build event\n");
        exit(1);
    }
    return ev;
}

static void stamp(evbus_event_t *ev)
{
    char ts[24];
    snprintf(ts, sizeof ts, "%" PRIu64, now_us());
    evbus_event_set_ext(ev, "benchts", ts);
}

static void die(const char *what, int rc)
{
    fprintf(stderr, "evbus-bench: %s: %s\n", what, evbus_strerror(rc));
    exit(1);
}

static void die_msg(const char *what, const char *why)
{
    fprintf(stderr, "evbus-bench: %s: %s\n", what, why);
    exit(1);
}

static void progress(long done)
{
    if (opt.progress && (done % 10000 == 0 || done == opt.events)) {
        fprintf(stderr, "\r%s: %ld/%ld events", opt.mode, done, opt.events);
        if (done == opt.events)
            fputc('\n', stderr);
    }
}

/* ---- consuming */
typedef struct {
    hist_t *h;
    atomic_long consumed;
    uint64_t last_us;
    int latency_from_stamp;
} consumer_t;

static evbus_result_t on_event(const evbus_event_t *ev, void *opaque)
{
    consumer_t *c = opaque;
    uint64_t t = now_us();
    if (c->latency_from_stamp) {
        const char *ts = evbus_event_ext(ev, "benchts");
        if (ts)
            hist_add(c->h, t - strtoull(ts, NULL, 10));
    } else {
        if (c->last_us)
            hist_add(c->h, t - c->last_us);
        c->last_us = t;
    }
    long n = atomic_fetch_add_explicit(&c->consumed, 1, memory_order_relaxed);
    progress(n + 1);
    return EVBUS_ACK;
}

static void consume_all(evbus_t *bus, consumer_t *c, long n)
{
    while (atomic_load(&c->consumed) < n) {
        int rc = evbus_poll(bus, 100);
        if (rc < 0)
            die("poll", rc);
    }
}

/* ---- publishing */
static void publish_n(evbus_t *bus, const char *topic, long n, int sync,
                      hist_t *h, atomic_long *consumed)
{
    evbus_event_t *ev = opt.fresh ? NULL : new_event();
    uint64_t start = now_us();
    for (long i = 0; i < n; i++) {
        if (opt.rate > 0) { /* publish i at start + i/rate, not earlier */
            uint64_t due = start + (uint64_t)i * 1000000u / (uint64_t)opt.rate;
            uint64_t t = now_us();
            if (due > t)
                usleep((useconds_t)(due - t));
        }
        if (opt.fresh)
            ev = new_event();
        if (consumed) /* roundtrip: keep the window */
            while (i - atomic_load_explicit(consumed, memory_order_relaxed) >=
                   opt.window)
                sched_yield();
        if (consumed) /* roundtrip measures publish-to-handler from this */
            stamp(ev);
        bool timed = h && (sync || (i & 7) == 0);
        uint64_t t0 = timed ? now_us() : 0;
        int rc = sync ? evbus_publish(bus, topic, ev)
                      : evbus_publish_async(bus, topic, ev, NULL, NULL);
        while (rc == EVBUS_EAGAIN || rc == EVBUS_EBUSY) { /* queue full */
            evbus_flush(bus, 10);
            rc = evbus_publish_async(bus, topic, ev, NULL, NULL);
        }
        if (rc != EVBUS_OK)
            die("publish", rc);
        if (timed)
            hist_add(h, now_us() - t0);
        if (opt.fresh) {
            evbus_event_free(ev);
            ev = NULL;
        }
        if (!consumed)
            progress(i + 1);
    }
    evbus_event_free(ev);
}

typedef struct {
    evbus_t *bus;
    const char *topic;
    atomic_long *consumed;
} pub_arg_t;

static void *publisher(void *arg)
{
    pub_arg_t *a = arg;
    publish_n(a->bus, a->topic, opt.events, 0, NULL, a->consumed);
    int rc = evbus_flush(a->bus, -1);
    if (rc != EVBUS_OK)
        die("flush", rc);
    return NULL;
}

static evbus_t *open_or_die(void)
{
    char err[512];
    evbus_t *bus = evbus_open(opt.url, err, sizeof err);
    if (!bus) {
        fprintf(stderr, "evbus-bench: %s\n", err);
        exit(1);
    }
    return bus;
}

static void usage(FILE *f)
{
    fprintf(f, "usage: evbus-bench --url URL [--events N] [--size BYTES]\n"
               "       [--mode publish|publish-sync|consume|roundtrip]\n"
               "       [--window W] [--rate EVENTS_PER_S] [--topic T]\n"
               "       [--fresh-events] [--progress]\n");
}

/* A whole number >= min for option name, or exit 2 naming the value. */
static long num_arg(const char *name, const char *s, long min)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end || v < min) {
        fprintf(stderr,
                "evbus-bench: --%s wants a whole number >= %ld, not "
                "'%s'\n",
                name, min, s);
        usage(stderr);
        exit(2);
    }
    return v;
}

static int known_mode(const char *m)
{
    static const char *const modes[] = {"publish", "publish-sync", "consume",
                                        "roundtrip"};
    for (size_t i = 0; i < sizeof modes / sizeof modes[0]; i++)
        if (strcmp(m, modes[i]) == 0)
            return 1;
    return 0;
}

int main(int argc, char **argv)
{
    static const struct option longs[] = {
        {"url", required_argument, NULL, 'u'},
        {"events", required_argument, NULL, 'n'},
        {"size", required_argument, NULL, 's'},
        {"mode", required_argument, NULL, 'm'},
        {"window", required_argument, NULL, 'w'},
        {"rate", required_argument, NULL, 'r'},
        {"topic", required_argument, NULL, 't'},
        {"fresh-events", no_argument, NULL, 'f'},
        {"progress", no_argument, NULL, 'p'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0}};
    int c;
    while ((c = getopt_long(argc, argv, "u:n:s:m:w:r:t:fph", longs, NULL)) != -1)
        switch (c) {
        case 'u': opt.url = optarg; break;
        case 'n':
            opt.events = num_arg("events", optarg, 1);
            break;
        case 's':
            opt.size = num_arg("size", optarg, 0);
            break;
        case 'm': opt.mode = optarg; break;
        case 'w':
            opt.window = num_arg("window", optarg, 1);
            break;
        case 'r':
            opt.rate = num_arg("rate", optarg, 0);
            break;
        case 't': opt.topic = optarg; break;
        case 'f': opt.fresh = 1; break;
        case 'p': opt.progress = 1; break;
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return 2;
        }
    if (!opt.url)
        opt.url = getenv("EVBUS_URL");
    if (!known_mode(opt.mode)) {
        fprintf(stderr,
                "evbus-bench: --mode is publish, publish-sync, "
                "consume or roundtrip, not '%s'\n",
                opt.mode);
        return 2;
    }
    if (!opt.url) {
        fprintf(stderr, "evbus-bench: no --url and no EVBUS_URL\n");
        usage(stderr);
        return 2;
    }
    if (!opt.url || opt.events <= 0 || opt.size < 0 || opt.window <= 0 ||
        opt.rate < 0) {
        usage(stderr);
        return 2;
    }
    payload = malloc((size_t)opt.size + 1);
    memset(payload, 'x', (size_t)opt.size);
    payload[opt.size] = '\0';
    char topic[128];
    if (opt.topic)
        snprintf(topic, sizeof topic, "%s", opt.topic);
    else
        snprintf(topic, sizeof topic, "bench.%s.%d.%ld", opt.mode,
                 (int)getpid(), (long)time(NULL));

    hist_t *h = calloc(1, sizeof *h);
    evbus_t *bus = open_or_die();
    uint64_t t0 = 0, t1 = 0;
    consumer_t cons = {h, 0, 0, 0};

    if (strcmp(opt.mode, "publish") == 0 ||
        strcmp(opt.mode, "publish-sync") == 0) {
        int sync = strcmp(opt.mode, "publish-sync") == 0;
        t0 = now_us();
        publish_n(bus, topic, opt.events, sync, h, NULL);
        int rc = evbus_flush(bus, -1);
        if (rc != EVBUS_OK)
            die("flush", rc);
        t1 = now_us();
    } else if (strcmp(opt.mode, "consume") == 0) {
        int persistent = evbus_features(bus) & EVBUS_FEAT_PERSISTENT;
        char group[64];
        snprintf(group, sizeof group, "bench-%d", (int)getpid());
        evbus_sub_opts_t so;
        evbus_sub_opts_init(&so);
        so.max_inflight = 10000;
        char why[512];
        if (!persistent && !evbus_subscribe_opts(bus, topic, group, &so,
                                                 on_event, &cons, why, sizeof why))
            die_msg("subscribe", why);
        int saved = opt.progress;
        opt.progress = 0;
        publish_n(bus, topic, opt.events, 0, NULL, NULL);
        opt.progress = saved;
        int rc = evbus_flush(bus, -1);
        if (rc != EVBUS_OK)
            die("flush", rc);
        t0 = now_us();
        if (persistent && !evbus_subscribe_opts(bus, topic, group, &so,
                                                on_event, &cons, why, sizeof why))
            die_msg("subscribe", why);
        consume_all(bus, &cons, opt.events);
        t1 = now_us();
    } else if (strcmp(opt.mode, "roundtrip") == 0) {
        char group[64];
        snprintf(group, sizeof group, "bench-%d", (int)getpid());
        cons.latency_from_stamp = 1;
        evbus_sub_opts_t so;
        evbus_sub_opts_init(&so);
        so.max_inflight = 10000;
        char why[512];
        if (!evbus_subscribe_opts(bus, topic, group, &so, on_event, &cons, why,
                                  sizeof why))
            die_msg("subscribe", why);
        /* let a broker-side group settle before the clock starts */
        evbus_poll(bus, 200);
        evbus_t *pub = open_or_die();
        pthread_t th;
        pub_arg_t arg = {pub, topic, &cons.consumed};
        t0 = now_us();
        pthread_create(&th, NULL, publisher, &arg);
        consume_all(bus, &cons, opt.events);
        t1 = now_us();
        pthread_join(th, NULL);
        evbus_close(pub);
    } else {
        usage(stderr);
        return 2;
    }
    evbus_close(bus);

    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    double secs = (double)(t1 - t0) / 1e6;
    printf("{\"mode\":\"%s\",\"url\":\"%s\",\"events\":%ld,\"size\":%ld,"
           "\"seconds\":%.3f,\"events_per_s\":%.0f,\"p50_us\":%" PRIu64
           ",\"p99_us\":%" PRIu64 ",\"max_us\":%" PRIu64
           ",\"max_rss_kb\":%ld}\n",
           opt.mode, opt.url, opt.events, opt.size, secs,
           secs > 0 ? (double)opt.events / secs : 0.0, hist_pct(h, 50),
           hist_pct(h, 99), h->max, ru.ru_maxrss);
    free(h);
    free(payload);
    return 0;
}
