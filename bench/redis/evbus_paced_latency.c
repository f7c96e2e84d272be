/*
 * evbus-paced-latency: end-to-end latency of a bus at a fixed event rate
 * (evbus-bench's roundtrip mode runs flat out; this one paces). A publisher
 * thread calls evbus_publish --rate times a second on one bus while this
 * thread consumes on another; latency = publish start to handler call.
 *
 *   evbus-paced-latency --url URL [--events N] [--size B] [--rate R]
 *
 * Prints one JSON line like evbus-bench: mode "paced-latency", events,
 * size, rate, seconds, events_per_s, p50_us, p99_us, max_us, max_rss_kb.
 */
#include <getopt.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
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

static struct {
    const char *url;
    long events, size, rate;
} opt = {NULL, 10000, 256, 1000};

static char topic[128];
static uint64_t *lat;
static atomic_long got;

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

static evbus_result_t on_event(const evbus_event_t *ev, void *opaque)
{
    (void)opaque;
    uint64_t t = now_us();
    const char *ts = evbus_event_ext(ev, "benchts");
    long i = atomic_load(&got);
    if (ts && i < opt.events)
        lat[i] = t - strtoull(ts, NULL, 10);
    atomic_store(&got, i + 1);
    return EVBUS_ACK;
}

static evbus_t *open_or_die(void)
{
    char err[512];
    evbus_t *bus = evbus_open(opt.url, err, sizeof err);
    if (!bus) {
        fprintf(stderr, "evbus-paced-latency: %s\n", err);
        exit(1);
    }
    return bus;
}

static void *publisher(void *arg)
{
    evbus_t *bus = arg;
    char *data = malloc((size_t)opt.size + 1);
    memset(data, 'x', (size_t)opt.size);
    evbus_event_t *ev = evbus_event_new("bench.event.sent", "/evbus/bench");
    evbus_event_set_data(ev, data, (size_t)opt.size, "text/plain");
    uint64_t start = now_us(), gap = 1000000u / (uint64_t)opt.rate;
    for (long i = 0; i < opt.events; i++) {
        uint64_t due = start + (uint64_t)i * gap, now = now_us();
        if (due > now)
            usleep((useconds_t)(due - now));
        char ts[24];
        snprintf(ts, sizeof ts, "%" PRIu64, now_us());
        evbus_event_set_ext(ev, "benchts", ts);
        int rc = evbus_publish(bus, topic, ev);
        if (rc != EVBUS_OK) {
            fprintf(stderr, "evbus-paced-latency: publish: %s\n",
                    evbus_strerror(rc));
            exit(1);
        }
    }
    evbus_event_free(ev);
    free(data);
    return NULL;
}

int main(int argc, char **argv)
{
    static const struct option longs[] = {
        {"url", required_argument, NULL, 'u'},
        {"events", required_argument, NULL, 'n'},
        {"size", required_argument, NULL, 's'},
        {"rate", required_argument, NULL, 'r'},
        {NULL, 0, NULL, 0}};
    int ch;
    while ((ch = getopt_long(argc, argv, "u:n:s:r:", longs, NULL)) != -1)
        switch (ch) {
        case 'u': opt.url = optarg; break;
        case 'n': opt.events = atol(optarg); break;
        case 's': opt.size = atol(optarg); break;
        case 'r': opt.rate = atol(optarg); break;
        default:
            fprintf(stderr, "usage: evbus-paced-latency --url URL [--events N] "
                            "[--size B] [--rate R]\n");
            return 2;
        }
    if (!opt.url || opt.events <= 0 || opt.rate <= 0 || opt.size < 0)
        return 2;
    snprintf(topic, sizeof topic, "bench.paced.%d.%ld", (int)getpid(),
             (long)time(NULL));
    lat = calloc((size_t)opt.events, sizeof *lat);
    evbus_t *pub = open_or_die(), *con = open_or_die();
    if (!evbus_subscribe(con, topic, "bench", on_event, NULL)) {
        fprintf(stderr, "evbus-paced-latency: subscribe failed\n");
        return 1;
    }
    evbus_poll(con, 200); /* let the fetcher start */
    pthread_t th;
    uint64_t t0 = now_us();
    pthread_create(&th, NULL, publisher, pub);
    while (atomic_load(&got) < opt.events)
        evbus_poll(con, 100);
    uint64_t t1 = now_us();
    pthread_join(th, NULL);
    evbus_close(pub);
    evbus_close(con);
    qsort(lat, (size_t)opt.events, sizeof *lat, cmp_u64);
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    double secs = (double)(t1 - t0) / 1e6;
    size_t n = (size_t)opt.events;
    printf("{\"mode\":\"paced-latency\",\"url\":\"%s\",\"events\":%ld,"
           "\"size\":%ld,\"rate\":%ld,\"seconds\":%.3f,\"events_per_s\":%.0f,"
           "\"p50_us\":%" PRIu64 ",\"p99_us\":%" PRIu64 ",\"max_us\":%" PRIu64
           ",\"max_rss_kb\":%ld}\n",
           opt.url, opt.events, opt.size, opt.rate, secs,
           (double)opt.events / secs, lat[n / 2], lat[n * 99 / 100],
           lat[n - 1], ru.ru_maxrss);
    free(lat);
    return 0;
}
