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

#include <cjson/cJSON.h>

#include "commands.h"
#include "common.h"

static const char publish_usage[] =
    "usage: evbus publish URL TOPIC --type TYPE --source SOURCE [options]\n"
    "\n"
    "Publishes a CloudEvent to TOPIC and prints its id.\n"
    "\n"
    "  -t, --type TYPE          event type, e.g. todos.task.created (required)\n"
    "  -s, --source SOURCE      event source, e.g. /todo-svc (required)\n"
    "  -S, --subject SUBJECT    subject attribute\n"
    "  -e, --ext NAME=VALUE     extension attribute (repeatable)\n"
    "  -d, --data JSON          data given inline (JSON unless --content-type)\n"
    "  -d, --data @FILE         data read from FILE\n"
    "  -d, --data -             data read from standard input\n"
    "  -c, --content-type CT    data content type (default application/json);\n"
    "                           a non-JSON type sends the bytes unchanged\n"
    "  -i, --id ID              event id (default: a fresh UUID)\n"
    "  -n, --count N            publish N events (fresh id each) with\n"
    "                           asynchronous publishing, then wait for all\n"
    "  -q, --quiet              do not print the ids\n"
    "  -v, --verbose            library log on stderr (-vv: debug)\n"
    "  -h, --help               this text\n"
    "\n"
    "Exit status: 0 when every event was accepted by the broker, 1 when any\n"
    "publish failed, 2 on a usage error or invalid data (nothing published).\n";

#define MAX_EXTS 64

typedef struct {
    const char *type, *source, *subject, *id, *content_type;
    const char *ext[MAX_EXTS];
    int n_ext;
    char *data;   /* owned; NULL = no data */
    size_t data_len;
    int data_is_json;
} publish_args_t;

/* application/json, text/json, application/foo+json (what the library
 * treats as JSON, see evbus_event_set_data). */
static int is_json_type(const char *ct)
{
    size_t n = strcspn(ct, ";");
    while (n > 0 && ct[n - 1] == ' ')
        n--;
    const char *slash = memchr(ct, '/', n);
    if (!slash)
        return 0;
    size_t sub = n - (size_t)(slash + 1 - ct);
    const char *s = slash + 1;
    return (sub == 4 && strncasecmp(s, "json", 4) == 0) ||
           (sub > 5 && strncasecmp(s + sub - 5, "+json", 5) == 0);
}

/* Checks JSON text with cJSON to report where it breaks: byte offset,
 * line and column, and the text there. Returns 0 when valid. */
static int check_json(const char *what, const char *buf, size_t len)
{
    const char *nul = memchr(buf, '\0', len);
    if (nul) {
        cli_error("%s is not valid JSON: NUL byte at byte %zu", what,
                  (size_t)(nul - buf));
        return -1;
    }
    const char *end = NULL;
    /* len + 1 includes the terminating NUL, which is how cJSON checks that
     * nothing but whitespace follows the value. */
    cJSON *doc = cJSON_ParseWithLengthOpts(buf, len + 1, &end, 1);
    if (doc) {
        cJSON_Delete(doc);
        return 0;
    }
    size_t off = end && end >= buf && end <= buf + len ? (size_t)(end - buf)
                                                       : len;
    size_t line = 1, col = 1;
    for (size_t i = 0; i < off; i++) {
        if (buf[i] == '\n') {
            line++;
            col = 1;
        } else {
            col++;
        }
    }
    if (off >= len) {
        cli_error("%s is not valid JSON: unexpected end at byte %zu "
                  "(line %zu, column %zu)", what, off, line, col);
    } else {
        char near[24];
        size_t k = 0;
        for (size_t i = off; i < len && k < 16 && buf[i] != '\n'; i++)
            near[k++] = (unsigned char)buf[i] < 0x20 ? ' ' : buf[i];
        near[k] = '\0';
        cli_error("%s is not valid JSON: error at byte %zu (line %zu, "
                  "column %zu) near '%s'", what, off, line, col, near);
    }
    return -1;
}

