/*
 * The libevbus side of the interop suite: a small program on the public
 * API only, driven by the Node.js peers in this folder.
 *
 *   evbus-interop-driver publish URL TOPIC
 *       reads CloudEvents in the JSON format, one per line, from stdin;
 *       decodes each with evbus_event_from_json and publishes it with
 *       evbus_publish; prints "published N" and exits 0 when all went.
 *   evbus-interop-driver consume URL TOPIC GROUP COUNT
 *       subscribes, prints "READY" once the first poll ran (a dapr:// app
 *       server is then listening), then one JSON line per event handled:
 *       every attribute by name, "ext" (name -> value as a string) and
 *       "data_base64" (the data bytes exactly, or null); exits 0 after
 *       COUNT events, 1 when they do not come within 120 s (a hang guard).
 *
 * Errors go to stderr with the library's reason; exit status 2 for usage.
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cjson/cJSON.h>
#include <evbus/evbus.h>

static const char b64[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/* Standard base64 with padding (the peers compare bytes through it). */
static char *base64(const unsigned char *p, size_t n)
{
    char *out = malloc((n + 2) / 3 * 4 + 1), *o = out;
    if (!out)
        return NULL;
    for (size_t i = 0; i < n; i += 3) {
        unsigned v = (unsigned)p[i] << 16;
        if (i + 1 < n)
            v |= (unsigned)p[i + 1] << 8;
        if (i + 2 < n)
            v |= p[i + 2];
        *o++ = b64[v >> 18 & 63];
        *o++ = b64[v >> 12 & 63];
        *o++ = i + 1 < n ? b64[v >> 6 & 63] : '=';
        *o++ = i + 2 < n ? b64[v & 63] : '=';
    }
    *o = '\0';
    return out;
}

static void add_opt(cJSON *o, const char *name, const char *v)
{
    if (v)
        cJSON_AddStringToObject(o, name, v);
    else
        cJSON_AddNullToObject(o, name);
}

static int handled, wanted;

static evbus_result_t print_event(const evbus_event_t *ev, void *opaque)
{
    cJSON *o = cJSON_CreateObject();
    add_opt(o, "specversion", evbus_event_specversion(ev));
    add_opt(o, "id", evbus_event_id(ev));
    add_opt(o, "source", evbus_event_source(ev));
    add_opt(o, "type", evbus_event_type(ev));
    add_opt(o, "datacontenttype", evbus_event_datacontenttype(ev));
    add_opt(o, "dataschema", evbus_event_dataschema(ev));
    add_opt(o, "subject", evbus_event_subject(ev));
    add_opt(o, "time", evbus_event_time(ev));
    cJSON *ext = cJSON_AddObjectToObject(o, "ext");
    for (size_t i = 0; i < evbus_event_ext_count(ev); i++) {
        const char *name, *value;
        if (evbus_event_ext_at(ev, i, &name, &value) == EVBUS_OK)
            cJSON_AddStringToObject(ext, name, value);
    }
    const void *data = evbus_event_data(ev);
    char *d = data ? base64(data, evbus_event_data_len(ev)) : NULL;
    add_opt(o, "data_base64", d);
    free(d);
    char *line = cJSON_PrintUnformatted(o);
    printf("%s\n", line);
    fflush(stdout);
    free(line);
    cJSON_Delete(o);
    handled++;
    return EVBUS_ACK;
}

static int publish(const char *url, const char *topic)
{
    char err[512] = "";
    evbus_t *bus = evbus_open(url, err, sizeof err);
    if (!bus) {
        fprintf(stderr, "evbus_open(%s): %s\n", url, err);
        return 1;
    }
    size_t cap = 0;
    char *line = NULL;
    ssize_t n;
    int count = 0, rc = 0;
    while ((n = getline(&line, &cap, stdin)) > 0) {
        while (n > 0 && (line[n - 1] == '\n' || line[n - 1] == '\r'))
            line[--n] = '\0';
        if (n == 0)
            continue;
        evbus_event_t *ev = evbus_event_from_json(line, (size_t)n, err,
                                                  sizeof err);
        if (!ev) {
            fprintf(stderr, "event %d refused: %s\n", count + 1, err);
            rc = 1;
            break;
        }
        int r = evbus_publish(bus, topic, ev);
        evbus_event_free(ev);
        if (r != EVBUS_OK) {
            fprintf(stderr, "publish %d: %s\n", count + 1, evbus_strerror(r));
            rc = 1;
            break;
        }
        count++;
    }
    free(line);
    evbus_close(bus);
    if (rc == 0)
        printf("published %d\n", count);
    return rc;
}

static int consume(const char *url, const char *topic, const char *group,
                   int count)
{
    char err[512] = "";
    evbus_t *bus = evbus_open(url, err, sizeof err);
    if (!bus) {
        fprintf(stderr, "evbus_open(%s): %s\n", url, err);
        return 1;
    }
    wanted = count;
    if (!evbus_subscribe_opts(bus, topic, group, NULL, print_event, bus, err,
                              sizeof err)) {
        fprintf(stderr, "evbus_subscribe(%s): %s\n", topic, err);
        evbus_close(bus);
        return 1;
    }
    evbus_poll(bus, 0);
    printf("READY\n");
    fflush(stdout);
    time_t end = time(NULL) + 120;
    while (handled < count && time(NULL) < end)
        if (evbus_poll(bus, 200) < 0)
            break;
    evbus_close(bus);
    if (handled < count)
        fprintf(stderr, "got %d of %d events\n", handled, count);
    return handled >= count ? 0 : 1;
}

int main(int argc, char **argv)
{
    signal(SIGPIPE, SIG_IGN);
    if (getenv("EVBUS_TEST_LOG"))
        evbus_set_log(evbus_log_stderr, EVBUS_LOG_DEBUG, NULL);
    if (argc == 4 && strcmp(argv[1], "publish") == 0)
        return publish(argv[2], argv[3]);
    if (argc == 6 && strcmp(argv[1], "consume") == 0)
        return consume(argv[2], argv[3], argv[4], atoi(argv[5]));
    fprintf(stderr, "usage: %s publish URL TOPIC < events\n"
                    "       %s consume URL TOPIC GROUP COUNT\n",
            argv[0], argv[0]);
    return 2;
}
