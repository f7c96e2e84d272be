/*
 * The dapr:// app server as a CloudEvents HTTP receiver: the test plays
 * the sender (a sidecar stand-in only answers the bus's health check).
 *   - binary mode (ce- headers, body = data) is a CloudEvent: validated
 *     like a structured one, then handled;
 *   - application/cloudevents-batch+json: each entry handled, or 400 with
 *     the reason, never DROP;
 *   - a wrong method on a route is 405 with Allow.
 *
 *   test-dapr-http PATH/TO/dapr-standin
 */
#include <check.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <curl/curl.h>
#include <evbus/evbus.h>

#include "standin_proc.h"

static const char *standin_exe;

/* ---- a handler that keeps every event it is given */
typedef struct {
    pthread_mutex_t mu;
    int calls;
    evbus_event_t *got[16];
} rec_t;

static evbus_result_t rec_handler(const evbus_event_t *ev, void *opaque)
{
    rec_t *r = opaque;
    pthread_mutex_lock(&r->mu);
    if (r->calls < 16)
        r->got[r->calls] = evbus_event_clone(ev);
    r->calls++;
    pthread_mutex_unlock(&r->mu);
    return EVBUS_ACK;
}

static int rec_calls(rec_t *r)
{
    pthread_mutex_lock(&r->mu);
    int n = r->calls;
    pthread_mutex_unlock(&r->mu);
    return n;
}

/* A bus subscribed to topic "t" and run on its own thread. */
typedef struct {
    standin_t s;
    evbus_t *bus;
    pthread_t th;
    rec_t rec;
} app_t;

static void *run_bus(void *arg)
{
    evbus_run(arg);
    return NULL;
}

static void app_start(app_t *a, const char *extra)
{
    memset(a, 0, sizeof *a);
    pthread_mutex_init(&a->rec.mu, NULL);
    ck_assert_int_eq(standin_start(&a->s, standin_exe, NULL), 0);
    char url[512], err[512] = "";
    standin_url(&a->s, url, sizeof url, extra);
    a->bus = evbus_open(url, err, sizeof err);
    ck_assert_msg(a->bus != NULL, "%s", err);
    ck_assert_ptr_nonnull(evbus_subscribe(a->bus, "t", "g", rec_handler,
                                          &a->rec));
    pthread_create(&a->th, NULL, run_bus, a->bus);
    /* the port opens on the first poll: wait until it answers */
    for (int i = 0; i < 500 && http_call(a->s.app_port, "/healthz", NULL,
                                         NULL, NULL) != 200;
         i++)
        usleep(10 * 1000);
}

static void app_stop(app_t *a)
{
    evbus_stop(a->bus);
    pthread_join(a->th, NULL);
    evbus_close(a->bus);
    for (int i = 0; i < a->rec.calls && i < 16; i++)
        evbus_event_free(a->rec.got[i]);
    standin_stop(&a->s);
}

static void post_expect(app_t *a, const void *body, size_t len,
                        const char *const *hdrs, long want_status,
                        const char *want_body)
{
    char *answer = NULL;
    long st = http_request(a->s.app_port, "POST", "/evbus/pubsub/t", body,
                           len, hdrs, &answer, NULL);
    ck_assert_msg(st == want_status && strstr(answer, want_body),
                  "answered %ld %s, want %ld %s", st, answer, want_status,
                  want_body);
    free(answer);
}

/* ------------------------------------------------------------ binary */