/* Loads --data: inline, @file or - (stdin). Returns CLI_OK or an exit code. */
static int load_data(publish_args_t *a, const char *spec)
{
    const char *what = "--data";
    char what_buf[300];
    if (spec[0] == '@' || strcmp(spec, "-") == 0) {
        const char *path = spec[0] == '@' ? spec + 1 : "-";
        a->data = cli_read_all(path, &a->data_len);
        if (!a->data) {
            cli_error("cannot read --data %s: %s",
                      strcmp(path, "-") == 0 ? "from standard input" : path,
                      strerror(errno));
            return CLI_FAIL;
        }
        snprintf(what_buf, sizeof what_buf, "--data %s",
                 strcmp(path, "-") == 0 ? "(standard input)" : path);
        what = what_buf;
    } else {
        a->data = strdup(spec);
        if (!a->data) {
            cli_error("out of memory");
            return CLI_FAIL;
        }
        a->data_len = strlen(spec);
    }
    a->data_is_json = !a->content_type || is_json_type(a->content_type);
    if (a->data_is_json && check_json(what, a->data, a->data_len) != 0)
        return CLI_USAGE;
    return CLI_OK;
}

/* Builds one event from the arguments; prints why and returns NULL when the
 * library refuses a value. */
static evbus_event_t *build_event(const publish_args_t *a)
{
    evbus_event_t *ev = evbus_event_new(a->type, a->source);
    if (!ev) {
        cli_error("cannot create the event (type '%s', source '%s')", a->type,
                  a->source);
        return NULL;
    }
    if (a->id && evbus_event_set_id(ev, a->id) != EVBUS_OK) {
        cli_error("invalid --id '%s': must be non-empty without control "
                  "characters", a->id);
        goto fail;
    }
    if (a->subject && evbus_event_set_subject(ev, a->subject) != EVBUS_OK) {
        cli_error("invalid --subject '%s'", a->subject);
        goto fail;
    }
    for (int i = 0; i < a->n_ext; i++) {
        const char *eq = strchr(a->ext[i], '=');
        char name[64];
        size_t nl = eq ? (size_t)(eq - a->ext[i]) : 0;
        if (!eq || nl == 0 || nl >= sizeof name) {
            cli_error("invalid --ext '%s': expected NAME=VALUE", a->ext[i]);
            goto fail;
        }
        memcpy(name, a->ext[i], nl);
        name[nl] = '\0';
        if (evbus_event_set_ext(ev, name, eq + 1) != EVBUS_OK) {
            cli_error("invalid --ext '%s': names are 1-20 lowercase letters "
                      "or digits, not a CloudEvents attribute name; values "
                      "have no control characters", a->ext[i]);
            goto fail;
        }
    }
    if (a->data) {
        int rc;
        if (!a->content_type)
            rc = evbus_event_set_data_json(ev, a->data);
        else
            rc = evbus_event_set_data(ev, a->data, a->data_len,
                                      a->content_type);
        if (rc != EVBUS_OK) {
            if (a->content_type &&
                evbus_event_set_datacontenttype(ev, a->content_type) !=
                    EVBUS_OK)
                cli_error("invalid --content-type '%s': expected type/subtype",
                          a->content_type);
            else
                cli_error("data refused: %s", evbus_strerror(rc));
            goto fail;
        }
    } else if (a->content_type &&
               evbus_event_set_datacontenttype(ev, a->content_type) !=
                   EVBUS_OK) {
        cli_error("invalid --content-type '%s': expected type/subtype",
                  a->content_type);
        goto fail;
    }
    char why[256] = "";
    if (evbus_event_validate(ev, why, sizeof why) != EVBUS_OK) {
        cli_error("invalid event: %s", why);
        goto fail;
    }
    return ev;
fail:
    evbus_event_free(ev);
    return NULL;
}

