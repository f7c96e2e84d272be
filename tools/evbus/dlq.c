/*
 * evbus dlq list URL TOPIC      shows the dead letters of TOPIC
 * evbus dlq show URL TOPIC --id ID   shows one in full, and why
 * evbus dlq replay URL TOPIC    republishes them to their original topic
 *
 * Dead letters live on TOPIC.dlq (or --dlq-topic) and carry dlqreason,
 * dlqattempts and dlqtopic (docs/concepts.md). Both commands read the
 * dead-letter topic as a consumer group and stop after a short idle time:
 * list and replay --id use a throwaway group so they consume nothing that
 * matters; replay --all uses a stable group so running it again replays only
 * what arrived since. A topic is a log: replayed dead letters stay on it.
 *
 * A dead letter whose data had to be cut to fit max_event_bytes carries
 * dlqtruncated (the original data length): it is listed as such and never
 * replayed, since its data is no longer the event's. Reading is bounded by
 * the URL's max_event_bytes like any consumer: a dead letter over it is not
 * shown (and counted on stderr), and a throwaway group's copies of such
 * bytes go to a sink topic of their own, not to TOPIC.dlq.dlq.
 */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "commands.h"
#include "common.h"
#include "format.h"

#define UNDECODABLE_TYPE "evbus.deadletter.undecodable"
#define REPLAY_GROUP "evbus-dlq-replay"
/* Where throwaway groups dead-letter what they cannot read. */
#define DLQ_READ_SINK "evbus.dlq.sink"

static const char dlq_usage[] =
    "usage: evbus dlq list URL TOPIC [options]\n"
    "       evbus dlq show URL TOPIC --id ID [options]\n"
    "       evbus dlq replay URL TOPIC (--id ID | --all) [options]\n"
    "\n"
    "Inspects and republishes the dead letters of TOPIC (read from\n"
    "TOPIC.dlq unless --dlq-topic names another topic).\n"
    "\n"
    "list: one line per dead letter: id, type, attempts (dlqattempts), the\n"
    "  topic it came from (dlqtopic) and the reason (dlqreason). Reads with a\n"
    "  throwaway consumer group, so listing consumes nothing.\n"
    "      --format FMT         table (default), json (the dead letters as\n"
    "                           CloudEvents JSON lines) or pretty\n"
    "  A dead letter whose data was cut to fit max_event_bytes (dlqtruncated)\n"
    "  says so in REASON: how many of the original bytes were kept.\n"
    "\n"
    "show: the dead letter with this id in full: reason, attempts, topic,\n"
    "  whether and why its data was truncated, then the event (pretty).\n"
    "      --id ID              the dead letter to show (required)\n"
    "\n"
    "replay: republishes dead letters to their original topic (dlqtopic,\n"
    "  else TOPIC) with dlqreason, dlqattempts and dlqtopic removed and the\n"
    "  same id, and prints what it replayed. The dead letters stay on the\n"
    "  dead-letter topic.\n"
    "      --id ID              replay the dead letter with this id (again\n"
    "                           each time it is asked for)\n"
    "      --all                replay every dead letter not replayed before:\n"
    "                           the consumer group '" REPLAY_GROUP "' remembers\n"
    "                           what --all already replayed\n"
    "      --group GROUP        the group --all uses (default " REPLAY_GROUP ")\n"
    "  Dead letters of type " UNDECODABLE_TYPE " (bytes that\n"
    "  were not a CloudEvent) are replayed as the original raw bytes.\n"
    "  Truncated dead letters (dlqtruncated) are never replayed: their data\n"
    "  is only the head of the original; each is named and the exit status\n"
    "  is 1.\n"
    "\n"
    "Both:\n"
    "      --dlq-topic TOPIC    the dead-letter topic (default TOPIC.dlq)\n"
    "  -t, --timeout SEC        stop after SEC seconds without a dead letter\n"
    "                           (default 2; on kafka:// at least 10 s for the\n"
    "                           first one, while the group is joined)\n"
    "  -q, --quiet              no summary line on stderr\n"
    "  -v, --verbose            library log on stderr (-vv: debug)\n"
    "  -h, --help               this text\n"
    "\n"
    "Dead letters larger than the URL's max_event_bytes (default 1048576)\n"
    "are not read; their number is reported on stderr.\n"
    "\n"
    "Exit status: 0 on success (also when there are no dead letters), 1 when\n"
    "the bus fails, a replay fails or is refused, or --id was not found, 2 on\n"
    "usage errors.\n";