START_TEST(binary_mode_is_a_cloudevent)
{
    app_t a;
    app_start(&a, "");
    const char *hdrs[] = {"Content-Type: text/plain; charset=utf-8",
                          "ce-specversion: 1.0",
                          "ce-id: bin-1",
                          "ce-source: /peer/http",
                          "ce-type: peer.thing.done",
                          "ce-subject: caf%C3%A9 100%25",
                          "ce-time: 2024-01-15T10:30:00+01:00",
                          "ce-dataschema: https://x.test/s.json",
                          "CE-MyExt: v1",
                          NULL};
    post_expect(&a, "hello \xc3\xa9", 7, hdrs, 200, "\"SUCCESS\"");
    ck_assert_int_eq(rec_calls(&a.rec), 1);
    evbus_event_t *ev = a.rec.got[0];
    ck_assert_str_eq(evbus_event_id(ev), "bin-1");
    ck_assert_str_eq(evbus_event_source(ev), "/peer/http");
    ck_assert_str_eq(evbus_event_type(ev), "peer.thing.done");
    ck_assert_str_eq(evbus_event_subject(ev), "caf\xc3\xa9 100%");
    ck_assert_str_eq(evbus_event_time(ev), "2024-01-15T10:30:00+01:00");
    ck_assert_str_eq(evbus_event_dataschema(ev), "https://x.test/s.json");
    ck_assert_str_eq(evbus_event_ext(ev, "myext"), "v1");
    ck_assert_str_eq(evbus_event_datacontenttype(ev),
                     "text/plain; charset=utf-8");
    ck_assert_int_eq((int)evbus_event_data_len(ev), 7);
    ck_assert_int_eq(memcmp(evbus_event_data(ev), "hello \xc3\xa9", 7), 0);

    /* no Content-Type: no datacontenttype, the bytes as they are */
    const char *bare[] = {"ce-specversion: 1.0", "ce-id: bin-2",
                          "ce-source: /peer/http", "ce-type: peer.thing.done",
                          "Content-Type:", NULL};
    const unsigned char bytes[] = {'{', '"', 'a', '"', ':', '1', '}'};
    post_expect(&a, bytes, sizeof bytes, bare, 200, "\"SUCCESS\"");
    ck_assert_int_eq(rec_calls(&a.rec), 2);
    ev = a.rec.got[1];
    ck_assert_ptr_null(evbus_event_datacontenttype(ev));
    ck_assert_int_eq((int)evbus_event_data_len(ev), (int)sizeof bytes);
    ck_assert_int_eq(memcmp(evbus_event_data(ev), bytes, sizeof bytes), 0);

    /* many extensions: every ce- header arrives (none cut at a fixed
     * count) */
    enum { NEXT = 100 };
    const char *many[NEXT + 6];
    static char lines[NEXT][32];
    int k = 0;
    many[k++] = "ce-specversion: 1.0";
    many[k++] = "ce-id: bin-3";
    many[k++] = "ce-source: /peer/http";
    many[k++] = "ce-type: peer.thing.done";
    for (int i = 0; i < NEXT; i++) {
        snprintf(lines[i], sizeof lines[i], "ce-x%d: v%d", i, i);
        many[k++] = lines[i];
    }
    many[k] = NULL;
    post_expect(&a, "x", 1, many, 200, "\"SUCCESS\"");
    ck_assert_int_eq(rec_calls(&a.rec), 3);
    ev = a.rec.got[2];
    ck_assert_int_eq((int)evbus_event_ext_count(ev), NEXT);
    ck_assert_str_eq(evbus_event_ext(ev, "x99"), "v99");
    app_stop(&a);
}
END_TEST

START_TEST(binary_mode_is_validated_like_structured)
{
    app_t a;
    app_start(&a, "");
    /* each refused: DROP with no handler call */
    const char *no_id[] = {"ce-specversion: 1.0", "ce-source: /p",
                           "ce-type: a.b.c", NULL};
    const char *bad_utf8[] = {"ce-specversion: 1.0", "ce-id: x",
                              "ce-source: /p", "ce-type: a.b.c",
                              "ce-subject: a%C0%80", NULL};
    const char *bad_time[] = {"ce-specversion: 1.0", "ce-id: x",
                              "ce-source: /p", "ce-type: a.b.c",
                              "ce-time: yesterday", NULL};
    const char *bad_json[] = {"ce-specversion: 1.0", "ce-id: x",
                              "ce-source: /p", "ce-type: a.b.c",
                              "Content-Type: application/json", NULL};
    const char *bad_version[] = {"ce-specversion: 0.3", "ce-id: x",
                                 "ce-source: /p", "ce-type: a.b.c", NULL};
    /* a percent-encoded NUL would cut the value short ("a" for "a%00b") */
    const char *nul_id[] = {"ce-specversion: 1.0", "ce-id: a%00b",
                            "ce-source: /p", "ce-type: a.b.c", NULL};
    const char *nul_ext[] = {"ce-specversion: 1.0", "ce-id: x",
                             "ce-source: /p", "ce-type: a.b.c",
                             "ce-myext: v%00", NULL};
    const char *const *cases[] = {no_id,   bad_utf8,    bad_time, bad_json,
                                  bad_version, nul_id, nul_ext};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        post_expect(&a, "{x", 2, cases[i], 200, "\"DROP\"");
    ck_assert_int_eq(rec_calls(&a.rec), 0);
    app_stop(&a);
}
END_TEST

