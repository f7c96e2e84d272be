/*
 * dapr:// backend tests against the sidecar stand-in (dapr-standin), plus
 * requests made straight to the app server where the test plays the
 * sidecar (tokens, malformed bodies).
 *
 *   test-dapr PATH/TO/dapr-standin
 */
#include <check.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cjson/cJSON.h>
#include <evbus/evbus.h>

#include "standin_proc.h"

static const char *standin_exe;

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static standin_t start(const char *const *args)
{
    standin_t s;
    ck_assert_msg(standin_start(&s, standin_exe, args) == 0,
                  "cannot start %s", standin_exe);
    return s;
}

static evbus_t *open_url(const char *url)
{
    char err[512] = "";
    evbus_t *bus = evbus_open(url, err, sizeof err);
    ck_assert_msg(bus != NULL, "evbus_open(%s): %s", url, err);
    return bus;
}

static evbus_t *open_standin(const standin_t *s, const char *extra)
{
    char url[512];
    standin_url(s, url, sizeof url, extra);
    return open_url(url);
}

static evbus_event_t *event(int seq)
{
    evbus_event_t *ev = evbus_event_new("test.dapr.sent", "/tests/dapr");
    ck_assert_ptr_nonnull(ev);
    char buf[64];
    snprintf(buf, sizeof buf, "{\"seq\":%d}", seq);
    ck_assert_int_eq(evbus_event_set_data_json(ev, buf), EVBUS_OK);
    return ev;
}

/* The stand-in's log of topic as parsed JSON (caller frees). */
static cJSON *topic_log(const standin_t *s, const char *topic)
{
    char path[512], *body = NULL;
    snprintf(path, sizeof path, "/standin/topic/%s", topic);
    ck_assert_int_eq(http_call(s->port, path, NULL, NULL, &body), 200);
    cJSON *j = cJSON_Parse(body);
    free(body);
    ck_assert(cJSON_IsArray(j));
    return j;
}

/* The stand-in's counter once it reached want (answers travel back after
 * the handler ran), or its value after timeout_ms. */
static long wait_stat(const standin_t *s, const char *name, long want,
                      int timeout_ms)
{
    uint64_t end = now_ms() + (uint64_t)timeout_ms;
    long v;
    while ((v = standin_stat(s, name)) < want && now_ms() < end)
        usleep(10 * 1000);
    return v;
}

/* ---- a handler that counts and answers what it is told */
typedef struct {
    pthread_mutex_t mu;
    int calls, acked;
    evbus_result_t answer;
    int retry_first; /* RETRY the first n attempts, then ACK */
    int max_attempt;
    evbus_event_t *last;
} counter_t;

static void counter_init(counter_t *c, evbus_result_t answer)
{
    memset(c, 0, sizeof *c);
    pthread_mutex_init(&c->mu, NULL);
    c->answer = answer;
}

static evbus_result_t count_handler(const evbus_event_t *ev, void *opaque)
{
    counter_t *c = opaque;
    pthread_mutex_lock(&c->mu);
    c->calls++;
    int attempt = evbus_delivery_attempt();
    if (attempt > c->max_attempt)
        c->max_attempt = attempt;
    evbus_event_free(c->last);
    c->last = evbus_event_clone(ev);
    evbus_result_t r = c->answer;
    if (c->retry_first && attempt <= c->retry_first)
        r = EVBUS_RETRY;
    if (r == EVBUS_ACK)
        c->acked++;
    pthread_mutex_unlock(&c->mu);
    return r;
}

static int counter_get(counter_t *c, int *field)
{
    pthread_mutex_lock(&c->mu);
    int v = *field;
    pthread_mutex_unlock(&c->mu);
    return v;
}

static int poll_until(evbus_t *bus, counter_t *c, int *field, int want,
                      int timeout_ms)
{
    uint64_t end = now_ms() + (uint64_t)timeout_ms;
    while (counter_get(c, field) < want && now_ms() < end)
        ck_assert_int_ge(evbus_poll(bus, 20), 0);
    return counter_get(c, field);
}

static void *run_bus(void *arg)
{
    evbus_run(arg);
    return NULL;
}

/* ------------------------------------------------------------ publish */

START_TEST(publish_keeps_id_type_source_and_key)
{
    standin_t s = start(NULL);
    evbus_t *bus = open_standin(&s, "");
    evbus_event_t *ev = event(1);
    ck_assert_int_eq(evbus_event_set_ext(ev, "partitionkey", "user/42 x"),
                     EVBUS_OK);
    ck_assert_int_eq(evbus_publish(bus, "orders", ev), EVBUS_OK);
    cJSON *log = topic_log(&s, "orders");
    ck_assert_int_eq(cJSON_GetArraySize(log), 1);
    cJSON *rec = cJSON_GetArrayItem(log, 0);
    cJSON *got = cJSON_GetObjectItem(rec, "event");
    ck_assert_str_eq(cJSON_GetObjectItem(got, "id")->valuestring,
                     evbus_event_id(ev));
    ck_assert_str_eq(cJSON_GetObjectItem(got, "type")->valuestring,
                     "test.dapr.sent");
    ck_assert_str_eq(cJSON_GetObjectItem(got, "source")->valuestring,
                     "/tests/dapr");
    ck_assert_int_eq(
        cJSON_GetObjectItem(cJSON_GetObjectItem(got, "data"), "seq")
            ->valueint,
        1);
    cJSON *md = cJSON_GetObjectItem(rec, "metadata");
    ck_assert_str_eq(cJSON_GetObjectItem(md, "partitionKey")->valuestring,
                     "user/42 x");
    ck_assert_int_eq(standin_stat(&s, "wrapped"), 0);
    cJSON_Delete(log);
    evbus_event_free(ev);
    evbus_close(bus);
    standin_stop(&s);
}
END_TEST

