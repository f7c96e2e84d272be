/*
 * evbus tail URL TOPIC [options]
 *
 * Subscribes to TOPIC and prints every event as it arrives. Without --group
 * a private group is used (on persistent backends it starts at the
 * beginning of the retained log, so tail shows history first). With
 * --count, the subscription fetches one event at a time so that events
 * beyond the count are never delivered (and never acknowledged) in a named
 * group.
 */
#include <errno.h>
#include <getopt.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "commands.h"
#include "common.h"
#include "format.h"

/* Where a private tail group's dead letters (undecodable payloads) go. */
#define TAIL_DLQ_SINK "evbus.tail.dlq"

static const char tail_usage[] =
    "usage: evbus tail URL TOPIC [options]\n"
    "\n"
    "Prints the events of TOPIC as they arrive, one JSON line each.\n"
    "\n"
    "  -g, --group GROUP        consume as a member of GROUP: events it prints\n"
    "                           are acknowledged for GROUP (default: a private\n"
    "                           group evbus-tail-HOST-PID-TIME)\n"
    "  -b, --from-beginning     start at the beginning of the retained log\n"
    "                           (see below)\n"
    "  -f, --format FMT         json (default): one CloudEvents JSON line per\n"
    "                           event; pretty: time, type, id, source, other\n"
    "                           attributes and data (colour on a terminal\n"
    "                           unless NO_COLOR is set)\n"
    "  -n, --count N            exit after N events\n"
    "  -t, --timeout SEC        exit after SEC seconds without an event (on\n"
    "                           kafka:// at least 10 s for the first one,\n"
    "                           while the group is joined)\n"
    "  -v, --verbose            library log on stderr (-vv: debug)\n"
    "  -h, --help               this text\n"
    "\n"
    "On persistent backends (sqlite, redis, kafka) a group that did not exist\n"
    "starts at the beginning of the retained log, so the default private group\n"
    "prints history first and then follows new events; on memory:// and\n"
    "dapr:// it sees only what is published while it runs. --from-beginning\n"
    "states that intent: it is the default without --group, it is refused\n"
    "on backends that keep no history, and with --group it is refused because\n"
    "an existing group cannot be rewound (a new group starts there anyway).\n"
    "Payloads that are not CloudEvents are reported on stderr; the private\n"
    "group dead-letters them to " TAIL_DLQ_SINK ", a named group to TOPIC.dlq.\n"
    "\n"
    "Ctrl-C (SIGINT) or SIGTERM stops cleanly. Exit status: 0 after a stop,\n"
    "after --count events, or after --timeout idle seconds; 1 when --timeout\n"
    "ends it before --count events arrived or the bus fails; 2 on usage\n"
    "errors.\n";

typedef struct {
    fmt_kind_t format;
    int color;
    long count;       /* 0 = unlimited */
    long printed;
    int write_failed; /* errno of the failed write, 0 if none */
    evbus_t *bus;
} tail_state_t;

static evbus_result_t on_event(const evbus_event_t *ev, void *opaque)
{
    tail_state_t *st = opaque;
    if (st->write_failed || (st->count && st->printed >= st->count)) {
        /* Not printed, so not consumed: give it back for the group. */
        evbus_stop(st->bus);
        return EVBUS_RETRY;
    }
    if (fmt_event(ev, st->format, st->color) != 0) {
        st->write_failed = errno ? errno : EIO;
        evbus_stop(st->bus);
        return EVBUS_RETRY;
    }
    st->printed++;
    if (st->count && st->printed >= st->count)
        evbus_stop(st->bus);
    return EVBUS_ACK;
}

/* Says on stderr when payloads the bus could not decode were met: not
 * CloudEvents, or CloudEvents over this URL's max_event_bytes (the handler
 * never sees them; the core dead-letters them). */
static void report_undecodable(evbus_sub_t *sub, const char *topic,
                               const char *sink, size_t max_bytes,
                               uint64_t *reported)
{
    evbus_sub_metrics_t m;
    evbus_sub_metrics_init(&m);
    evbus_sub_metrics_get(sub, &m);
    if (m.undecodable <= *reported)
        return;
    uint64_t n = m.undecodable - *reported;
    *reported = m.undecodable;
    cli_error("%llu payload%s on %s could not be read (not a CloudEvent, or "
              "over max_event_bytes %zu of this URL): dead-lettered to %s",
              (unsigned long long)n, n == 1 ? "" : "s", topic, max_bytes,
              sink ? sink : "the group's dead-letter topic");
}

