/*
 * Handler workers under load: how many events per second one subscription
 * handles when its handler waits (I/O-like, --handler-us) or computes
 * (--cpu-us), with --concurrency workers, and whether per-key order held.
 *
 *   evbus-concurrency-bench --url URL [--concurrency N] [--handler-us US |
 *       --cpu-us US] [--events N] [--keys K] [--baseline]
 *
 * The events (K partition keys, a sequence number per key) are published
 * first; the clock runs from the first handler call to the last, so a
 * broker's group join is not counted. Per-key order is checked on every
 * call: a key's sequence numbers must arrive in order (no retries here).
 *
 * --baseline runs the same handler on N plain threads pulling from an
 * in-memory queue, no broker and no library: the rate the handler itself
 * allows on this machine (a sleep of 1 ms takes longer than 1 ms), printed
 * beside the library's figure so the ratio is against what is possible.
 *
 * Prints one line: mode=evbus|baseline url= concurrency= events= rate=
 * order_violations= max_running=.
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <evbus/evbus.h>

static struct {
    const char *url;
    int concurrency, handler_us, cpu_us, events, keys;
    int baseline;
} opt = {NULL, 32, 1000, 0, 50000, 100, 0};

static uint64_t now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

/* ------------------------------------------------------------ the work */

static volatile uint64_t cpu_sink;

/* What one handler call does: wait handler_us, or burn cpu_us of CPU. */
static void work(void)
{
    if (opt.cpu_us > 0) {
        uint64_t end = now_us() + (uint64_t)opt.cpu_us, x = 88172645463325252u;
        while (now_us() < end)
            for (int i = 0; i < 64; i++) {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
            }
        cpu_sink += x;
    } else if (opt.handler_us > 0) {
        struct timespec ts = {opt.handler_us / 1000000,
                              (long)(opt.handler_us % 1000000) * 1000};
        nanosleep(&ts, NULL);
    }
}

/* ------------------------------------------------------------ bookkeeping */

typedef struct {
    long *last;             /* last seq per key; a key never runs twice at
                               once, and the hand-over orders its calls */
    atomic_long done;
    atomic_long violations;
    atomic_int running, max_running;
    _Atomic uint64_t first_us, last_us;
} tally_t;

static void tally_call(tally_t *t, int key, long seq)
{
    int r = atomic_fetch_add(&t->running, 1) + 1;
    int m = atomic_load(&t->max_running);
    while (r > m && !atomic_compare_exchange_weak(&t->max_running, &m, r))
        ;
    uint64_t zero = 0;
    atomic_compare_exchange_strong(&t->first_us, &zero, now_us());
    if (key >= 0 && key < opt.keys) {
        if (seq <= t->last[key])
            atomic_fetch_add(&t->violations, 1);
        t->last[key] = seq;
    }
    work();
    atomic_fetch_sub(&t->running, 1);
    atomic_store(&t->last_us, now_us());
    atomic_fetch_add(&t->done, 1);
}

static void report(const char *mode, tally_t *t)
{
    double secs = (double)(atomic_load(&t->last_us) -
                           atomic_load(&t->first_us)) / 1e6;
    long n = atomic_load(&t->done);
    printf("mode=%s url=%s concurrency=%d handler_us=%d cpu_us=%d events=%ld "
           "rate=%.0f order_violations=%ld max_running=%d\n",
           mode, opt.url ? opt.url : "-", opt.concurrency, opt.handler_us,
           opt.cpu_us, n, secs > 0 ? (double)n / secs : 0.0,
           atomic_load(&t->violations), atomic_load(&t->max_running));
}

/* ------------------------------------------------------------ baseline */

static atomic_long next_job;
static tally_t base;

static void *baseline_worker(void *arg)
{
    (void)arg;
    long i;
    while ((i = atomic_fetch_add(&next_job, 1)) < opt.events)
        tally_call(&base, -1, i);
    return NULL;
}

static int run_baseline(void)
{
    base.last = calloc((size_t)opt.keys, sizeof *base.last);
    pthread_t *th = calloc((size_t)opt.concurrency, sizeof *th);
    for (int i = 0; i < opt.concurrency; i++)
        pthread_create(&th[i], NULL, baseline_worker, NULL);
    for (int i = 0; i < opt.concurrency; i++)
        pthread_join(th[i], NULL);
    report("baseline", &base);
    return 0;
}

/* ------------------------------------------------------------ evbus */

static tally_t tal;