START_TEST(errors_map_to_evbus_codes)
{
    standin_t s = start(NULL);
    evbus_t *bus = open_standin(&s, "");
    evbus_event_t *ev = event(1);
    struct {
        int status;
        const char *code;
        int want;
    } cases[] = {
        {500, "ERR_PUBSUB_PUBLISH_MESSAGE", EVBUS_EIO},
        {503, "ERR_PUBSUB_PUBLISH_MESSAGE", EVBUS_EIO},
        {400, "ERR_PUBSUB_REQUEST_METADATA", EVBUS_EREJECTED},
        {403, "ERR_PUBSUB_FORBIDDEN", EVBUS_EAUTH},
        {401, "ERR_UNAUTHORIZED", EVBUS_EAUTH},
        {500, "ERR_PUBSUB_CLOUD_EVENTS_SER", EVBUS_EREJECTED},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char body[256];
        snprintf(body, sizeof body,
                 "{\"count\":1,\"status\":%d,\"errorCode\":\"%s\"}",
                 cases[i].status, cases[i].code);
        ck_assert_int_eq(http_call(s.port, "/standin/fail", body, NULL, NULL),
                         204);
        int rc = evbus_publish(bus, "errs", ev);
        ck_assert_msg(rc == cases[i].want, "HTTP %d %s gave %s, want %s",
                      cases[i].status, cases[i].code, evbus_err_name(rc),
                      evbus_err_name(cases[i].want));
        ck_assert_int_eq(evbus_err_retriable(rc), cases[i].status >= 500 &&
                                                      strcmp(cases[i].code,
                                                             "ERR_PUBSUB_"
                                                             "CLOUD_EVENTS_"
                                                             "SER") != 0);
        /* the next one goes through */
        ck_assert_int_eq(evbus_publish(bus, "errs", ev), EVBUS_OK);
    }
    evbus_close(bus);

    /* an unknown component: 404 ERR_PUBSUB_NOT_FOUND, permanent */
    char url[256];
    snprintf(url, sizeof url, "dapr://127.0.0.1:%d?pubsub=nosuch", s.port);
    bus = open_url(url);
    ck_assert_int_eq(evbus_publish(bus, "errs", ev), EVBUS_EREJECTED);
    evbus_close(bus);
    evbus_event_free(ev);
    standin_stop(&s);
}
END_TEST

START_TEST(unreachable_sidecar)
{
    standin_t s = start(NULL);
    int port = s.port;
    standin_stop(&s); /* nothing listens there now */
    char url[256], err[512] = "";
    snprintf(url, sizeof url, "dapr://127.0.0.1:%d?sidecar_wait_ms=300",
             port);
    uint64_t t0 = now_ms();
    evbus_t *bus = evbus_open(url, err, sizeof err);
    ck_assert_ptr_null(bus);
    ck_assert_uint_lt(now_ms() - t0, 5000);
    ck_assert_msg(strstr(err, "not ready") != NULL, "errstr: %s", err);

    /* sidecar_wait_ms=0: the app may start before its sidecar */
    snprintf(url, sizeof url, "dapr://127.0.0.1:%d?sidecar_wait_ms=0", port);
    bus = open_url(url);
    char why[512] = "";
    ck_assert_int_eq(evbus_health(bus, why, sizeof why), EVBUS_ECONN);
    ck_assert_msg(strstr(why, "127.0.0.1") != NULL, "health: %s", why);
    evbus_event_t *ev = event(1);
    ck_assert_int_eq(evbus_publish(bus, "t", ev), EVBUS_ECONN);
    evbus_event_free(ev);
    evbus_close(bus);
}
END_TEST

START_TEST(health_checks_outbound)
{
    standin_t s = start(NULL);
    evbus_t *bus = open_standin(&s, "");
    char why[256] = "";
    ck_assert_int_eq(evbus_health(bus, why, sizeof why), EVBUS_OK);
    evbus_close(bus);
    standin_stop(&s);
}
END_TEST

START_TEST(env_defaults_and_url_wins)
{
    standin_t s = start((const char *const[]){"--api-token", "envtok", NULL});
    char port[16];
    snprintf(port, sizeof port, "%d", s.port);
    setenv("DAPR_HTTP_PORT", port, 1);
    setenv("DAPR_API_TOKEN", "envtok", 1);
    evbus_t *bus = open_url("dapr://127.0.0.1");
    evbus_event_t *ev = event(1);
    ck_assert_int_eq(evbus_publish(bus, "envt", ev), EVBUS_OK);
    evbus_close(bus);
    /* the URL's token wins over the environment's */
    char url[256];
    snprintf(url, sizeof url,
             "dapr://127.0.0.1?dapr_api_token=wrong&sidecar_wait_ms=0");
    bus = open_url(url);
    ck_assert_int_eq(evbus_publish(bus, "envt", ev), EVBUS_EAUTH);
    evbus_close(bus);
    evbus_event_free(ev);
    unsetenv("DAPR_HTTP_PORT");
    unsetenv("DAPR_API_TOKEN");
    standin_stop(&s);
}
END_TEST

