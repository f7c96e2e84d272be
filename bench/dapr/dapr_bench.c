/*
 * dapr-bench: publishing through the Dapr sidecar stand-in, each library
 * figure beside a raw libcurl loop sending the same requests in the same
 * run:
 *   sync   evbus_publish one at a time (kept-alive connection)
 *          vs. one reused curl easy handle POSTing the same CloudEvent
 *   async  evbus_publish_async N + evbus_flush (bulk endpoint)
 *          vs. one reused curl handle POSTing bulk bodies of --batch events
 *
 *   dapr-bench [--events N] [--size BYTES] [--batch B] [--standin PATH]
 *
 * The stand-in runs with --no-log and no subscriber, so it only parses and
 * stores; the figures are the client side plus one localhost round trip.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <curl/curl.h>
#include <evbus/evbus.h>

#include "standin_proc.h"

#ifndef DAPR_STANDIN
#define DAPR_STANDIN "dapr-standin"
#endif

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static size_t sink(char *d, size_t s, size_t n, void *o) { return s * n; }

static evbus_event_t *make_event(size_t size)
{
    evbus_event_t *ev = evbus_event_new("bench.dapr.sent", "/bench/dapr");
    char *data = malloc(size + 1);
    memset(data, 'x', size);
    data[size] = '\0';
    evbus_event_set_data(ev, data, size, "text/plain");
    free(data);
    return ev;
}

/* POSTs body n times on one handle; returns seconds or -1 on a failure. */
static double raw_loop(const char *url, const char *ctype, const char *body,
                       int n)
{
    CURL *h = curl_easy_init();
    struct curl_slist *hl = curl_slist_append(NULL, "Expect:");
    char line[128];
    snprintf(line, sizeof line, "Content-Type: %s", ctype);
    hl = curl_slist_append(hl, line);
    curl_easy_setopt(h, CURLOPT_URL, url);
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, hl);
    curl_easy_setopt(h, CURLOPT_POSTFIELDS, body);
    curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE, (long)strlen(body));
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, sink);
    curl_easy_setopt(h, CURLOPT_TCP_NODELAY, 1L);
    double t0 = now_s();
    for (int i = 0; i < n; i++) {
        long status = 0;
        if (curl_easy_perform(h) != CURLE_OK ||
            curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &status) !=
                CURLE_OK ||
            status != 204) {
            fprintf(stderr, "raw request %d failed (HTTP %ld)\n", i, status);
            t0 = -1;
            break;
        }
    }
    double dt = t0 < 0 ? -1 : now_s() - t0;
    curl_slist_free_all(hl);
    curl_easy_cleanup(h);
    return dt;
}

static void report(const char *what, int n, double lib, double raw)
{
    printf("%-6s events=%d  evbus: %.0f ev/s (%.1f us/ev)  raw libcurl: "
           "%.0f ev/s (%.1f us/ev)  evbus/raw: %.2f\n",
           what, n, n / lib, lib * 1e6 / n, n / raw, raw * 1e6 / n,
           raw / lib);
}

int main(int argc, char **argv)
{
    int n = 20000, batch = 100;
    size_t size = 256;
    const char *exe = DAPR_STANDIN;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (strcmp(argv[i], "--events") == 0)
            n = atoi(argv[i + 1]);
        else if (strcmp(argv[i], "--size") == 0)
            size = (size_t)atol(argv[i + 1]);
        else if (strcmp(argv[i], "--batch") == 0)
            batch = atoi(argv[i + 1]);
        else if (strcmp(argv[i], "--standin") == 0)
            exe = argv[i + 1];
    }
    if (batch < 1)
        batch = 1;
    n = n / batch * batch; /* whole bulk bodies for the raw loop */
    if (n <= 0)
        n = batch;
    curl_global_init(CURL_GLOBAL_ALL);
    standin_t s;
    const char *args[] = {"--no-log", NULL};
    if (standin_start(&s, exe, args) != 0)
        return 1;
    char url[512], err[512];
    snprintf(url, sizeof url, "dapr://127.0.0.1:%d?pubsub=pubsub&bulk_max=%d",
             s.port, batch);
    evbus_t *bus = evbus_open(url, err, sizeof err);
    if (!bus) {
        fprintf(stderr, "evbus_open: %s\n", err);
        standin_stop(&s);
        return 1;
    }
    evbus_event_t *ev = make_event(size);
    char *json = evbus_event_to_json(ev, NULL);
    printf("dapr-bench: %d events of %zu data bytes (%zu bytes encoded), "
           "bulk batches of %d, stand-in on 127.0.0.1:%d\n",
           n, size, strlen(json), batch, s.port);

    /* ---- sync */
    for (int i = 0; i < 200; i++) /* warm the connection */
        evbus_publish(bus, "bench.warm", ev);
    double t0 = now_s();
    for (int i = 0; i < n; i++)
        if (evbus_publish(bus, "bench.sync", ev) != EVBUS_OK) {
            fprintf(stderr, "publish %d failed\n", i);
            return 1;
        }
    double lib_sync = now_s() - t0;
    char raw_url[256];
    snprintf(raw_url, sizeof raw_url,
             "http://127.0.0.1:%d/v1.0/publish/pubsub/bench.sync-raw", s.port);
    double raw_sync = raw_loop(raw_url, "application/cloudevents+json", json,
                               n);
    report("sync", n, lib_sync, raw_sync);

    /* ---- async / bulk */
    long req0 = standin_stat(&s, "bulk_requests");
    t0 = now_s();
    for (int i = 0; i < n; i++)
        evbus_publish_async(bus, "bench.async", ev, NULL, NULL);
    int rc = evbus_flush(bus, 120000);
    double lib_async = now_s() - t0;
    evbus_metrics_t m;
    evbus_metrics_init(&m);
    evbus_metrics_get(bus, &m);
    if (rc != EVBUS_OK || m.publish_failed) {
        fprintf(stderr, "async: flush %s, %llu failed\n", evbus_strerror(rc),
                (unsigned long long)m.publish_failed);
        return 1;
    }
    long reqs = standin_stat(&s, "bulk_requests") - req0;
    size_t cap = (strlen(json) + 128) * (size_t)batch + 16, len = 0;
    char *bulk = malloc(cap);
    len += (size_t)snprintf(bulk + len, cap - len, "[");
    for (int i = 0; i < batch; i++)
        len += (size_t)snprintf(bulk + len, cap - len,
                                "%s{\"entryId\":\"%d\",\"contentType\":"
                                "\"application/cloudevents+json\","
                                "\"event\":%s}",
                                i ? "," : "", i, json);
    snprintf(bulk + len, cap - len, "]");
    snprintf(raw_url, sizeof raw_url,
             "http://127.0.0.1:%d/v1.0-alpha1/publish/bulk/pubsub/"
             "bench.async-raw",
             s.port);
    double raw_async = raw_loop(raw_url, "application/json", bulk, n / batch);
    report("async", n, lib_async, raw_async);
    printf("async  evbus sent %ld bulk requests (%.1f events each on "
           "average; raw: %d each)\n",
           reqs, reqs ? (double)n / (double)reqs : 0.0, batch);
    free(bulk);
    free(json);
    evbus_event_free(ev);
    evbus_close(bus);
    standin_stop(&s);
    return 0;
}