static evbus_result_t handler(const evbus_event_t *ev, void *opaque)
{
    (void)opaque;
    const char *k = evbus_event_ext(ev, "partitionkey");
    const char *s = evbus_event_ext(ev, "seq");
    tally_call(&tal, k ? atoi(k + 1) : -1, s ? atol(s) : 0);
    return EVBUS_ACK;
}

static void die(const char *what, const char *why)
{
    fprintf(stderr, "evbus-concurrency-bench: %s: %s\n", what, why);
    exit(1);
}

static int run_evbus(void)
{
    char err[512];
    evbus_t *bus = evbus_open(opt.url, err, sizeof err);
    if (!bus)
        die("open", err);
    char topic[64], group[64];
    snprintf(topic, sizeof topic, "bench.conc.%d.%ld", (int)getpid(),
             (long)time(NULL));
    snprintf(group, sizeof group, "bench-%d", (int)getpid());
    /* Publish the backlog first: consume is measured, not publish. */
    evbus_sub_opts_t o;
    evbus_sub_opts_init(&o);
    o.concurrency = opt.concurrency;
    o.max_inflight = opt.concurrency * 4 > 256 ? opt.concurrency * 4 : 256;
    int persistent = evbus_features(bus) & EVBUS_FEAT_PERSISTENT;
    evbus_sub_t *sub = NULL;
    if (!persistent &&
        !(sub = evbus_subscribe_opts(bus, topic, group, &o, handler, NULL, err,
                                     sizeof err)))
        die("subscribe", err);
    long *seq = calloc((size_t)opt.keys, sizeof *seq);
    for (int i = 0; i < opt.events; i++) {
        evbus_event_t *ev = evbus_event_new("bench.conc.event", "/bench");
        char key[16], s[24];
        int k = i % opt.keys;
        snprintf(key, sizeof key, "k%d", k);
        snprintf(s, sizeof s, "%ld", ++seq[k]);
        evbus_event_set_ext(ev, "partitionkey", key);
        evbus_event_set_ext(ev, "seq", s);
        int rc;
        while ((rc = evbus_publish_async(bus, topic, ev, NULL, NULL)) ==
               EVBUS_EAGAIN)
            evbus_flush(bus, 100);
        if (rc != EVBUS_OK)
            die("publish", evbus_strerror(rc));
        evbus_event_free(ev);
    }
    int rc = evbus_flush(bus, -1);
    if (rc != EVBUS_OK)
        die("flush", evbus_strerror(rc));
    tal.last = calloc((size_t)opt.keys, sizeof *tal.last);
    if (persistent &&
        !(sub = evbus_subscribe_opts(bus, topic, group, &o, handler, NULL, err,
                                     sizeof err)))
        die("subscribe", err);
    while (atomic_load(&tal.done) < opt.events) {
        rc = evbus_poll(bus, 100);
        if (rc < 0)
            die("poll", evbus_strerror(rc));
    }
    report("evbus", &tal);
    evbus_close(bus);
    free(seq);
    return atomic_load(&tal.violations) ? 1 : 0;
}

int main(int argc, char **argv)
{
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(a, "--baseline") == 0) {
            opt.baseline = 1;
            continue;
        }
        if (!v) {
            fprintf(stderr, "evbus-concurrency-bench: %s needs a value\n", a);
            return 2;
        }
        i++;
        if (strcmp(a, "--url") == 0)
            opt.url = v;
        else if (strcmp(a, "--concurrency") == 0)
            opt.concurrency = atoi(v);
        else if (strcmp(a, "--handler-us") == 0)
            opt.handler_us = atoi(v);
        else if (strcmp(a, "--cpu-us") == 0)
            opt.cpu_us = atoi(v);
        else if (strcmp(a, "--events") == 0)
            opt.events = atoi(v);
        else if (strcmp(a, "--keys") == 0)
            opt.keys = atoi(v);
        else {
            fprintf(stderr, "evbus-concurrency-bench: unknown option %s\n", a);
            return 2;
        }
    }
    if (opt.concurrency < 1 || opt.events < 1 || opt.keys < 1 ||
        (!opt.baseline && !opt.url)) {
        fprintf(stderr, "usage: evbus-concurrency-bench --url URL "
                        "[--concurrency N] [--handler-us US | --cpu-us US] "
                        "[--events N] [--keys K] [--baseline]\n");
        return 2;
    }
    return opt.baseline ? run_baseline() : run_evbus();
}