typedef enum { DLQ_LIST, DLQ_SHOW, DLQ_REPLAY } dlq_mode_t;

typedef struct {
    dlq_mode_t mode;
    int format;            /* -1 = table, else fmt_kind_t */
    const char *topic;     /* TOPIC as given: the fallback replay target */
    const char *want_id;   /* replay --id */
    long seen, replayed, matched, refused;
    int failed;            /* a replay or write failed: stop */
    evbus_t *bus;
} dlq_state_t;

static const char *or_dash(const char *s) { return s && *s ? s : "-"; }

/* dlqreason, plus what truncation kept when the data was cut. */
static void reason_text(const evbus_event_t *ev, char *buf, size_t n)
{
    const char *reason = or_dash(evbus_event_ext(ev, "dlqreason"));
    const char *orig = evbus_event_ext(ev, "dlqtruncated");
    if (orig)
        snprintf(buf, n, "%s [data truncated to fit max_event_bytes: %zu of "
                 "%s bytes kept]", reason, evbus_event_data_len(ev), orig);
    else
        snprintf(buf, n, "%s", reason);
}

static int print_row(const evbus_event_t *ev, int first)
{
    char reason[1024];
    reason_text(ev, reason, sizeof reason);
    if (first)
        printf("%-36s  %-28s  %8s  %-16s  %s\n", "ID", "TYPE", "ATTEMPTS",
               "TOPIC", "REASON");
    printf("%-36s  %-28s  %8s  %-16s  %s\n", evbus_event_id(ev),
           evbus_event_type(ev), or_dash(evbus_event_ext(ev, "dlqattempts")),
           or_dash(evbus_event_ext(ev, "dlqtopic")), reason);
    return fflush(stdout) == 0 && !ferror(stdout) ? 0 : -1;
}

/* dlq show: the dead-letter attributes spelled out, then the event. */
static int print_details(const evbus_event_t *ev)
{
    const char *orig = evbus_event_ext(ev, "dlqtruncated");
    printf("dead letter  %s (%s)\n", evbus_event_id(ev), evbus_event_type(ev));
    printf("from topic   %s\n", or_dash(evbus_event_ext(ev, "dlqtopic")));
    printf("attempts     %s\n", or_dash(evbus_event_ext(ev, "dlqattempts")));
    printf("reason       %s\n", or_dash(evbus_event_ext(ev, "dlqreason")));
    if (orig) {
        const char *ct = evbus_event_ext(ev, "dlqdatacontenttype");
        printf("truncated    yes: the data was %s bytes%s%s; the dead letter "
               "keeps the first %zu as application/octet-stream so that it "
               "fits max_event_bytes. It cannot be replayed.\n", orig,
               ct ? " of " : "", ct ? ct : "", evbus_event_data_len(ev));
    } else {
        printf("truncated    no\n");
    }
    fputc('\n', stdout);
    return fmt_event(ev, FMT_PRETTY, fmt_want_color());
}