typedef struct {
    long failed;
    long accepted;
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

static int publish_many(evbus_t *bus, const char *topic,
                        const publish_args_t *a, long count)
{
    async_state_t st = {0, 0, !cli_quiet};
    long queued = 0;
    for (long i = 0; i < count && !cli_stop_requested(); i++) {
        evbus_event_t *ev = build_event(a);
        if (!ev)
            break;
        int rc = evbus_publish_async(bus, topic, ev, on_delivery, &st);
        if (rc != EVBUS_OK) {
            cli_error("publish to %s failed: %s", topic, evbus_strerror(rc));
            evbus_event_free(ev);
            break;
        }
        evbus_event_free(ev);
        queued++;
    }
    const int flush_ms = 60000;
    int rc = evbus_flush(bus, flush_ms);
    fflush(stdout);
    if (rc == EVBUS_ETIMEDOUT)
        cli_error("%ld publishes still unconfirmed after %d s",
                  queued - st.accepted - st.failed, flush_ms / 1000);
    else if (rc != EVBUS_OK)
        cli_error("flush failed: %s", evbus_strerror(rc));
    if (st.failed || rc != EVBUS_OK || st.accepted != count) {
        cli_error("%ld of %ld events published to %s", st.accepted, count,
                  topic);
        return CLI_FAIL;
    }
    return CLI_OK;
}

int cmd_publish(int argc, char **argv)
{
    static const struct option longs[] = {
        {"type", required_argument, NULL, 't'},
        {"source", required_argument, NULL, 's'},
        {"subject", required_argument, NULL, 'S'},
        {"ext", required_argument, NULL, 'e'},
        {"data", required_argument, NULL, 'd'},
        {"content-type", required_argument, NULL, 'c'},
        {"id", required_argument, NULL, 'i'},
        {"count", required_argument, NULL, 'n'},
        {"quiet", no_argument, NULL, 'q'},
        {"verbose", no_argument, NULL, 'v'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0}};
    publish_args_t a;
    memset(&a, 0, sizeof a);
    const char *data_spec = NULL;
    long count = 1;
    int c;
    optind = 0;
    while ((c = getopt_long(argc, argv, "t:s:S:e:d:c:i:n:qvh", longs, NULL)) !=
           -1) {
        switch (c) {
        case 't': a.type = optarg; break;
        case 's': a.source = optarg; break;
        case 'S': a.subject = optarg; break;
        case 'e':
            if (a.n_ext == MAX_EXTS)
                return cli_usage_error("publish", "at most %d --ext options",
                                       MAX_EXTS);
            a.ext[a.n_ext++] = optarg;
            break;
        case 'd':
            if (data_spec)
                return cli_usage_error("publish", "--data given twice");
            data_spec = optarg;
            break;
        case 'c': a.content_type = optarg; break;
        case 'i': a.id = optarg; break;
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
    if (!a.type || !*a.type)
        return cli_usage_error("publish", "--type is required");
    if (!a.source || !*a.source)
        return cli_usage_error("publish", "--source is required");
    if (a.id && count > 1)
        return cli_usage_error("publish", "--id cannot be combined with "
                               "--count > 1 (every event needs its own id)");
    if (cli_check_topic("publish", "TOPIC", topic) != 0)
        return CLI_USAGE;

    int rc = CLI_OK;
    if (data_spec && (rc = load_data(&a, data_spec)) != CLI_OK) {
        free(a.data);
        return rc;
    }
    /* Build one event before opening the bus, so bad input never touches
     * the broker. */
    evbus_event_t *ev = build_event(&a);
    if (!ev) {
        free(a.data);
        return CLI_USAGE;
    }
    evbus_t *bus = cli_open(url);
    if (!bus) {
        evbus_event_free(ev);
        free(a.data);
        return CLI_FAIL;
    }
    cli_stop_on_signals(bus);
    if (count == 1) {
        int prc = evbus_publish(bus, topic, ev);
        if (prc != EVBUS_OK) {
            cli_error("publish to %s failed: %s", topic, evbus_strerror(prc));
            rc = CLI_FAIL;
        } else if (!cli_quiet) {
            printf("%s\n", evbus_event_id(ev));
        }
    } else {
        rc = publish_many(bus, topic, &a, count);
    }
    evbus_event_free(ev);
    cli_stop_on_signals(NULL);
    evbus_close(bus);
    free(a.data);
    if (fflush(stdout) != 0 && rc == CLI_OK) {
        cli_error("writing the ids failed: %s", strerror(errno));
        rc = CLI_FAIL;
    }
    return rc;
}
