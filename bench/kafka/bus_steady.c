/*
 * kafka-bus-steady: evbus consume rate after the group join, to put beside
 * kafka-raw-bench's steady_events_per_s (evbus-bench's consume figure
 * includes the join, which the mock makes 3 s long).
 *
 *   kafka-bus-steady --url kafka://... [--events N] [--size B] [--topic T]
 *
 * Publishes N events (untimed), subscribes a fresh group and times the
 * handler calls from the first to the last. One JSON line.
 *
 * With a memory:// URL it subscribes first (memory:// keeps no events for
 * nobody): the core's own rate for the same events and handler, with no
 * broker and no decoding (the backend hands over a clone of the event),
 * the floor beside which the Kafka figures are read (consume_ratio.sh).
 */
#include <getopt.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <evbus/evbus.h>

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static long got;
static double t_first;

static evbus_result_t on_event(const evbus_event_t *ev, void *opaque)
{
    (void)ev;
    (void)opaque;
    if (!got++)
        t_first = now_s();
    return EVBUS_ACK;
}

static bool subscribe(evbus_t *bus, const char *topic, const char *group)
{
    evbus_sub_opts_t so;
    evbus_sub_opts_init(&so);
    so.max_inflight = 10000;
    if (!evbus_subscribe_opts(bus, topic, group, &so, on_event, NULL, NULL, 0)) {
        fprintf(stderr, "kafka-bus-steady: subscribe failed\n");
        return false;
    }
    return true;
}

int main(int argc, char **argv)
{
    const char *url = NULL, *topic_opt = NULL;
    long events = 30000, size = 100;
    static const struct option opts[] = {
        {"url", required_argument, NULL, 'u'},
        {"events", required_argument, NULL, 'n'},
        {"size", required_argument, NULL, 's'},
        {"topic", required_argument, NULL, 't'},
        {NULL, 0, NULL, 0}};
    int ch;
    while ((ch = getopt_long(argc, argv, "u:n:s:t:", opts, NULL)) != -1) {
        switch (ch) {
        case 'u': url = optarg; break;
        case 'n': events = atol(optarg); break;
        case 's': size = atol(optarg); break;
        case 't': topic_opt = optarg; break;
        default: return 2;
        }
    }
    if (!url || events < 2 || size < 0) {
        fprintf(stderr, "usage: kafka-bus-steady --url URL [--events N] "
                        "[--size B] [--topic T]\n");
        return 2;
    }
    char err[512], topic[128], group[64];
    if (topic_opt)
        snprintf(topic, sizeof topic, "%s", topic_opt);
    else
        snprintf(topic, sizeof topic, "bussteady.%d", (int)getpid());
    snprintf(group, sizeof group, "bus-steady-%d", (int)getpid());
    evbus_t *bus = evbus_open(url, err, sizeof err);
    if (!bus) {
        fprintf(stderr, "kafka-bus-steady: %s\n", err);
        return 1;
    }
    bool memory = strncmp(url, "memory:", 7) == 0;
    if (memory && !subscribe(bus, topic, group))
        return 1;
    char *data = malloc((size_t)size + 1);
    memset(data, 'x', (size_t)size);
    evbus_event_t *ev = evbus_event_new("bench.event.sent", "/evbus/bench");
    evbus_event_set_data(ev, data, (size_t)size, "text/plain");
    for (long i = 0; i < events; i++)
        if (evbus_publish_async(bus, topic, ev, NULL, NULL) != EVBUS_OK) {
            fprintf(stderr, "kafka-bus-steady: publish failed\n");
            return 1;
        }
    if (evbus_flush(bus, -1) != EVBUS_OK) {
        fprintf(stderr, "kafka-bus-steady: flush failed\n");
        return 1;
    }
    if (!memory && !subscribe(bus, topic, group))
        return 1;
    double t0 = now_s();
    while (got < events)
        evbus_poll(bus, 100);
    double t1 = now_s();
    evbus_close(bus);
    evbus_event_free(ev);
    free(data);
    printf("{\"mode\":\"bus-consume\",\"events\":%ld,\"size\":%ld,"
           "\"seconds\":%.3f,\"steady_events_per_s\":%.0f}\n",
           events, size, t1 - t0, (double)(got - 1) / (t1 - t_first));
    return 0;
}