/* Republishes one dead letter. Returns EVBUS_OK or the publish error. */
static int replay_one(dlq_state_t *st, const evbus_event_t *dl)
{
    const char *target = evbus_event_ext(dl, "dlqtopic");
    if (!target || !*target)
        target = st->topic;
    int rc;
    const char *orig = evbus_event_ext(dl, "dlqtruncated");
    if (orig) {
        /* The data is only the head of what failed: publishing it would
         * hand consumers a different event under the same id. */
        cli_error("not replaying %s: its data was truncated to %zu of %s "
                  "bytes to fit max_event_bytes ('evbus dlq show' tells "
                  "more)", evbus_event_id(dl), evbus_event_data_len(dl),
                  orig);
        st->refused++;
        return EVBUS_OK;
    }
    if (strcmp(evbus_event_type(dl), UNDECODABLE_TYPE) == 0) {
        /* The payload was never an event: send back the exact bytes. */
        size_t len = evbus_event_data_len(dl);
        rc = evbus_publish_raw(st->bus, target, evbus_event_data(dl), len);
        if (rc == EVBUS_OK)
            printf("replayed %s (%zu raw bytes) to %s\n", evbus_event_id(dl),
                   len, target);
    } else {
        evbus_event_t *ev = evbus_event_clone(dl);
        if (!ev)
            return EVBUS_ENOMEM;
        evbus_event_set_ext(ev, "dlqreason", NULL);
        evbus_event_set_ext(ev, "dlqattempts", NULL);
        evbus_event_set_ext(ev, "dlqtopic", NULL);
        rc = evbus_publish(st->bus, target, ev);
        evbus_event_free(ev);
        if (rc == EVBUS_OK)
            printf("replayed %s to %s\n", evbus_event_id(dl), target);
    }
    if (rc != EVBUS_OK)
        cli_error("replaying %s to %s failed: %s", evbus_event_id(dl), target,
                  evbus_strerror(rc));
    fflush(stdout);
    return rc;
}

static evbus_result_t on_dead_letter(const evbus_event_t *ev, void *opaque)
{
    dlq_state_t *st = opaque;
    if (st->failed) {
        evbus_stop(st->bus);
        return EVBUS_RETRY; /* not handled: keep it for the group */
    }
    st->seen++;
    if (st->mode == DLQ_SHOW) {
        if (strcmp(evbus_event_id(ev), st->want_id) != 0)
            return EVBUS_ACK;
        if (st->matched++ > 0)
            fputc('\n', stdout);
        if (print_details(ev) != 0) {
            st->failed = errno == EPIPE ? -1 : 1;
            evbus_stop(st->bus);
        }
        return EVBUS_ACK;
    }
    if (st->mode == DLQ_LIST) {
        int rc = st->format < 0 ? print_row(ev, st->seen == 1)
                                : fmt_event(ev, (fmt_kind_t)st->format,
                                            st->format == FMT_PRETTY &&
                                                fmt_want_color());
        if (rc != 0) {
            st->failed = errno == EPIPE ? -1 : 1;
            evbus_stop(st->bus);
        }
        return EVBUS_ACK;
    }
    if (st->want_id) {
        if (strcmp(evbus_event_id(ev), st->want_id) != 0)
            return EVBUS_ACK;
        /* The same event may have been dead-lettered more than once; one
         * replay is enough. */
        if (st->matched++ > 0)
            return EVBUS_ACK;
    }
    if (replay_one(st, ev) != EVBUS_OK) {
        st->failed = 1;
        evbus_stop(st->bus);
        return EVBUS_RETRY;
    }
    if (!evbus_event_ext(ev, "dlqtruncated"))
        st->replayed++;
    return EVBUS_ACK;
}

/* Reads the dead-letter topic until idle_ms pass without a dead letter, a
 * failure or a signal. Returns CLI_OK or CLI_FAIL. */