START_TEST(publish_token_both_ways)
{
    standin_t s = start((const char *const[]){"--api-token", "s3cret", NULL});
    char url[512], err[512] = "";
    /* without the token the sidecar says 401: open names it */
    standin_url(&s, url, sizeof url, "");
    ck_assert_ptr_null(evbus_open(url, err, sizeof err));
    ck_assert_msg(strstr(err, "token") != NULL, "errstr: %s", err);
    /* not waiting for the sidecar: the publish fails as EAUTH */
    evbus_t *bus = open_standin(&s, "&sidecar_wait_ms=0");
    evbus_event_t *ev = event(1);
    ck_assert_int_eq(evbus_publish(bus, "tok", ev), EVBUS_EAUTH);
    evbus_close(bus);
    bus = open_standin(&s, "&dapr_api_token=s3cret");
    ck_assert_int_eq(evbus_publish(bus, "tok", ev), EVBUS_OK);
    ck_assert_int_eq(evbus_publish_async(bus, "tok", ev, NULL, NULL),
                     EVBUS_OK);
    ck_assert_int_eq(evbus_publish_async(bus, "tok", ev, NULL, NULL),
                     EVBUS_OK);
    ck_assert_int_eq(evbus_flush(bus, 10000), EVBUS_OK);
    evbus_close(bus);
    cJSON *log = topic_log(&s, "tok");
    ck_assert_int_eq(cJSON_GetArraySize(log), 3);
    cJSON_Delete(log);
    ck_assert_int_ge(standin_stat(&s, "unauthorized"), 2);
    evbus_event_free(ev);
    standin_stop(&s);
}
END_TEST

/* ------------------------------------------------------------ async */

static void count_done(const evbus_event_t *ev, int err, void *opaque)
{
    int *outcomes = opaque;
    outcomes[err == EVBUS_OK ? 0 : 1]++;
}

START_TEST(async_bulk_retries_only_failed_entries)
{
    enum { N = 300 };
    standin_t s = start(NULL);
    evbus_t *bus = open_standin(&s, "");
    /* every 7th bulk entry fails, 20 times in all */
    ck_assert_int_eq(http_call(s.port, "/standin/fail",
                               "{\"count\":20,\"bulkFailEvery\":7}", NULL,
                               NULL),
                     204);
    int outcomes[2] = {0, 0};
    for (int i = 0; i < N; i++) {
        evbus_event_t *ev = event(i);
        ck_assert_int_eq(
            evbus_publish_async(bus, "bulk", ev, count_done, outcomes),
            EVBUS_OK);
        evbus_event_free(ev);
    }
    ck_assert_int_eq(evbus_flush(bus, 20000), EVBUS_OK);
    ck_assert_int_eq(outcomes[0], N);
    ck_assert_int_eq(outcomes[1], 0);
    ck_assert_int_eq(standin_stat(&s, "injected_failures"), 20);
    ck_assert_int_ge(standin_stat(&s, "bulk_requests"), 2);
    ck_assert_int_eq(standin_stat(&s, "bad_content_type"), 0);
    /* each event exactly once: only the failed entries were sent again */
    cJSON *log = topic_log(&s, "bulk");
    ck_assert_int_eq(cJSON_GetArraySize(log), N);
    char seen[N] = {0};
    cJSON *rec;
    cJSON_ArrayForEach(rec, log) {
        cJSON *data = cJSON_GetObjectItem(cJSON_GetObjectItem(rec, "event"),
                                          "data");
        int seq = cJSON_GetObjectItem(data, "seq")->valueint;
        ck_assert(seq >= 0 && seq < N && !seen[seq]);
        seen[seq] = 1;
    }
    cJSON_Delete(log);
    evbus_metrics_t m;
    evbus_metrics_init(&m);
    evbus_metrics_get(bus, &m);
    ck_assert_uint_eq(m.published, N);
    evbus_close(bus);
    standin_stop(&s);
}
END_TEST

START_TEST(async_permanent_failure_reported)
{
    standin_t s = start(NULL);
    char url[256];
    snprintf(url, sizeof url, "dapr://127.0.0.1:%d?pubsub=nosuch", s.port);
    evbus_t *bus = open_url(url);
    int outcomes[2] = {0, 0};
    for (int i = 0; i < 5; i++) {
        evbus_event_t *ev = event(i);
        ck_assert_int_eq(
            evbus_publish_async(bus, "perm", ev, count_done, outcomes),
            EVBUS_OK);
        evbus_event_free(ev);
    }
    evbus_flush(bus, 10000);
    ck_assert_int_eq(outcomes[0], 0);
    ck_assert_int_eq(outcomes[1], 5);
    evbus_close(bus);
    standin_stop(&s);
}
END_TEST

/* ------------------------------------------------------------ subscribe */

