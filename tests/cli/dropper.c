/*
 * cli-dropper: makes dead letters for the evbus CLI tests.
 *
 *   cli-dropper URL TOPIC N [RAW-TEXT]
 *
 * With RAW-TEXT, first publishes those bytes unchanged (evbus_publish_raw),
 * which is not a CloudEvent. Then consumes TOPIC as the group "dropper",
 * answering DROP to every event, until N events were dead-lettered (by DROP
 * or as undecodable bytes) or 20 s pass. Exit 0 when N were dead-lettered,
 * 1 otherwise. With CLI_DROPPER_RETRY=K in the environment it answers
 * RETRY instead, with max attempts K and 10 ms backoff, so events are
 * dead-lettered after K attempts. Uses only the public API.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <evbus/evbus.h>

static evbus_result_t drop_it(const evbus_event_t *ev, void *opaque)
{
    (void)ev;
    return *(const int *)opaque ? EVBUS_RETRY : EVBUS_DROP;
}

int main(int argc, char **argv)
{
    if (argc != 4 && argc != 5) {
        fprintf(stderr, "usage: cli-dropper URL TOPIC N [RAW-TEXT]\n");
        return 2;
    }
    long want = atol(argv[3]);
    char err[512];
    evbus_t *bus = evbus_open(argv[1], err, sizeof err);
    if (!bus) {
        fprintf(stderr, "cli-dropper: %s\n", err);
        return 1;
    }
    if (argc == 5) {
        int rc = evbus_publish_raw(bus, argv[2], argv[4], strlen(argv[4]));
        if (rc != EVBUS_OK) {
            fprintf(stderr, "cli-dropper: publish_raw: %s\n",
                    evbus_strerror(rc));
            evbus_close(bus);
            return 1;
        }
    }
    const char *retry_env = getenv("CLI_DROPPER_RETRY");
    int retry = retry_env ? atoi(retry_env) : 0;
    evbus_sub_opts_t so;
    evbus_sub_opts_init(&so);
    evbus_retry_policy_t policy;
    if (retry > 0) {
        evbus_retry_policy_init(&policy);
        policy.max_attempts = retry;
        policy.initial_ms = 10;
        policy.max_ms = 10;
        so.retry = &policy;
    }
    char why[512];
    evbus_sub_t *sub = evbus_subscribe_opts(bus, argv[2], "dropper", &so,
                                            drop_it, &retry, why, sizeof why);
    if (!sub) {
        fprintf(stderr, "cli-dropper: subscribe: %s\n", why);
        evbus_close(bus);
        return 1;
    }
    time_t end = time(NULL) + 20;
    evbus_sub_metrics_t m = {0};
    while (time(NULL) < end) {
        evbus_poll(bus, 100);
        evbus_sub_metrics_init(&m);
        evbus_sub_metrics_get(sub, &m);
        if ((long)m.dead_lettered >= want)
            break;
    }
    evbus_close(bus);
    if ((long)m.dead_lettered < want) {
        fprintf(stderr, "cli-dropper: only %llu of %ld dead-lettered\n",
                (unsigned long long)m.dead_lettered, want);
        return 1;
    }
    return 0;
}