static int drain(dlq_state_t *st, const char *dlq_topic, const char *group,
                 int throwaway, long idle_ms)
{
    evbus_sub_opts_t so;
    evbus_sub_opts_init(&so);
    /* RETRY here only means "not handled in this run" (a replay failed):
     * never let repeated failed runs move a dead letter on to DLQ.dlq. */
    evbus_retry_policy_t forever;
    evbus_retry_policy_init(&forever);
    forever.max_attempts = 0;
    so.retry = &forever;
    /* Like every consumer the reader dead-letters what it cannot decode
     * (a dead letter over this URL's max_event_bytes); a throwaway group
     * must not add those copies to DLQ.dlq. */
    if (throwaway)
        so.dlq_topic = DLQ_READ_SINK;
    char why[512];
    evbus_sub_t *sub = evbus_subscribe_opts(st->bus, dlq_topic, group, &so,
                                            on_dead_letter, st, why,
                                            sizeof why);
    if (!sub) {
        cli_error("cannot read %s as group %s: %s", dlq_topic, group, why);
        return CLI_FAIL;
    }
    cli_stop_on_signals(st->bus);
    long long idle_since = cli_now_ms();
    long first_wait_ms = cli_first_wait_ms(st->bus, idle_ms);
    int got_any = 0;
    int rc = CLI_OK;
    while (!st->failed && !cli_stop_requested()) {
        long long left = idle_since + (got_any ? idle_ms : first_wait_ms) -
                         cli_now_ms();
        if (left <= 0)
            break;
        int n = evbus_poll(st->bus, left < 500 ? (int)left : 500);
        if (n < 0) {
            cli_error("reading %s failed: %s", dlq_topic, evbus_strerror(n));
            rc = CLI_FAIL;
            break;
        }
        if (n > 0) {
            idle_since = cli_now_ms();
            got_any = 1;
        }
    }
    cli_stop_on_signals(NULL);
    evbus_sub_metrics_t m;
    evbus_sub_metrics_init(&m);
    if (evbus_sub_metrics_get(sub, &m) == EVBUS_OK && m.undecodable)
        cli_error("%llu entr%s of %s could not be read (larger than "
                  "max_event_bytes of this URL, or not a CloudEvent): open "
                  "the bus with a larger max_event_bytes=N to see %s",
                  (unsigned long long)m.undecodable,
                  m.undecodable == 1 ? "y" : "ies", dlq_topic,
                  m.undecodable == 1 ? "it" : "them");
    if (st->failed > 0)
        rc = CLI_FAIL;
    return rc;
}