int cmd_tail(int argc, char **argv)
{
    static const struct option longs[] = {
        {"group", required_argument, NULL, 'g'},
        {"from-beginning", no_argument, NULL, 'b'},
        {"format", required_argument, NULL, 'f'},
        {"count", required_argument, NULL, 'n'},
        {"timeout", required_argument, NULL, 't'},
        {"verbose", no_argument, NULL, 'v'},
        {"quiet", no_argument, NULL, 'q'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0}};
    tail_state_t st;
    memset(&st, 0, sizeof st);
    const char *group = NULL;
    int from_beginning = 0;
    long timeout_ms = 0;
    int c;
    optind = 0;
    while ((c = getopt_long(argc, argv, "g:bf:n:t:vqh", longs, NULL)) != -1) {
        switch (c) {
        case 'g': group = optarg; break;
        case 'b': from_beginning = 1; break;
        case 'f': {
            int f = fmt_parse(optarg);
            if (f < 0)
                return cli_usage_error("tail", "--format is json or pretty, "
                                       "not '%s'", optarg);
            st.format = (fmt_kind_t)f;
            break;
        }
        case 'n':
            if (cli_parse_long("tail", "--count", optarg, 1, 1000000000L,
                               &st.count) != 0)
                return CLI_USAGE;
            break;
        case 't':
            if (cli_parse_seconds("tail", "--timeout", optarg, &timeout_ms) != 0)
                return CLI_USAGE;
            break;
        case 'v': cli_verbose++; break;
        case 'q': cli_quiet = 1; break;
        case 'h': fputs(tail_usage, stdout); return CLI_OK;
        default:
            fprintf(stderr, "Try 'evbus tail --help' for more information.\n");
            return CLI_USAGE;
        }
    }
    if (argc - optind != 2)
        return cli_usage_error("tail", "expected URL and TOPIC, got %d "
                               "argument%s", argc - optind,
                               argc - optind == 1 ? "" : "s");
    const char *url = argv[optind], *topic = argv[optind + 1];
    if (cli_check_name("tail", "TOPIC", topic, url) != 0)
        return CLI_USAGE;
    if (group && !*group)
        return cli_usage_error("tail", "--group is empty");
    if (group && cli_check_name("tail", "--group", group, url) != 0)
        return CLI_USAGE;
    if (group && from_beginning)
        return cli_usage_error(
            "tail", "--from-beginning cannot rewind the existing group '%s' "
            "(a new group starts at the beginning anyway); omit --group to "
            "read the history with a private group", group);
    char private_group[160];
    int private = !group;
    if (!group) {
        cli_private_group(private_group, sizeof private_group, "evbus-tail");
        group = private_group;
    }
    st.color = st.format == FMT_PRETTY && fmt_want_color();

    evbus_t *bus = cli_open(url);
    if (!bus)
        return CLI_FAIL;
    if (cli_check_name_bus("tail", "TOPIC", topic, bus) != 0 ||
        cli_check_name_bus("tail", "--group", group, bus) != 0) {
        evbus_close(bus);
        return CLI_USAGE;
    }
    if (from_beginning && !(evbus_features(bus) & EVBUS_FEAT_PERSISTENT)) {
        cli_error("--from-beginning: %s:// keeps no history (only events "
                  "published while tail runs are seen)", evbus_scheme(bus));
        evbus_close(bus);
        return CLI_USAGE;
    }
    st.bus = bus;
    evbus_sub_opts_t so;
    evbus_sub_opts_init(&so);
    if (st.count)
        so.max_inflight = 1; /* never fetch more than we will print */
    /* tail answers RETRY only for events it did not print (stdout closed):
     * they must never be dead-lettered for that. */
    evbus_retry_policy_t forever;
    evbus_retry_policy_init(&forever);
    forever.max_attempts = 0;
    so.retry = &forever;
    /* Every consumer dead-letters bytes that are not CloudEvents. A private
     * tail group must not add copies to TOPIC.dlq (which real consumers
     * fill and `dlq replay --all` reads), so its dead letters go to a sink
     * of their own; tail reports them on stderr instead. */
    if (private)
        so.dlq_topic = TAIL_DLQ_SINK;
    char why[512];
    evbus_sub_t *sub = evbus_subscribe_opts(bus, topic, group, &so, on_event,
                                            &st, why, sizeof why);
    if (!sub) {
        cli_error("cannot subscribe to %s as group %s: %s", topic, group, why);
        evbus_close(bus);
        return CLI_FAIL;
    }
    if (cli_verbose)
        fprintf(stderr, "evbus: tailing %s as group %s\n", topic, group);
    cli_stop_on_signals(bus);

    int rc = CLI_OK;
    uint64_t undecodable = 0;
    size_t max_bytes = cli_max_event_bytes(url);
    long long idle_since = cli_now_ms();
    long first_wait_ms = timeout_ms ? cli_first_wait_ms(bus, timeout_ms) : 0;
    int got_any = 0;
    for (;;) {
        int slice = 1000;
        if (timeout_ms) {
            long long left = idle_since +
                             (got_any ? timeout_ms : first_wait_ms) -
                             cli_now_ms();
            if (left <= 0) {
                if (st.count && st.printed < st.count) {
                    cli_error("timed out after %.3g s idle with %ld of %ld "
                              "events", (double)timeout_ms / 1000.0,
                              st.printed, st.count);
                    rc = CLI_FAIL;
                }
                break;
            }
            if (left < slice)
                slice = (int)left;
        }
        int n = evbus_poll(bus, slice);
        if (n < 0) {
            cli_error("consuming %s failed: %s", topic, evbus_strerror(n));
            rc = CLI_FAIL;
            break;
        }
        if (n > 0) {
            idle_since = cli_now_ms();
            got_any = 1;
        }
        report_undecodable(sub, topic, private ? TAIL_DLQ_SINK : NULL,
                           max_bytes, &undecodable);
        if (st.write_failed || cli_stop_requested() ||
            (st.count && st.printed >= st.count))
            break;
    }
    cli_stop_on_signals(NULL);
    evbus_close(bus);
    if (st.write_failed && st.write_failed != EPIPE) {
        cli_error("writing to standard output failed: %s",
                  strerror(st.write_failed));
        rc = CLI_FAIL;
    }
    return rc;
}