START_TEST(delivery_roundtrip_event_unchanged)
{
    standin_t s = start(NULL);
    evbus_t *bus = open_standin(&s, "");
    counter_t c;
    counter_init(&c, EVBUS_ACK);
    ck_assert_ptr_nonnull(evbus_subscribe(bus, "rt", "g", count_handler, &c));
    evbus_event_t *evs[20];
    for (int i = 0; i < 20; i++) {
        evs[i] = event(i);
        ck_assert_int_eq(evbus_event_set_ext(evs[i], "tenant", "acme"),
                         EVBUS_OK);
        ck_assert_int_eq(evbus_event_set_data_json(
                             evs[i], "{\"t\":\"caf\\u00e9 \\\"q\\\"\",\"n\":1.50}"),
                         EVBUS_OK);
        ck_assert_int_eq(evbus_publish(bus, "rt", evs[i]), EVBUS_OK);
    }
    ck_assert_int_eq(poll_until(bus, &c, &c.acked, 20, 20000), 20);
    /* Dapr's topic/pubsubname/trace fields are not visible, data bytes
     * are as published */
    int found = 0;
    for (int i = 0; i < 20; i++)
        if (strcmp(evbus_event_id(evs[i]), evbus_event_id(c.last)) == 0) {
            found = 1;
            ck_assert_msg(evbus_event_equal(c.last, evs[i]),
                          "event changed in transit");
        }
    ck_assert(found);
    ck_assert_int_eq(c.max_attempt, 1);
    ck_assert_int_eq(wait_stat(&s, "success", 20, 10000), 20);
    for (int i = 0; i < 20; i++)
        evbus_event_free(evs[i]);
    evbus_event_free(c.last);
    evbus_close(bus);
    standin_stop(&s);
}
END_TEST

START_TEST(port_opens_on_first_poll_and_lists_subscriptions)
{
    standin_t s = start(NULL);
    /* names=native: a topic the portable rule refuses, escaped in the
     * route */
    evbus_t *bus = open_standin(&s, "&names=native");
    counter_t c;
    counter_init(&c, EVBUS_ACK);
    ck_assert_ptr_nonnull(evbus_subscribe(bus, "a.b", "g", count_handler, &c));
    ck_assert_ptr_nonnull(evbus_subscribe(bus, "a.b", "h", count_handler, &c));
    ck_assert_ptr_nonnull(
        evbus_subscribe(bus, "x/y?z#", "g", count_handler, &c));
    /* not before the application polls */
    ck_assert_int_eq(http_call(s.app_port, "/healthz", NULL, NULL, NULL), 0);
    evbus_poll(bus, 0);
    ck_assert_int_eq(http_call(s.app_port, "/healthz", NULL, NULL, NULL), 200);
    char *body = NULL;
    ck_assert_int_eq(
        http_call(s.app_port, "/dapr/subscribe", NULL, NULL, &body), 200);
    cJSON *arr = cJSON_Parse(body);
    free(body);
    ck_assert_int_eq(cJSON_GetArraySize(arr), 2); /* one per topic */
    cJSON *a = cJSON_GetArrayItem(arr, 0), *b = cJSON_GetArrayItem(arr, 1);
    ck_assert_str_eq(cJSON_GetObjectItem(a, "pubsubname")->valuestring,
                     "pubsub");
    ck_assert_str_eq(cJSON_GetObjectItem(a, "topic")->valuestring, "a.b");
    ck_assert_str_eq(cJSON_GetObjectItem(a, "route")->valuestring,
                     "/evbus/pubsub/a.b");
    ck_assert_str_eq(cJSON_GetObjectItem(a, "deadLetterTopic")->valuestring,
                     "a.b.dlq");
    ck_assert_str_eq(cJSON_GetObjectItem(b, "topic")->valuestring, "x/y?z#");
    ck_assert_str_eq(cJSON_GetObjectItem(b, "route")->valuestring,
                     "/evbus/pubsub/x%2Fy%3Fz%23");
    cJSON_Delete(arr);
    /* and the escaped route is served */
    evbus_event_t *ev = event(1);
    ck_assert_int_eq(evbus_publish(bus, "x/y?z#", ev), EVBUS_OK);
    ck_assert_int_eq(poll_until(bus, &c, &c.acked, 1, 20000), 1);
    evbus_event_free(ev);
    evbus_event_free(c.last);
    evbus_close(bus);
    /* closed: the port is free again */
    ck_assert_int_eq(http_call(s.app_port, "/healthz", NULL, NULL, NULL), 0);
    standin_stop(&s);
}
END_TEST

static void retry_then_dead_letter(const char *const *standin_args);

START_TEST(retry_goes_back_to_sidecar_then_dead_letters)
{
    retry_then_dead_letter((const char *const[]){"--retry-ms", "20", NULL});
}
END_TEST

/* A sidecar that writes a new traceparent into every delivery: the
 * attempts are still counted. */
START_TEST(attempts_counted_across_fresh_trace_ids)
{
    retry_then_dead_letter((const char *const[]){"--retry-ms", "20",
                                                 "--fresh-trace", NULL});
}
END_TEST

