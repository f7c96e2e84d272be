/*
 * Idle cost and wake-up latency of a sqlite:// subscriber.
 *
 *   sqlite-idle-wake --url sqlite:///path/bus.db [--events N] [--idle-s S]
 *
 * A child process publishes N events 100 ms apart, each carrying the
 * CLOCK_MONOTONIC time just before its publish call; the parent, blocked in
 * evbus_poll, records how long each took to reach its handler. Then the
 * parent stays subscribed with nothing to do for S seconds and reports the
 * CPU time the whole process used meanwhile (poller, watcher and writer
 * threads). One JSON line.
 */
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "evbus/evbus.h"

static uint64_t now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

static uint64_t lat[10000];
static int nlat;

static evbus_result_t on_event(const evbus_event_t *ev, void *opaque)
{
    (void)opaque;
    const char *sent = evbus_event_ext(ev, "sentus");
    if (sent && nlat < 10000)
        lat[nlat++] = now_us() - strtoull(sent, NULL, 10);
    return EVBUS_ACK;
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

static double cpu_s(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 +
           (double)ru.ru_stime.tv_sec + ru.ru_stime.tv_usec / 1e6;
}

int main(int argc, char **argv)
{
    const char *url = NULL;
    int events = 20, idle_s = 10;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--url")) url = argv[i + 1];
        else if (!strcmp(argv[i], "--events")) events = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--idle-s")) idle_s = atoi(argv[i + 1]);
    }
    if (!url || events <= 0 || events > 10000 || idle_s <= 0) {
        fprintf(stderr, "usage: %s --url URL [--events N] [--idle-s S]\n",
                argv[0]);
        return 2;
    }
    /* Fork first: a child must not inherit SQLite state another thread
     * may hold locked. The child publishes once told the parent is ready. */
    char err[512];
    int go[2];
    if (pipe(go) != 0)
        return 1;
    pid_t pid = fork();
    if (pid == 0) {
        char c;
        if (read(go[0], &c, 1) != 1)
            _exit(1);
        evbus_t *pub = evbus_open(url, err, sizeof err);
        if (!pub)
            _exit(1);
        for (int i = 0; i < events; i++) {
            usleep(100000);
            evbus_event_t *ev = evbus_event_new("bench.wake.sent", "/bench");
            char buf[32];
            snprintf(buf, sizeof buf, "%llu", (unsigned long long)now_us());
            evbus_event_set_ext(ev, "sentus", buf);
            int rc = evbus_publish(pub, "bench.wake", ev);
            evbus_event_free(ev);
            if (rc != EVBUS_OK)
                _exit(1);
        }
        evbus_close(pub);
        _exit(0);
    }
    evbus_t *bus = evbus_open(url, err, sizeof err);
    if (!bus) {
        fprintf(stderr, "%s\n", err);
        kill(pid, SIGKILL);
        return 1;
    }
    if (!evbus_subscribe(bus, "bench.wake", "wake", on_event, NULL)) {
        fprintf(stderr, "subscribe failed\n");
        kill(pid, SIGKILL);
        return 1;
    }
    while (evbus_poll(bus, 100) > 0) /* drain leftovers of earlier runs */
        ;
    nlat = 0;
    if (write(go[1], "x", 1) != 1)
        return 1;
    uint64_t end = now_us() + (uint64_t)events * 100000u + 5000000u;
    while (nlat < events && now_us() < end)
        evbus_poll(bus, 1000);
    int status;
    waitpid(pid, &status, 0);

    double c0 = cpu_s();
    uint64_t t0 = now_us();
    while (now_us() - t0 < (uint64_t)idle_s * 1000000u)
        evbus_poll(bus, 1000);
    double idle_pct = (cpu_s() - c0) * 100.0 / ((now_us() - t0) / 1e6);

    qsort(lat, (size_t)nlat, sizeof *lat, cmp_u64);
    printf("{\"url\":\"%s\",\"wake_events\":%d,\"wake_p50_us\":%llu,"
           "\"wake_max_us\":%llu,\"idle_s\":%d,\"idle_cpu_pct\":%.3f}\n",
           url, nlat, (unsigned long long)(nlat ? lat[nlat / 2] : 0),
           (unsigned long long)(nlat ? lat[nlat - 1] : 0), idle_s, idle_pct);
    evbus_close(bus);
    return nlat == events ? 0 : 1;
}
