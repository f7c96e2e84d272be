/*
 * evbus publish URL TOPIC --type T --source S [options]
 *
 * Builds the event(s) from the command line, checks the data before
 * touching the bus (invalid JSON is reported with its byte position) and
 * publishes: one event synchronously, several with publish_async + flush so
 * every failure is reported.
 */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "commands.h"
#include "common.h"
#include "publish.h"

static const char publish_usage[] =
    "usage: evbus publish URL TOPIC --type TYPE --source SOURCE [options]\n"
    "       evbus publish URL TOPIC --event FILE|-\n"
    "\n"
    "Publishes CloudEvents to TOPIC and prints their ids.\n"
    "\n"
    "  -t, --type TYPE          event type, e.g. todos.task.created "
    "(required)\n"
    "  -s, --source SOURCE      event source, e.g. /todo-svc (required)\n"
    "  -S, --subject SUBJECT    subject attribute\n"
    "  -T, --time RFC3339       time attribute (default: now)\n"
    "  -D, --dataschema URI     dataschema attribute (an absolute URI)\n"
    "  -e, --ext NAME=VALUE     string extension attribute (repeatable)\n"
    "  -I, --ext-int NAME=N     integer extension attribute (repeatable)\n"
    "  -B, --ext-bool NAME=true|false\n"
    "                           boolean extension attribute (repeatable)\n"
    "  -d, --data JSON          data given inline (JSON unless "
    "--content-type)\n"
    "  -d, --data @FILE         data read from FILE\n"
    "  -d, --data -             data read from standard input\n"
    "  -c, --content-type CT    data content type (default application/json);\n"
    "                           a non-JSON type sends the bytes unchanged\n"
    "  -i, --id ID              event id (default: a fresh UUID)\n"
    "  -n, --count N            publish N events (fresh id each) with\n"
    "                           asynchronous publishing, then wait for all\n"
    "  -E, --event FILE|-       publish structured CloudEvents JSON from FILE\n"
    "                           or standard input: one event, or one per "
    "line;\n"
    "                           excludes the attribute and data options\n"
    "  -w, --wait SEC           how long one publish waits for room while the\n"
    "                           broker applies back-pressure (EVBUS_EAGAIN)\n"
    "                           before it fails (default 30)\n"
    "  -q, --quiet              do not print the ids\n"
    "  -v, --verbose            library log on stderr (-vv: debug)\n"
    "  -h, --help               this text\n"
    "\n"
    "Every value is checked before the bus is opened: text must be valid\n"
    "UTF-8 without control characters, the encoded event at most the URL's\n"
    "max_event_bytes (default 1048576); --data and --event inputs are read\n"
    "no further than that. When the broker applies back-pressure\n"
    "(EVBUS_EAGAIN) publish waits for room, up to --wait seconds per event.\n"
    "\n"
    "Exit status: 0 when every event was accepted by the broker, 1 when any\n"
    "publish failed, 2 on a usage error or invalid input (nothing published;\n"
    "with --event, the events before the invalid one were published).\n";

typedef struct {
    long failed;
    long accepted;
    long queued;
    int print_ids;
} async_state_t;

static void on_delivery(const evbus_event_t *ev, int err, void *opaque)
{
    async_state_t *st = opaque;
    if (err == EVBUS_OK) {
        st->accepted++;
        if (st->print_ids)
            printf("%s\n", evbus_event_id(ev));
    } else {
        st->failed++;
        cli_error("publish of %s failed: %s", evbus_event_id(ev),
                  evbus_strerror(err));
    }
}

/* How long one publish waits in all for room while the broker applies
 * back-pressure (EVBUS_EAGAIN) before it is reported as failed: --wait,
 * default 30 s. */
static long backpressure_wait_ms = 30000;

static void sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* Why a publish was refused; returns the exit code it calls for. Invalid
 * input (name, size, event) is 2 like every other invalid input. */