static void retry_then_dead_letter(const char *const *standin_args)
{
    standin_t s = start(standin_args);
    evbus_t *bus = open_standin(&s, "");
    counter_t c;
    counter_init(&c, EVBUS_RETRY);
    evbus_sub_opts_t o;
    evbus_sub_opts_init(&o);
    evbus_retry_policy_t retry;
    evbus_retry_policy_init(&retry);
    retry.max_attempts = 3;
    retry.initial_ms = 10;
    o.retry = &retry;
    ck_assert_ptr_nonnull(
        evbus_subscribe_opts(bus, "poison", "g", &o, count_handler, &c, NULL, 0));
    evbus_event_t *ev = event(9);
    ck_assert_int_eq(evbus_publish(bus, "poison", ev), EVBUS_OK);
    uint64_t end = now_ms() + 20000;
    cJSON *dlq = NULL;
    while (now_ms() < end) {
        evbus_poll(bus, 20);
        cJSON_Delete(dlq);
        dlq = topic_log(&s, "poison.dlq");
        if (cJSON_GetArraySize(dlq) > 0)
            break;
    }
    ck_assert_int_eq(cJSON_GetArraySize(dlq), 1);
    cJSON *dl = cJSON_GetObjectItem(cJSON_GetArrayItem(dlq, 0), "event");
    ck_assert_str_eq(cJSON_GetObjectItem(dl, "id")->valuestring,
                     evbus_event_id(ev));
    ck_assert_str_eq(cJSON_GetObjectItem(dl, "dlqattempts")->valuestring,
                     "3");
    ck_assert_str_eq(cJSON_GetObjectItem(dl, "dlqtopic")->valuestring,
                     "poison");
    cJSON_Delete(dlq);
    ck_assert_int_eq(counter_get(&c, &c.calls), 3);
    ck_assert_int_eq(c.max_attempt, 3);
    /* the first two answers were RETRY, the last SUCCESS (dead-lettered by
     * the app, so the sidecar must not dead-letter it again) */
    ck_assert_int_eq(wait_stat(&s, "success", 1, 10000), 1);
    ck_assert_int_eq(standin_stat(&s, "retry"), 2);
    ck_assert_int_eq(standin_stat(&s, "dead_lettered"), 0);
    evbus_event_free(ev);
    evbus_event_free(c.last);
    evbus_close(bus);
    standin_stop(&s);
}

START_TEST(async_without_bulk_endpoint_falls_back)
{
    standin_t s = start((const char *const[]){"--no-bulk", NULL});
    evbus_t *bus = open_standin(&s, "");
    int outcomes[2] = {0, 0};
    for (int i = 0; i < 50; i++) {
        evbus_event_t *ev = event(i);
        ck_assert_int_eq(
            evbus_publish_async(bus, "nobulk", ev, count_done, outcomes),
            EVBUS_OK);
        evbus_event_free(ev);
    }
    ck_assert_int_eq(evbus_flush(bus, 10000), EVBUS_OK);
    ck_assert_int_eq(outcomes[0], 50);
    ck_assert_int_eq(outcomes[1], 0);
    cJSON *log = topic_log(&s, "nobulk");
    ck_assert_int_eq(cJSON_GetArraySize(log), 50);
    cJSON_Delete(log);
    ck_assert_int_eq(standin_stat(&s, "bulk_requests"), 0);
    evbus_close(bus);
    standin_stop(&s);
}
END_TEST

START_TEST(bulk_subscribe_answers_per_entry)
{
    standin_t s = start(NULL);
    evbus_t *bus = open_standin(&s, "&bulk_subscribe=16");
    counter_t c;
    counter_init(&c, EVBUS_ACK);
    c.retry_first = 1; /* every entry once RETRY, then SUCCESS */
    evbus_sub_opts_t o;
    evbus_sub_opts_init(&o);
    evbus_retry_policy_t retry;
    evbus_retry_policy_init(&retry);
    retry.initial_ms = 1;
    o.retry = &retry;
    ck_assert_ptr_nonnull(
        evbus_subscribe_opts(bus, "bulkin", "g", &o, count_handler, &c, NULL, 0));
    evbus_poll(bus, 0); /* open the port; the stand-in learns the route */
    for (int i = 0; i < 50; i++) {
        evbus_event_t *ev = event(i);
        ck_assert_int_eq(evbus_publish_async(bus, "bulkin", ev, NULL, NULL),
                         EVBUS_OK);
        evbus_event_free(ev);
    }
    ck_assert_int_eq(evbus_flush(bus, 10000), EVBUS_OK);
    ck_assert_int_eq(poll_until(bus, &c, &c.acked, 50, 20000), 50);
    ck_assert_int_eq(counter_get(&c, &c.calls), 100);
    ck_assert_int_eq(wait_stat(&s, "success", 50, 10000), 50);
    ck_assert_int_gt(standin_stat(&s, "bulk_deliveries"), 0);
    ck_assert_int_eq(standin_stat(&s, "retry"), 50);
    evbus_event_free(c.last);
    evbus_close(bus);
    standin_stop(&s);
}
END_TEST

/* ------------------------------------------------------------ app token */