/* ------------------------------------------------------------ batch */

static char *event_json(const char *id)
{
    evbus_event_t *ev = evbus_event_new("peer.thing.done", "/peer/batch");
    evbus_event_set_id(ev, id);
    evbus_event_set_data_json(ev, "{\"n\":1.50,\"big\":12345678901234567890}");
    char *j = evbus_event_to_json(ev, NULL);
    evbus_event_free(ev);
    return j;
}

START_TEST(batch_entries_each_delivered)
{
    app_t a;
    app_start(&a, "");
    const char *ct[] = {"Content-Type: application/cloudevents-batch+json",
                        NULL};
    char *e1 = event_json("b-1"), *e2 = event_json("b-2");
    char body[2048];
    snprintf(body, sizeof body, " [ %s ,\n%s ] ", e1, e2);
    post_expect(&a, body, strlen(body), ct, 200, "\"SUCCESS\"");
    ck_assert_int_eq(rec_calls(&a.rec), 2);
    ck_assert_str_eq(evbus_event_id(a.rec.got[0]), "b-1");
    ck_assert_str_eq(evbus_event_id(a.rec.got[1]), "b-2");
    /* the data's exact text survives (no reprinting of numbers) */
    ck_assert_str_eq(evbus_event_data(a.rec.got[1]),
                     "{\"n\":1.50,\"big\":12345678901234567890}");
    /* an empty batch is fine */
    post_expect(&a, "[]", 2, ct, 200, "\"SUCCESS\"");
    /* a bad entry: 400 naming it, nothing handled, no DROP */
    snprintf(body, sizeof body, "[%s,{\"id\":\"x\"}]", e1);
    post_expect(&a, body, strlen(body), ct, 400, "batch entry 1");
    /* not an array */
    post_expect(&a, e1, strlen(e1), ct, 400, "JSON array");
    post_expect(&a, "[1,", 3, ct, 400, "JSON array");
    ck_assert_int_eq(rec_calls(&a.rec), 2);
    free(e1);
    free(e2);
    app_stop(&a);
}
END_TEST

/* Dapr's bulk envelope: each entry's event is decoded from its exact
 * text, like a batch entry - no reprinting of numbers, and a \u0000 is
 * refused rather than cutting the string short. */
START_TEST(bulk_envelope_entries_keep_their_bytes)
{
    app_t a;
    app_start(&a, "");
    const char *ct[] = {"Content-Type: application/cloudevents+json", NULL};
    char *e1 = event_json("k-1");
    char body[2048];
    snprintf(body, sizeof body,
             "{\"type\":\"com.dapr.event.sent.bulk\",\"id\":\"env\","
             "\"entries\":[{\"entryId\":\"1\",\"event\":%s,"
             "\"contentType\":\"application/cloudevents+json\"},"
             " {\"entryId\":\"2\",\"event\":{\"specversion\":\"1.0\","
             "\"id\":\"x\\u0000y\",\"source\":\"/s\",\"type\":\"a.b.c\"},"
             "\"contentType\":\"application/cloudevents+json\"}]}",
             e1);
    post_expect(&a, body, strlen(body), ct, 200,
                "{\"entryId\":\"2\",\"status\":\"DROP\"}");
    ck_assert_int_eq(rec_calls(&a.rec), 1);
    ck_assert_str_eq(evbus_event_id(a.rec.got[0]), "k-1");
    ck_assert_str_eq(evbus_event_data(a.rec.got[0]),
                     "{\"n\":1.50,\"big\":12345678901234567890}");
    free(e1);
    app_stop(&a);
}
END_TEST