static int publish_failed(const char *topic, const evbus_event_t *ev,
                          size_t max_bytes, int err)
{
    if (err == EVBUS_ETOOBIG) {
        size_t len = 0;
        free(evbus_event_to_json(ev, &len));
        cli_error("publish to %s refused: event %s is %zu bytes encoded, "
                  "over the bus's size limit (max_event_bytes %zu)",
                  topic, evbus_event_id(ev), len, max_bytes);
        return CLI_USAGE;
    }
    if (err == EVBUS_EAGAIN)
        cli_error("publish to %s failed after waiting %.3g s for room "
                  "(--wait): %s",
                  topic, (double)backpressure_wait_ms / 1000.0,
                  evbus_strerror(err));
    else
        cli_error("publish to %s failed: %s", topic, evbus_strerror(err));
    return err == EVBUS_EINVAL ? CLI_USAGE : CLI_FAIL;
}

/* evbus_publish, trying again on EVBUS_EAGAIN with a growing pause for up
 * to backpressure_wait_ms. */
static int publish_sync(evbus_t *bus, const char *topic,
                        const evbus_event_t *ev)
{
    long long deadline = cli_now_ms() + backpressure_wait_ms;
    long pause = 10;
    for (;;) {
        int rc = evbus_publish(bus, topic, ev);
        if (rc != EVBUS_EAGAIN || cli_stop_requested() ||
            cli_now_ms() >= deadline)
            return rc;
        sleep_ms(pause);
        pause = pause < 500 ? pause * 2 : 1000;
    }
}

/* evbus_publish_async; on EVBUS_EAGAIN (max_pending unconfirmed) it lets
 * confirmations arrive with evbus_flush and tries again, for up to
 * backpressure_wait_ms without any confirmation. */
static int queue_async(evbus_t *bus, const char *topic, const evbus_event_t *ev,
                       async_state_t *st)
{
    long long deadline = cli_now_ms() + backpressure_wait_ms;
    long settled = st->accepted + st->failed;
    for (;;) {
        int rc = evbus_publish_async(bus, topic, ev, on_delivery, st);
        if (rc == EVBUS_OK)
            st->queued++;
        if (rc != EVBUS_EAGAIN || cli_stop_requested())
            return rc;
        if (st->accepted + st->failed != settled) {
            settled = st->accepted + st->failed;
            deadline = cli_now_ms() + backpressure_wait_ms;
        } else if (cli_now_ms() >= deadline) {
            return rc;
        }
        int frc = evbus_flush(bus, 100);
        if (frc != EVBUS_OK && frc != EVBUS_ETIMEDOUT)
            return frc;
    }
}

/* Waits for every queued publish; returns CLI_OK when all were accepted. */
static int finish_async(evbus_t *bus, const char *topic, async_state_t *st,
                        long wanted)
{
    const int flush_ms = 60000;
    int rc = evbus_flush(bus, flush_ms);
    fflush(stdout);
    if (rc == EVBUS_ETIMEDOUT)
        cli_error("%ld publishes still unconfirmed after %d s",
                  st->queued - st->accepted - st->failed, flush_ms / 1000);
    else if (rc != EVBUS_OK)
        cli_error("flush failed: %s", evbus_strerror(rc));
    if (st->failed || rc != EVBUS_OK || st->accepted != wanted) {
        cli_error("%ld of %ld events published to %s", st->accepted, wanted,
                  topic);
        return CLI_FAIL;
    }
    return CLI_OK;
}

static int publish_count(evbus_t *bus, const char *topic,
                         const publish_args_t *a, long count)
{
    async_state_t st = {0, 0, 0, !cli_quiet};
    int rc = CLI_OK;
    for (long i = 0; i < count && !cli_stop_requested(); i++) {
        evbus_event_t *ev = pub_build_event(a);
        if (!ev) {
            rc = CLI_USAGE;
            break;
        }
        int qrc = queue_async(bus, topic, ev, &st);
        if (qrc != EVBUS_OK)
            rc = publish_failed(topic, ev, a->max_bytes, qrc);
        evbus_event_free(ev);
        if (rc != CLI_OK)
            break;
    }
    int frc = finish_async(bus, topic, &st, count);
    return rc != CLI_OK ? rc : frc;
}