START_TEST(app_token_required_from_sidecar)
{
    standin_t s = start(NULL); /* a sidecar that sends no app token */
    evbus_t *bus = open_standin(&s, "&app_api_token=apptok");
    counter_t c;
    counter_init(&c, EVBUS_ACK);
    ck_assert_ptr_nonnull(evbus_subscribe(bus, "sec", "g", count_handler, &c));
    pthread_t th;
    pthread_create(&th, NULL, run_bus, bus);
    usleep(100 * 1000);
    char *ce = NULL;
    evbus_event_t *ev = event(1);
    ce = evbus_event_to_json(ev, NULL);
    const char *none[] = {"Content-Type: application/cloudevents+json", NULL};
    const char *wrong[] = {"Content-Type: application/cloudevents+json",
                           "dapr-api-token: apptoK", NULL};
    const char *right[] = {"Content-Type: application/cloudevents+json",
                           "dapr-api-token: apptok", NULL};
    ck_assert_int_eq(http_call(s.app_port, "/evbus/pubsub/sec", ce, none,
                               NULL),
                     401);
    ck_assert_int_eq(http_call(s.app_port, "/evbus/pubsub/sec", ce, wrong,
                               NULL),
                     401);
    ck_assert_int_eq(http_call(s.app_port, "/dapr/subscribe", NULL, none,
                               NULL),
                     401);
    /* the stand-in (no token) cannot deliver either */
    ck_assert_int_eq(evbus_publish(bus, "sec", ev), EVBUS_OK);
    usleep(500 * 1000);
    ck_assert_int_eq(counter_get(&c, &c.calls), 0);
    ck_assert_int_gt(standin_stat(&s, "app_401"), 0);
    char *answer = NULL;
    ck_assert_int_eq(http_call(s.app_port, "/evbus/pubsub/sec", ce, right,
                               &answer),
                     200);
    ck_assert_str_eq(answer, "{\"status\":\"SUCCESS\"}");
    free(answer);
    ck_assert_int_eq(counter_get(&c, &c.calls), 1);
    evbus_stop(bus);
    pthread_join(th, NULL);
    free(ce);
    evbus_event_free(ev);
    evbus_event_free(c.last);
    evbus_close(bus);
    standin_stop(&s);
}
END_TEST

START_TEST(app_token_end_to_end)
{
    standin_t s = start((const char *const[]){"--app-token", "apptok", NULL});
    evbus_t *bus = open_standin(&s, "&app_api_token=apptok");
    counter_t c;
    counter_init(&c, EVBUS_ACK);
    ck_assert_ptr_nonnull(evbus_subscribe(bus, "sec2", "g", count_handler,
                                          &c));
    for (int i = 0; i < 5; i++) {
        evbus_event_t *ev = event(i);
        ck_assert_int_eq(evbus_publish(bus, "sec2", ev), EVBUS_OK);
        evbus_event_free(ev);
    }
    ck_assert_int_eq(poll_until(bus, &c, &c.acked, 5, 20000), 5);
    ck_assert_int_eq(standin_stat(&s, "app_401"), 0);
    evbus_event_free(c.last);
    evbus_close(bus);
    standin_stop(&s);
}
END_TEST

/* ------------------------------------------------------------ malformed */

START_TEST(malformed_bodies_answered_drop)
{
    standin_t s = start(NULL);
    evbus_t *bus = open_standin(&s, "");
    counter_t c;
    counter_init(&c, EVBUS_ACK);
    ck_assert_ptr_nonnull(evbus_subscribe(bus, "bad", "g", count_handler,
                                          &c));
    pthread_t th;
    pthread_create(&th, NULL, run_bus, bus);
    usleep(100 * 1000);
    const char *ct[] = {"Content-Type: application/cloudevents+json", NULL};
    const char *bodies[] = {
        "not json at all",
        "{\"specversion\":\"1.0\", truncated",
        "{\"specversion\":\"1.0\",\"type\":\"a.b.c\",\"source\":\"/x\"}",
        "[1,2,3]",
        "",
        "{\"id\":\"1\",\"specversion\":\"0.3\",\"type\":\"a.b.c\","
        "\"source\":\"/x\"}",
    };
    for (size_t i = 0; i < sizeof bodies / sizeof bodies[0]; i++) {
        char *answer = NULL;
        ck_assert_int_eq(http_call(s.app_port, "/evbus/pubsub/bad", bodies[i],
                                   ct, &answer),
                         200);
        ck_assert_msg(strcmp(answer, "{\"status\":\"DROP\"}") == 0,
                      "body %zu answered %s", i, answer);
        free(answer);
    }
    /* bulk: one good entry, one bad, one without an event */
    evbus_event_t *ev = event(3);
    char *good = evbus_event_to_json(ev, NULL);
    size_t n = strlen(good) + 512;
    char *bulk = malloc(n);
    snprintf(bulk, n,
             "{\"id\":\"b1\",\"type\":\"com.dapr.event.sent.bulk\","
             "\"topic\":\"bad\",\"pubsubname\":\"pubsub\",\"entries\":["
             "{\"entryId\":\"ok\",\"event\":%s,\"contentType\":"
             "\"application/cloudevents+json\"},"
             "{\"entryId\":\"broken\",\"event\":{\"nope\":1},"
             "\"contentType\":\"application/cloudevents+json\"},"
             "{\"entryId\":\"empty\"}]}",
             good);
    char *answer = NULL;
    ck_assert_int_eq(
        http_call(s.app_port, "/evbus/pubsub/bad", bulk, ct, &answer), 200);
    ck_assert_str_eq(answer,
                     "{\"statuses\":[{\"entryId\":\"ok\",\"status\":"
                     "\"SUCCESS\"},{\"entryId\":\"broken\",\"status\":"
                     "\"DROP\"},{\"entryId\":\"empty\",\"status\":\"DROP\"}]}");
    free(answer);
    /* an unknown route is 404 (the sidecar drops it) */
    ck_assert_int_eq(
        http_call(s.app_port, "/evbus/pubsub/other", good, ct, NULL), 404);
    ck_assert_int_eq(counter_get(&c, &c.calls), 1);
    /* and the bus still works */
    ck_assert_int_eq(evbus_publish(bus, "bad", ev), EVBUS_OK);
    uint64_t end = now_ms() + 10000;
    while (counter_get(&c, &c.calls) < 2 && now_ms() < end)
        usleep(10 * 1000);
    ck_assert_int_eq(counter_get(&c, &c.calls), 2);
    evbus_stop(bus);
    pthread_join(th, NULL);
    free(bulk);
    free(good);
    evbus_event_free(ev);
    evbus_event_free(c.last);
    evbus_close(bus);
    standin_stop(&s);
}
END_TEST

