/*
 * redis-raw-bench: the raw hiredis baseline that evbus-bench's redis://
 * figures are compared with (bench/redis/run-redis-bench.sh runs both
 * against the same server in the same minute).
 *
 *   redis-raw-bench --host H --port P [--events N] [--size BYTES]
 *                   [--mode xadd-pipelined|xadd-sync|consume|latency]
 *                   [--depth D] [--rate R]
 *
 * The payload is exactly what evbus publishes for evbus-bench's event (a
 * CloudEvent of --size bytes of text/plain data with a benchts extension),
 * written with the same XADD field layout (MAXLEN ~ 1000000, data,
 * metadata), so both sides move the same bytes.
 *
 *   xadd-pipelined  D XADDs appended, then D replies read (default D 1000)
 *   xadd-sync       one XADD, wait for its reply, next (latency per call)
 *   consume         N entries prefilled (untimed); XREADGROUP COUNT D and
 *                   one XACK of the batch's ids per round trip
 *   latency         a publisher thread XADDs at --rate events/s (default
 *                   1000), a consumer thread reads with XREADGROUP BLOCK and
 *                   acks; latency = XADD start to entry read
 * Prints one JSON line: mode, events, size, seconds, events_per_s, p50_us,
 * p99_us, max_us, max_rss_kb.
 */
#include <getopt.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include <hiredis/hiredis.h>

#include <evbus/evbus.h>

static uint64_t now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

/* latencies: a plain array, sorted at the end */
static uint64_t *lat;
static size_t nlat;

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

static uint64_t pct(double p)
{
    if (!nlat)
        return 0;
    size_t i = (size_t)(p / 100.0 * (double)nlat);
    return lat[i >= nlat ? nlat - 1 : i];
}

static struct {
    const char *host, *mode;
    int port;
    long events, size, depth, rate;
} opt = {"127.0.0.1", "xadd-pipelined", 6379, 100000, 256, 1000, 1000};

static char *payload;
static size_t payload_len;
static char topic[128];

static redisContext *connect_or_die(void)
{
    redisContext *c = redisConnect(opt.host, opt.port);
    if (!c || c->err) {
        fprintf(stderr, "redis-raw-bench: cannot connect to %s:%d: %s\n",
                opt.host, opt.port, c ? c->errstr : "out of memory");
        exit(1);
    }
    return c;
}

static void check(redisReply *r, const char *what)
{
    if (!r || r->type == REDIS_REPLY_ERROR) {
        fprintf(stderr, "redis-raw-bench: %s: %s\n", what,
                r ? r->str : "no reply");
        exit(1);
    }
}

static void append_xadd(redisContext *c)
{
    const char *argv[] = {"XADD", topic, "MAXLEN", "~", "1000000", "*",
                          "data", payload, "metadata", "{}"};
    size_t len[10];
    for (int i = 0; i < 10; i++)
        len[i] = strlen(argv[i]);
    len[7] = payload_len;
    redisAppendCommandArgv(c, 10, argv, len);
}

static void xadd_pipelined(redisContext *c, long n)
{
    for (long done = 0; done < n;) {
        long k = n - done < opt.depth ? n - done : opt.depth;
        for (long i = 0; i < k; i++)
            append_xadd(c);
        for (long i = 0; i < k; i++) {
            redisReply *r;
            if (redisGetReply(c, (void **)&r) != REDIS_OK)
                check(NULL, "XADD");
            check(r, "XADD");
            freeReplyObject(r);
        }
        done += k;
    }
}

static void xadd_sync(redisContext *c, long n)
{
    for (long i = 0; i < n; i++) {
        uint64_t t0 = now_us();
        append_xadd(c);
        redisReply *r;
        if (redisGetReply(c, (void **)&r) != REDIS_OK)
            check(NULL, "XADD");
        check(r, "XADD");
        freeReplyObject(r);
        lat[nlat++] = now_us() - t0;
    }
}

/* Reads up to depth entries and acks them in one XACK; returns how many. */
static long read_and_ack(redisContext *c, int block_ms)
{
    redisReply *r;
    if (block_ms >= 0)
        r = redisCommand(c,
                         "XREADGROUP GROUP g raw COUNT %ld BLOCK %d STREAMS %s >",
                         opt.depth, block_ms, topic);
    else
        r = redisCommand(c, "XREADGROUP GROUP g raw COUNT %ld STREAMS %s >",
                         opt.depth, topic);
    check(r, "XREADGROUP");
    if (r->type != REDIS_REPLY_ARRAY) {
        freeReplyObject(r);
        return 0;
    }
    redisReply *entries = r->element[0]->element[1];
    long k = (long)entries->elements;
    if (k) {
        const char **argv = malloc((size_t)(k + 3) * sizeof *argv);
        argv[0] = "XACK";
        argv[1] = topic;
        argv[2] = "g";
        for (long i = 0; i < k; i++)
            argv[3 + i] = entries->element[i]->element[0]->str;
        redisAppendCommandArgv(c, (int)(k + 3), argv, NULL);
        free(argv);
    }
    uint64_t t = now_us();
    if (block_ms >= 0) /* latency mode: entries carry their XADD time */
        for (long i = 0; i < k; i++) {
            redisReply *f = entries->element[i]->element[1];
            for (size_t j = 0; j + 1 < f->elements; j += 2)
                if (strcmp(f->element[j]->str, "t") == 0)
                    lat[nlat++] = t - strtoull(f->element[j + 1]->str, NULL, 10);
        }
    freeReplyObject(r);
    if (k) {
        if (redisGetReply(c, (void **)&r) != REDIS_OK)
            check(NULL, "XACK");
        check(r, "XACK");
        freeReplyObject(r);
    }
    return k;
}