/* --event: first is the event already read (and checked) before the bus
 * was opened; the rest are read and published one by one. */
static int publish_events(evbus_t *bus, const char *topic, event_reader_t *r,
                          evbus_event_t *first, size_t max_bytes)
{
    async_state_t st = {0, 0, 0, !cli_quiet};
    int rc = CLI_OK;
    evbus_event_t *ev = first;
    while (ev && !cli_stop_requested()) {
        int qrc = queue_async(bus, topic, ev, &st);
        if (qrc != EVBUS_OK)
            rc = publish_failed(topic, ev, max_bytes, qrc);
        evbus_event_free(ev);
        ev = NULL;
        if (rc != CLI_OK)
            break;
        /* A stream (kcat | evbus publish --event -) may pause for long:
         * confirm and print what was published before waiting for more. */
        if (evr_would_block(r)) {
            int frc = evbus_flush(bus, 60000);
            fflush(stdout);
            if (frc != EVBUS_OK && frc != EVBUS_ETIMEDOUT)
                cli_error("flush failed: %s", evbus_strerror(frc));
        }
        if (evr_next(r, &ev) < 0)
            rc = CLI_USAGE;
    }
    evbus_event_free(ev);
    int frc = finish_async(bus, topic, &st, st.queued);
    return rc != CLI_OK ? rc : frc;
}