START_TEST(subscribe_without_app_port_fails)
{
    standin_t s = start(NULL);
    char url[256];
    snprintf(url, sizeof url, "dapr://127.0.0.1:%d", s.port);
    unsetenv("APP_PORT");
    evbus_t *bus = open_url(url);
    counter_t c;
    counter_init(&c, EVBUS_ACK);
    char why[512];
    ck_assert_ptr_null(evbus_subscribe_opts(bus, "t", "g", NULL,
                                            count_handler, &c, why,
                                            sizeof why));
    ck_assert_msg(strncmp(why, "EVBUS_EINVAL:", 13) == 0, "%s", why);
    evbus_close(bus);
    /* unknown options are refused */
    char err[256] = "";
    snprintf(url, sizeof url, "dapr://127.0.0.1:%d?pubsb=x", s.port);
    ck_assert_ptr_null(evbus_open(url, err, sizeof err));
    standin_stop(&s);
}
END_TEST

START_TEST(sidecar_reading_subscriptions_once_sees_them_all)
{
    /* daprd reads /dapr/subscribe once, when the port first answers */
    standin_t s = start((const char *const[]){"--resubscribe-ms", "0", NULL});
    evbus_t *bus = open_standin(&s, "");
    counter_t c;
    counter_init(&c, EVBUS_ACK);
    const char *topics[] = {"once.a", "once.b", "once.c"};
    for (int i = 0; i < 3; i++)
        ck_assert_ptr_nonnull(
            evbus_subscribe(bus, topics[i], "g", count_handler, &c));
    for (int i = 0; i < 3; i++) {
        evbus_event_t *ev = event(i);
        ck_assert_int_eq(evbus_publish(bus, topics[i], ev), EVBUS_OK);
        evbus_event_free(ev);
    }
    ck_assert_int_eq(poll_until(bus, &c, &c.acked, 3, 20000), 3);
    ck_assert_int_eq(standin_stat(&s, "subscribe_reads"), 1);
    evbus_event_free(c.last);
    evbus_close(bus);
    standin_stop(&s);
}
END_TEST

START_TEST(unpolled_delivery_goes_back_as_retry)
{
    standin_t s = start(NULL);
    evbus_t *bus = open_standin(&s, "&deliver_timeout_ms=200");
    counter_t c;
    counter_init(&c, EVBUS_ACK);
    ck_assert_ptr_nonnull(evbus_subscribe(bus, "idle", "g", count_handler,
                                          &c));
    evbus_poll(bus, 0); /* opens the port; nobody polls afterwards */
    evbus_event_t *ev = event(1);
    char *ce = evbus_event_to_json(ev, NULL);
    const char *ct[] = {"Content-Type: application/cloudevents+json", NULL};
    char *answer = NULL;
    uint64_t t0 = now_ms();
    ck_assert_int_eq(http_call(s.app_port, "/evbus/pubsub/idle", ce, ct,
                               &answer),
                     200);
    ck_assert_uint_ge(now_ms() - t0, 150);
    ck_assert_str_eq(answer, "{\"status\":\"RETRY\"}");
    free(answer);
    /* the withdrawn copy is not handed out any more */
    evbus_poll(bus, 50);
    ck_assert_int_eq(counter_get(&c, &c.calls), 0);
    free(ce);
    evbus_event_free(ev);
    evbus_close(bus);
    standin_stop(&s);
}
END_TEST