/* ------------------------------------------------------------ methods */

START_TEST(wrong_method_is_405_with_allow)
{
    app_t a;
    app_start(&a, "");
    static const struct {
        const char *method, *path, *allow;
    } cases[] = {
        {"GET", "/evbus/pubsub/t", "POST"},
        {"PUT", "/evbus/pubsub/t", "POST"},
        {"DELETE", "/evbus/pubsub/unknown", "POST"},
        {"POST", "/dapr/subscribe", "GET"},
        {"PUT", "/healthz", "GET"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char *hdrs = NULL;
        long st = http_request(a.s.app_port, cases[i].method,
                               cases[i].path, NULL, 0, NULL, NULL, &hdrs);
        char want[32];
        snprintf(want, sizeof want, "Allow: %s", cases[i].allow);
        ck_assert_msg(st == 405 && strcasestr(hdrs, want),
                      "%s %s: %ld\n%s", cases[i].method, cases[i].path, st,
                      hdrs);
        free(hdrs);
    }
    /* other paths stay 404 */
    ck_assert_int_eq(http_request(a.s.app_port, "GET", "/nothing", NULL, 0,
                                  NULL, NULL, NULL),
                     404);
    ck_assert_int_eq(rec_calls(&a.rec), 0);
    app_stop(&a);
}
END_TEST

/* ------------------------------------------------------------ close */

typedef struct {
    int port;
    long status;
    char *answer;
} poster_t;

static void *post_one(void *arg)
{
    poster_t *p = arg;
    evbus_event_t *ev = evbus_event_new("peer.thing.done", "/peer/close");
    char *body = evbus_event_to_json(ev, NULL);
    const char *hdrs[] = {"Content-Type: application/cloudevents+json", NULL};
    p->status = http_call(p->port, "/evbus/pubsub/t", body, hdrs, &p->answer);
    free(body);
    evbus_event_free(ev);
    return NULL;
}

/* An app that closes its bus as soon as its handler acked: the sidecar
 * must still get the SUCCESS answer (a lost answer means a redelivery). */
START_TEST(close_right_after_ack_still_answers)
{
    standin_t s;
    ck_assert_int_eq(standin_start(&s, standin_exe, NULL), 0);
    char url[512], err[512] = "";
    standin_url(&s, url, sizeof url, "");
    for (int round = 0; round < 10; round++) {
        evbus_t *bus = evbus_open(url, err, sizeof err);
        ck_assert_msg(bus != NULL, "%s", err);
        rec_t rec;
        memset(&rec, 0, sizeof rec);
        pthread_mutex_init(&rec.mu, NULL);
        ck_assert_ptr_nonnull(evbus_subscribe(bus, "t", "g", rec_handler,
                                              &rec));
        ck_assert_int_ge(evbus_poll(bus, 0), 0); /* opens the port */
        poster_t p = {.port = s.app_port};
        pthread_t th;
        pthread_create(&th, NULL, post_one, &p);
        for (int i = 0; i < 3000 && rec_calls(&rec) == 0; i++)
            ck_assert_int_ge(evbus_poll(bus, 20), 0);
        ck_assert_int_eq(rec_calls(&rec), 1);
        evbus_close(bus);
        pthread_join(th, NULL);
        ck_assert_msg(p.status == 200 && strstr(p.answer, "SUCCESS"),
                      "round %d: answered %ld '%s'", round, p.status,
                      p.answer ? p.answer : "");
        free(p.answer);
        evbus_event_free(rec.got[0]);
    }
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
    curl_global_init(CURL_GLOBAL_DEFAULT);
    Suite *s = suite_create("dapr-http");
    TCase *tc = tcase_create("http");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, binary_mode_is_a_cloudevent);
    tcase_add_test(tc, binary_mode_is_validated_like_structured);
    tcase_add_test(tc, batch_entries_each_delivered);
    tcase_add_test(tc, bulk_envelope_entries_keep_their_bytes);
    tcase_add_test(tc, wrong_method_is_405_with_allow);
    tcase_add_test(tc, close_right_after_ack_still_answers);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? 1 : 0;
}