int cmd_dlq(int argc, char **argv)
{
    static const struct option longs[] = {
        {"id", required_argument, NULL, 'i'},
        {"all", no_argument, NULL, 'a'},
        {"group", required_argument, NULL, 'g'},
        {"dlq-topic", required_argument, NULL, 'D'},
        {"format", required_argument, NULL, 'f'},
        {"timeout", required_argument, NULL, 't'},
        {"quiet", no_argument, NULL, 'q'},
        {"verbose", no_argument, NULL, 'v'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0}};
    if (argc < 2 || strcmp(argv[1], "--help") == 0 ||
        strcmp(argv[1], "-h") == 0) {
        if (argc < 2)
            return cli_usage_error("dlq", "expected 'list', 'show' or "
                                   "'replay'");
        fputs(dlq_usage, stdout);
        return CLI_OK;
    }
    dlq_state_t st;
    memset(&st, 0, sizeof st);
    st.format = -1;
    const char *cmd;
    if (strcmp(argv[1], "list") == 0) {
        st.mode = DLQ_LIST;
        cmd = "dlq list";
    } else if (strcmp(argv[1], "show") == 0) {
        st.mode = DLQ_SHOW;
        cmd = "dlq show";
    } else if (strcmp(argv[1], "replay") == 0) {
        st.mode = DLQ_REPLAY;
        cmd = "dlq replay";
    } else {
        return cli_usage_error("dlq", "unknown dlq command '%s' (expected "
                               "'list', 'show' or 'replay')", argv[1]);
    }
    argc--;
    argv++;
    argv[0] = st.mode == DLQ_LIST   ? "evbus dlq list"
              : st.mode == DLQ_SHOW ? "evbus dlq show"
                                    : "evbus dlq replay";

    const char *dlq_topic = NULL, *group = NULL;
    int all = 0;
    long idle_ms = -1;
    int c;
    optind = 0;
    while ((c = getopt_long(argc, argv, "i:ag:D:f:t:qvh", longs, NULL)) != -1) {
        switch (c) {
        case 'i': st.want_id = optarg; break;
        case 'a': all = 1; break;
        case 'g': group = optarg; break;
        case 'D': dlq_topic = optarg; break;
        case 'f':
            if (strcmp(optarg, "table") == 0)
                st.format = -1;
            else if ((st.format = fmt_parse(optarg)) < 0)
                return cli_usage_error(cmd, "--format is table, json or "
                                       "pretty, not '%s'", optarg);
            break;
        case 't':
            if (cli_parse_seconds(cmd, "--timeout", optarg, &idle_ms) != 0)
                return CLI_USAGE;
            break;
        case 'q': cli_quiet = 1; break;
        case 'v': cli_verbose++; break;
        case 'h': fputs(dlq_usage, stdout); return CLI_OK;
        default:
            fprintf(stderr, "Try 'evbus dlq --help' for more information.\n");
            return CLI_USAGE;
        }
    }
    if (argc - optind != 2)
        return cli_usage_error(cmd, "expected URL and TOPIC, got %d "
                               "argument%s", argc - optind,
                               argc - optind == 1 ? "" : "s");
    const char *url = argv[optind];
    st.topic = argv[optind + 1];
    if (st.mode == DLQ_LIST && (st.want_id || all || group))
        return cli_usage_error(cmd, "--id, --all and --group belong to "
                               "'dlq replay' and 'dlq show'");
    if (st.mode == DLQ_SHOW) {
        if (!st.want_id || all || group)
            return cli_usage_error(cmd, "give --id ID (and no --all or "
                                   "--group)");
        if (st.format != -1)
            return cli_usage_error(cmd, "--format belongs to 'dlq list'");
    }
    if (st.mode == DLQ_REPLAY) {
        if (!!st.want_id == !!all)
            return cli_usage_error(cmd, "give either --id ID or --all");
        if (st.format != -1)
            return cli_usage_error(cmd, "--format belongs to 'dlq list'");
        if (group && !all)
            return cli_usage_error(cmd, "--group only applies to --all");
        if (group && !*group)
            return cli_usage_error(cmd, "--group is empty");
    }
    if (cli_check_name(cmd, "TOPIC", st.topic, url) != 0 ||
        (dlq_topic &&
         cli_check_name(cmd, "--dlq-topic", dlq_topic, url) != 0) ||
        (group && cli_check_name(cmd, "--group", group, url) != 0))
        return CLI_USAGE;
    char dlq_buf[512];
    if (!dlq_topic) {
        snprintf(dlq_buf, sizeof dlq_buf, "%s.dlq", st.topic);
        dlq_topic = dlq_buf;
    }
    char throwaway[160];
    if (!all) {
        cli_private_group(throwaway, sizeof throwaway, "evbus-dlq");
        group = throwaway;
    } else if (!group) {
        group = REPLAY_GROUP;
    }

    st.bus = cli_open(url);
    if (!st.bus)
        return CLI_FAIL;
    if (cli_check_name_bus(cmd, "--dlq-topic", dlq_topic, st.bus) != 0 ||
        cli_check_name_bus(cmd, "--group", group, st.bus) != 0) {
        evbus_close(st.bus);
        return CLI_USAGE;
    }
    if (idle_ms < 0)
        idle_ms = 2000;
    int rc = drain(&st, dlq_topic, group, !all, idle_ms);
    evbus_close(st.bus);

    if (st.failed < 0) /* the reader of stdout went away: not an error */
        return CLI_OK;
    if (rc == CLI_OK && st.mode != DLQ_LIST && st.want_id && !st.matched) {
        cli_error("no dead letter with id %s in %s (%ld dead letter%s read)",
                  st.want_id, dlq_topic, st.seen, st.seen == 1 ? "" : "s");
        return CLI_FAIL;
    }
    if (!cli_quiet) {
        if (st.mode == DLQ_LIST)
            fprintf(stderr, "%ld dead letter%s in %s\n", st.seen,
                    st.seen == 1 ? "" : "s", dlq_topic);
        else if (st.mode == DLQ_REPLAY)
            fprintf(stderr, "%ld dead letter%s replayed from %s%s\n",
                    st.replayed, st.replayed == 1 ? "" : "s", dlq_topic,
                    st.refused ? " (truncated ones refused)" : "");
    }
    return rc == CLI_OK && st.refused ? CLI_FAIL : rc;
}