START_TEST(buses_share_an_app_port)
{
    standin_t s = start(NULL);
    evbus_t *a = open_standin(&s, "");
    evbus_t *b = open_standin(&s, "");
    evbus_t *other = open_standin(&s, "&app_api_token=x");
    counter_t ca, cb;
    counter_init(&ca, EVBUS_ACK);
    counter_init(&cb, EVBUS_ACK);
    ck_assert_ptr_nonnull(evbus_subscribe(a, "shared", "g1", count_handler,
                                          &ca));
    ck_assert_ptr_nonnull(evbus_subscribe(b, "shared", "g2", count_handler,
                                          &cb));
    /* one port, one token */
    char why[512];
    ck_assert_ptr_null(evbus_subscribe_opts(other, "shared", "g3", NULL,
                                            count_handler, &ca, why,
                                            sizeof why));
    ck_assert_msg(strncmp(why, "EVBUS_EINVAL:", 13) == 0, "%s", why);
    /* same id, different bytes: counted apart, both first attempts */
    evbus_event_t *ev = event(1);
    ck_assert_int_eq(evbus_publish(a, "shared", ev), EVBUS_OK);
    ck_assert_int_eq(evbus_event_set_ext(ev, "n", "2"), EVBUS_OK);
    ck_assert_int_eq(evbus_publish(a, "shared", ev), EVBUS_OK);
    uint64_t end = now_ms() + 20000;
    while ((counter_get(&ca, &ca.acked) < 2 ||
            counter_get(&cb, &cb.acked) < 2) &&
           now_ms() < end) {
        evbus_poll(a, 10);
        evbus_poll(b, 10);
    }
    ck_assert_int_eq(counter_get(&ca, &ca.acked), 2);
    ck_assert_int_eq(counter_get(&cb, &cb.acked), 2);
    ck_assert_int_eq(ca.max_attempt, 1);
    ck_assert_int_eq(cb.max_attempt, 1);
    evbus_event_free(ev);
    evbus_event_free(ca.last);
    evbus_event_free(cb.last);
    evbus_close(other);
    evbus_close(a);
    evbus_close(b);
    standin_stop(&s);
}
END_TEST

START_TEST(undecodable_deadletter_mode_goes_through_the_core)
{
    standin_t s = start(NULL);
    evbus_t *bus = open_standin(&s, "&undecodable=deadletter");
    counter_t c;
    counter_init(&c, EVBUS_ACK);
    evbus_sub_t *sub = evbus_subscribe(bus, "bad2", "g", count_handler, &c);
    ck_assert_ptr_nonnull(sub);
    pthread_t th;
    pthread_create(&th, NULL, run_bus, bus);
    usleep(100 * 1000);
    const char *ct[] = {"Content-Type: application/cloudevents+json", NULL};
    char *answer = NULL;
    ck_assert_int_eq(http_call(s.app_port, "/evbus/pubsub/bad2",
                               "not json at all", ct, &answer),
                     200);
    ck_assert_str_eq(answer, "{\"status\":\"SUCCESS\"}");
    free(answer);
    evbus_stop(bus);
    pthread_join(th, NULL);
    ck_assert_int_eq(counter_get(&c, &c.calls), 0);
    cJSON *dlq = topic_log(&s, "bad2.dlq");
    ck_assert_int_eq(cJSON_GetArraySize(dlq), 1);
    cJSON *dl = cJSON_GetObjectItem(cJSON_GetArrayItem(dlq, 0), "event");
    ck_assert_str_eq(cJSON_GetObjectItem(dl, "type")->valuestring,
                     "evbus.deadletter.undecodable");
    ck_assert_ptr_nonnull(strstr(
        cJSON_GetObjectItem(dl, "dlqreason")->valuestring, "undecodable"));
    cJSON_Delete(dlq);
    evbus_sub_metrics_t m;
    evbus_sub_metrics_init(&m);
    evbus_sub_metrics_get(sub, &m);
    ck_assert_uint_eq(m.undecodable, 1);
    evbus_close(bus);
    /* anything else is refused */
    char url[256], err[256] = "";
    standin_url(&s, url, sizeof url, "&undecodable=maybe");
    ck_assert_ptr_null(evbus_open(url, err, sizeof err));
    standin_stop(&s);
}
END_TEST

int main(int argc, char **argv)
{
    standin_exe = argc > 1 ? argv[1] : getenv("DAPR_STANDIN");
    if (!standin_exe) {
        fprintf(stderr, "usage: %s PATH/TO/dapr-standin\n", argv[0]);
        return 2;
    }
    if (getenv("EVBUS_TEST_LOG"))
        evbus_set_log(evbus_log_stderr, EVBUS_LOG_DEBUG, NULL);
    Suite *s = suite_create("dapr");
    TCase *tc = tcase_create("dapr");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, publish_keeps_id_type_source_and_key);
    tcase_add_test(tc, errors_map_to_evbus_codes);
    tcase_add_test(tc, unreachable_sidecar);
    tcase_add_test(tc, health_checks_outbound);
    tcase_add_test(tc, env_defaults_and_url_wins);
    tcase_add_test(tc, publish_token_both_ways);
    tcase_add_test(tc, async_bulk_retries_only_failed_entries);
    tcase_add_test(tc, async_permanent_failure_reported);
    tcase_add_test(tc, delivery_roundtrip_event_unchanged);
    tcase_add_test(tc, port_opens_on_first_poll_and_lists_subscriptions);
    tcase_add_test(tc, retry_goes_back_to_sidecar_then_dead_letters);
    tcase_add_test(tc, attempts_counted_across_fresh_trace_ids);
    tcase_add_test(tc, async_without_bulk_endpoint_falls_back);
    tcase_add_test(tc, bulk_subscribe_answers_per_entry);
    tcase_add_test(tc, app_token_required_from_sidecar);
    tcase_add_test(tc, app_token_end_to_end);
    tcase_add_test(tc, malformed_bodies_answered_drop);
    tcase_add_test(tc, subscribe_without_app_port_fails);
    tcase_add_test(tc, sidecar_reading_subscriptions_once_sees_them_all);
    tcase_add_test(tc, unpolled_delivery_goes_back_as_retry);
    tcase_add_test(tc, buses_share_an_app_port);
    tcase_add_test(tc, undecodable_deadletter_mode_goes_through_the_core);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? 1 : 0;
}