static void *paced_publisher(void *arg)
{
    (void)arg;
    redisContext *c = connect_or_die();
    uint64_t start = now_us(), gap = 1000000u / (uint64_t)opt.rate;
    for (long i = 0; i < opt.events; i++) {
        uint64_t due = start + (uint64_t)i * gap, now = now_us();
        if (due > now)
            usleep((useconds_t)(due - now));
        char ts[24];
        snprintf(ts, sizeof ts, "%" PRIu64, now_us());
        const char *argv[] = {"XADD", topic, "*", "data", payload,
                              "metadata", "{}", "t", ts};
        size_t len[9];
        for (int k = 0; k < 9; k++)
            len[k] = strlen(argv[k]);
        len[4] = payload_len;
        redisReply *r = redisCommandArgv(c, 9, argv, len);
        check(r, "XADD");
        freeReplyObject(r);
    }
    redisFree(c);
    return NULL;
}

int main(int argc, char **argv)
{
    static const struct option longs[] = {
        {"host", required_argument, NULL, 'H'},
        {"port", required_argument, NULL, 'P'},
        {"events", required_argument, NULL, 'n'},
        {"size", required_argument, NULL, 's'},
        {"mode", required_argument, NULL, 'm'},
        {"depth", required_argument, NULL, 'd'},
        {"rate", required_argument, NULL, 'r'},
        {NULL, 0, NULL, 0}};
    int ch;
    while ((ch = getopt_long(argc, argv, "H:P:n:s:m:d:r:", longs, NULL)) != -1)
        switch (ch) {
        case 'H': opt.host = optarg; break;
        case 'P': opt.port = atoi(optarg); break;
        case 'n': opt.events = atol(optarg); break;
        case 's': opt.size = atol(optarg); break;
        case 'm': opt.mode = optarg; break;
        case 'd': opt.depth = atol(optarg); break;
        case 'r': opt.rate = atol(optarg); break;
        default:
            fprintf(stderr, "usage: redis-raw-bench --host H --port P "
                            "[--events N] [--size B] [--mode "
                            "xadd-pipelined|xadd-sync|consume|latency] "
                            "[--depth D] [--rate R]\n");
            return 2;
        }
    if (opt.events <= 0 || opt.size < 0 || opt.depth <= 0 || opt.rate <= 0)
        return 2;

    /* The same bytes evbus-bench publishes. */
    char *data = malloc((size_t)opt.size + 1);
    memset(data, 'x', (size_t)opt.size);
    evbus_event_t *ev = evbus_event_new("bench.event.sent", "/evbus/bench");
    evbus_event_set_data(ev, data, (size_t)opt.size, "text/plain");
    char ts[24];
    snprintf(ts, sizeof ts, "%" PRIu64, now_us());
    evbus_event_set_ext(ev, "benchts", ts);
    payload = evbus_event_to_json(ev, &payload_len);
    evbus_event_free(ev);
    free(data);
    snprintf(topic, sizeof topic, "rawbench.%s.%d.%ld", opt.mode, (int)getpid(),
             (long)time(NULL));
    lat = malloc((size_t)opt.events * sizeof *lat);

    redisContext *c = connect_or_die();
    uint64_t t0 = 0, t1 = 0;
    if (strcmp(opt.mode, "xadd-pipelined") == 0) {
        t0 = now_us();
        xadd_pipelined(c, opt.events);
        t1 = now_us();
    } else if (strcmp(opt.mode, "xadd-sync") == 0) {
        t0 = now_us();
        xadd_sync(c, opt.events);
        t1 = now_us();
    } else if (strcmp(opt.mode, "consume") == 0) {
        xadd_pipelined(c, opt.events); /* untimed prefill */
        redisReply *r = redisCommand(c, "XGROUP CREATE %s g 0", topic);
        check(r, "XGROUP");
        freeReplyObject(r);
        long got = 0;
        t0 = now_us();
        while (got < opt.events) {
            uint64_t b0 = now_us();
            long k = read_and_ack(c, -1);
            uint64_t per = k ? (now_us() - b0) / (uint64_t)k : 0;
            for (long i = 0; i < k; i++)
                lat[nlat++] = per; /* gap between entries handed out */
            got += k;
        }
        t1 = now_us();
    } else if (strcmp(opt.mode, "latency") == 0) {
        redisReply *r =
            redisCommand(c, "XGROUP CREATE %s g $ MKSTREAM", topic);
        check(r, "XGROUP");
        freeReplyObject(r);
        pthread_t th;
        t0 = now_us();
        pthread_create(&th, NULL, paced_publisher, NULL);
        long got = 0;
        while (got < opt.events)
            got += read_and_ack(c, 100);
        pthread_join(th, NULL);
        t1 = now_us();
    } else {
        fprintf(stderr, "redis-raw-bench: unknown mode %s\n", opt.mode);
        return 2;
    }
    redisReply *r = redisCommand(c, "DEL %s", topic);
    freeReplyObject(r);
    redisFree(c);
    qsort(lat, nlat, sizeof *lat, cmp_u64);
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    double secs = (double)(t1 - t0) / 1e6;
    printf("{\"mode\":\"raw-%s\",\"events\":%ld,\"size\":%ld,\"payload_bytes\":"
           "%zu,\"seconds\":%.3f,\"events_per_s\":%.0f,\"p50_us\":%" PRIu64
           ",\"p99_us\":%" PRIu64 ",\"max_us\":%" PRIu64
           ",\"max_rss_kb\":%ld}\n",
           opt.mode, opt.events, opt.size, payload_len, secs,
           (double)opt.events / secs, pct(50), pct(99),
           nlat ? lat[nlat - 1] : 0, ru.ru_maxrss);
    free(lat);
    free(payload);
    return 0;
}