int cmd_publish(int argc, char **argv)
{
    static const struct option longs[] = {
        {"type", required_argument, NULL, 't'},
        {"source", required_argument, NULL, 's'},
        {"subject", required_argument, NULL, 'S'},
        {"time", required_argument, NULL, 'T'},
        {"dataschema", required_argument, NULL, 'D'},
        {"ext", required_argument, NULL, 'e'},
        {"ext-int", required_argument, NULL, 'I'},
        {"ext-bool", required_argument, NULL, 'B'},
        {"data", required_argument, NULL, 'd'},
        {"content-type", required_argument, NULL, 'c'},
        {"id", required_argument, NULL, 'i'},
        {"count", required_argument, NULL, 'n'},
        {"event", required_argument, NULL, 'E'},
        {"wait", required_argument, NULL, 'w'},
        {"quiet", no_argument, NULL, 'q'},
        {"verbose", no_argument, NULL, 'v'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0}};
    publish_args_t a;
    memset(&a, 0, sizeof a);
    const char *data_spec = NULL, *event_path = NULL;
    long count = 1;
    int attrs = 0; /* options that describe the event itself */
    int c;
    optind = 0;
    while ((c = getopt_long(argc, argv, "t:s:S:T:D:e:I:B:d:c:i:n:E:w:qvh",
                            longs, NULL)) != -1) {
        switch (c) {
        case 't':
            a.type = optarg;
            attrs++;
            break;
        case 's':
            a.source = optarg;
            attrs++;
            break;
        case 'S':
            a.subject = optarg;
            attrs++;
            break;
        case 'T':
            a.time = optarg;
            attrs++;
            break;
        case 'D':
            a.dataschema = optarg;
            attrs++;
            break;
        case 'e':
        case 'I':
        case 'B':
            if (a.n_ext == PUB_MAX_EXTS)
                return cli_usage_error("publish",
                                       "at most %d extension "
                                       "options",
                                       PUB_MAX_EXTS);
            a.ext[a.n_ext].spec = optarg;
            a.ext[a.n_ext++].kind = c == 'e'   ? EXT_STRING
                                    : c == 'I' ? EXT_INT
                                               : EXT_BOOL;
            attrs++;
            break;
        case 'd':
            if (data_spec)
                return cli_usage_error("publish", "--data given twice");
            data_spec = optarg;
            attrs++;
            break;
        case 'c':
            a.content_type = optarg;
            attrs++;
            break;
        case 'i':
            a.id = optarg;
            attrs++;
            break;
        case 'E':
            event_path = optarg;
            break;
        case 'w':
            if (cli_parse_seconds("publish", "--wait", optarg,
                                  &backpressure_wait_ms) != 0)
                return CLI_USAGE;
            break;
        case 'n':
            if (cli_parse_long("publish", "--count", optarg, 1, 100000000L,
                               &count) != 0)
                return CLI_USAGE;
            break;
        case 'q': cli_quiet = 1; break;
        case 'v': cli_verbose++; break;
        case 'h': fputs(publish_usage, stdout); return CLI_OK;
        default:
            fprintf(stderr, "Try 'evbus publish --help' for more "
                            "information.\n");
            return CLI_USAGE;
        }
    }
    if (argc - optind != 2)
        return cli_usage_error("publish", "expected URL and TOPIC, got %d "
                               "argument%s", argc - optind,
                               argc - optind == 1 ? "" : "s");
    const char *url = argv[optind], *topic = argv[optind + 1];
    if (event_path && (attrs || count > 1))
        return cli_usage_error("publish",
                               "--event reads whole events: it "
                               "cannot be combined with --type, --source, "
                               "--data, --count or other attribute options");
    if (!event_path && (!a.type || !*a.type))
        return cli_usage_error("publish", "--type is required");
    if (!event_path && (!a.source || !*a.source))
        return cli_usage_error("publish", "--source is required");
    if (a.id && count > 1)
        return cli_usage_error("publish", "--id cannot be combined with "
                               "--count > 1 (every event needs its own id)");
    if (cli_check_name("publish", "TOPIC", topic, url) != 0)
        return CLI_USAGE;
    a.max_bytes = cli_max_event_bytes(url);

    /* Read and check the (first) event before opening the bus, so bad
     * input never touches the broker. */
    int rc = CLI_OK;
    event_reader_t reader;
    memset(&reader, 0, sizeof reader);
    evbus_event_t *ev = NULL;
    if (event_path) {
        if (evr_open(&reader, event_path, a.max_bytes) != 0) {
            cli_error("cannot read --event %s: %s", event_path,
                      strerror(errno));
            return CLI_FAIL;
        }
        int got = evr_next(&reader, &ev);
        if (got == 0)
            cli_error("--event %s holds no event", reader.name);
        if (got <= 0)
            rc = CLI_USAGE;
    } else if (data_spec && (rc = pub_load_data(&a, data_spec)) == CLI_OK) {
        ev = pub_build_event(&a);
        rc = ev ? CLI_OK : CLI_USAGE;
    } else if (!data_spec) {
        ev = pub_build_event(&a);
        rc = ev ? CLI_OK : CLI_USAGE;
    }
    if (rc == CLI_OK && pub_check_size(ev, a.max_bytes, "the event") != 0)
        rc = CLI_USAGE;
    evbus_t *bus = rc == CLI_OK ? cli_open(url) : NULL;
    if (rc == CLI_OK && !bus)
        rc = CLI_FAIL;
    if (bus && cli_check_name_bus("publish", "TOPIC", topic, bus) != 0)
        rc = CLI_USAGE;
    if (rc == CLI_OK) {
        cli_stop_on_signals(bus);
        if (event_path) {
            rc = publish_events(bus, topic, &reader, ev, a.max_bytes);
            ev = NULL; /* publish_events frees it */
        } else if (count == 1) {
            int prc = publish_sync(bus, topic, ev);
            if (prc != EVBUS_OK)
                rc = publish_failed(topic, ev, a.max_bytes, prc);
            else if (!cli_quiet)
                printf("%s\n", evbus_event_id(ev));
        } else {
            rc = publish_count(bus, topic, &a, count);
        }
        cli_stop_on_signals(NULL);
    }
    evbus_event_free(ev);
    evbus_close(bus);
    evr_close(&reader);
    free(a.data);
    if (fflush(stdout) != 0 && rc == CLI_OK) {
        cli_error("writing the ids failed: %s", strerror(errno));
        rc = CLI_FAIL;
    }
    return rc;
}
