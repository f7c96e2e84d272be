/*
 * kafka:// backend tests against an in-process librdkafka mock cluster:
 * options and their errors, health, the CloudEvents Kafka binding
 * (structured, binary, bare JSON from Dapr) and the offset watermark.
 */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cjson/cJSON.h>

#include "kafka_test_util.h"

#ifndef TESTDATA_DIR
#error TESTDATA_DIR must be defined
#endif

/* ---------------------------------------------------------------- options */

static void expect_open_error(const char *url, const char *needle)
{
    char err[512] = "";
    evbus_t *bus = evbus_open(url, err, sizeof err);
    ck_assert_msg(bus == NULL, "%s opened", url);
    ck_assert_msg(strstr(err, needle) != NULL,
                  "error for %s does not name '%s': %s", url, needle, err);
}

START_TEST(bad_property_is_named)
{
    /* no cluster needed: configuration fails before any connection */
    expect_open_error("kafka://127.0.0.1:1?kafka.linger.mss=5", "linger.mss");
    expect_open_error("kafka://127.0.0.1:1?kafka.linger.ms=soon",
                      "kafka.linger.ms");
    expect_open_error("kafka://127.0.0.1:1?kafka.consumer.no.such.thing=1",
                      "no.such.thing");
    expect_open_error("kafka://127.0.0.1:1?kafka.group.id=x", "group.id");
    expect_open_error("kafka://127.0.0.1:1?content_mode=telepathy",
                      "content_mode");
    expect_open_error("kafka://127.0.0.1:1?connect_timeout_ms=-3",
                      "connect_timeout_ms");
    expect_open_error("kafka://127.0.0.1:1?nonsense=1", "nonsense");
    expect_open_error("kafka://", "broker");
}
END_TEST

START_TEST(unreachable_cluster_fails_open)
{
    char err[512] = "";
    time_t t0 = time(NULL);
    evbus_t *bus = evbus_open("kafka://127.0.0.1:1?connect_timeout_ms=1500",
                              err, sizeof err);
    ck_assert_ptr_null(bus);
    ck_assert_msg(strstr(err, "cannot reach") != NULL, "%s", err);
    ck_assert_int_le(time(NULL) - t0, 10);
}
END_TEST

START_TEST(passthrough_properties_accepted_and_health)
{
    kt_mock_t m;
    kt_mock_start(&m, 1, "&kafka.linger.ms=1&kafka.producer.acks=all"
                         "&kafka.consumer.fetch.wait.max.ms=10"
                         "&content_mode=structured&connect_timeout_ms=5000");
    char err[512] = "";
    evbus_t *bus = evbus_open(m.url, err, sizeof err);
    ck_assert_msg(bus != NULL, "%s", err);
    ck_assert_str_eq(evbus_scheme(bus), "kafka");
    unsigned f = evbus_features(bus);
    ck_assert(f & EVBUS_FEAT_PERSISTENT);
    ck_assert(f & EVBUS_FEAT_ORDERED_BY_KEY);
    ck_assert(f & EVBUS_FEAT_CROSS_PROCESS);
    ck_assert(!(f & EVBUS_FEAT_DELAYED_RETRY));
    ck_assert_int_eq(evbus_health(bus, err, sizeof err), EVBUS_OK);
    rd_kafka_mock_broker_set_down(m.mc, 1);
    int rc = evbus_health(bus, err, sizeof err);
    ck_assert_msg(rc != EVBUS_OK, "health OK with the only broker down");
    ck_assert(strlen(err) > 0);
    rd_kafka_mock_broker_set_up(m.mc, 1);
    rc = EVBUS_EIO;
    for (int i = 0; i < 10 && rc != EVBUS_OK; i++)
        rc = evbus_health(bus, err, sizeof err);
    ck_assert_msg(rc == EVBUS_OK, "health after broker came back: %s", err);
    /* topic names Kafka cannot carry are refused, not sent */
    evbus_event_t *ev = kt_event(1);
    ck_assert_int_eq(evbus_publish(bus, "bad/topic", ev), EVBUS_EINVAL);
    ck_assert_ptr_null(evbus_subscribe(bus, "^regex.*", "g", kt_handler, NULL));
    evbus_event_free(ev);
    evbus_close(bus);
    kt_mock_stop(&m);
}
END_TEST

/* ---------------------------------------------------------------- wire */

static const char *hdr(rd_kafka_message_t *m, const char *name, char *buf,
                       size_t n)
{
    rd_kafka_headers_t *h = NULL;
    const void *v;
    size_t size;
    if (rd_kafka_message_headers(m, &h) ||
        rd_kafka_header_get_last(h, name, &v, &size))
        return NULL;
    snprintf(buf, n, "%.*s", (int)size, (const char *)v);
    return buf;
}

START_TEST(structured_mode_record_layout)
{
    kt_mock_t m;
    kt_mock_start(&m, 1, "");
    char err[512], topic[128], buf[256];
    kt_topic(topic, sizeof topic, "structured");
    evbus_t *bus = evbus_open(m.url, err, sizeof err);
    ck_assert_msg(bus != NULL, "%s", err);
    evbus_event_t *ev = kt_event(3);
    ck_assert_int_eq(evbus_event_set_ext(ev, "partitionkey", "user-42"),
                     EVBUS_OK);
    ck_assert_int_eq(evbus_publish(bus, topic, ev), EVBUS_OK);

    rd_kafka_t *raw = kt_raw_consumer(m.brokers, "raw", topic);
    rd_kafka_message_t *rec = kt_raw_next(raw, 20000);
    ck_assert_ptr_nonnull(rec);
    ck_assert_str_eq(hdr(rec, "content-type", buf, sizeof buf),
                     "application/cloudevents+json");
    ck_assert_int_eq((int)rec->key_len, 7);
    ck_assert_int_eq(memcmp(rec->key, "user-42", 7), 0);
    evbus_event_t *back =
        evbus_event_from_json(rec->payload, rec->len, err, sizeof err);
    ck_assert_msg(back != NULL, "%s", err);
    ck_assert(evbus_event_equal(back, ev));
    evbus_event_free(back);
    rd_kafka_message_destroy(rec);
    rd_kafka_consumer_close(raw);
    rd_kafka_destroy(raw);
    evbus_event_free(ev);
    evbus_close(bus);
    kt_mock_stop(&m);
}
END_TEST

START_TEST(binary_mode_roundtrip_and_headers)
{
    kt_mock_t m;
    kt_mock_start(&m, 1, "&content_mode=binary");
    char err[512], topic[128], buf[256];
    kt_topic(topic, sizeof topic, "binary");
    evbus_t *bus = evbus_open(m.url, err, sizeof err);
    ck_assert_msg(bus != NULL, "%s", err);
    kt_collector_t c;
    kt_collector_init(&c, KT_ACK);
    ck_assert_ptr_nonnull(evbus_subscribe(bus, topic, "g", kt_handler, &c));

    /* binary bytes first, then text; one key keeps them in order */
    evbus_event_t *bin = evbus_event_new("todos.blob.sent", "/todos/api");
    const unsigned char bytes[] = {0, 1, 2, 0xff, 'x'};
    ck_assert_int_eq(evbus_event_set_data(bin, bytes, sizeof bytes,
                                          "application/octet-stream"),
                     EVBUS_OK);
    ck_assert_int_eq(evbus_event_set_ext(bin, "seq", "10"), EVBUS_OK);
    ck_assert_int_eq(evbus_event_set_ext(bin, "partitionkey", "k1"), EVBUS_OK);
    ck_assert_int_eq(evbus_publish(bus, topic, bin), EVBUS_OK);

    evbus_event_t *ev = evbus_event_new("todos.task.created", "/todos/api");
    ck_assert_int_eq(evbus_event_set_subject(ev, "task/123"), EVBUS_OK);
    ck_assert_int_eq(evbus_event_set_time(ev, "2024-01-15T10:30:00Z"),
                     EVBUS_OK);
    ck_assert_int_eq(evbus_event_set_dataschema(ev, "https://x.test/s.json"),
                     EVBUS_OK);
    ck_assert_int_eq(evbus_event_set_ext(ev, "seq", "9"), EVBUS_OK);
    ck_assert_int_eq(evbus_event_set_ext(ev, "partitionkey", "k1"), EVBUS_OK);
    const char text[] = "plain text \xc3\xa9 payload";
    ck_assert_int_eq(evbus_event_set_data(ev, text, sizeof text - 1,
                                          "text/plain; charset=utf-8"),
                     EVBUS_OK);
    ck_assert_int_eq(evbus_publish(bus, topic, ev), EVBUS_OK);

    evbus_t *buses[] = {bus, NULL};
    ck_assert_int_eq(kt_poll_until(buses, &c, kt_acked, 2, 30000), 2);
    ck_assert_int_eq(c.seen[9] + c.seen[10], 2);
    /* the consumer rebuilt the same event from headers and value */
    ck_assert_msg(evbus_event_equal(c.last, ev),
                  "binary-mode event changed on the way");

    /* what is on the wire: value = data, attributes in ce_ headers */
    rd_kafka_t *raw = kt_raw_consumer(m.brokers, "raw", topic);
    int found = 0;
    for (int i = 0; i < 2; i++) {
        rd_kafka_message_t *rec = kt_raw_next(raw, 20000);
        ck_assert_ptr_nonnull(rec);
        const char *seq = hdr(rec, "ce_seq", buf, sizeof buf);
        ck_assert_ptr_nonnull(seq);
        ck_assert_int_eq(memcmp(rec->key, "k1", 2), 0);
        if (strcmp(seq, "9") == 0) {
            found++;
            ck_assert_int_eq((int)rec->len, (int)sizeof text - 1);
            ck_assert_int_eq(memcmp(rec->payload, text, rec->len), 0);
            ck_assert_str_eq(hdr(rec, "content-type", buf, sizeof buf),
                             "text/plain; charset=utf-8");
            ck_assert_str_eq(hdr(rec, "ce_id", buf, sizeof buf),
                             evbus_event_id(ev));
            ck_assert_str_eq(hdr(rec, "ce_specversion", buf, sizeof buf),
                             "1.0");
            ck_assert_str_eq(hdr(rec, "ce_subject", buf, sizeof buf),
                             "task/123");
        } else {
            ck_assert_int_eq((int)rec->len, (int)sizeof bytes);
            ck_assert_int_eq(memcmp(rec->payload, bytes, rec->len), 0);
        }
        rd_kafka_message_destroy(rec);
    }
    ck_assert_int_eq(found, 1);
    rd_kafka_consumer_close(raw);
    rd_kafka_destroy(raw);
    evbus_event_free(ev);
    evbus_event_free(bin);
    evbus_close(bus);
    kt_collector_free(&c);
    kt_mock_stop(&m);
}
END_TEST

/* The event a Dapr sidecar writes (tests/testdata/dapr/kafka-record.json):
 * value = bare JSON event, no content-type header. */
static evbus_event_t *dapr_last;
static evbus_result_t keep_event(const evbus_event_t *ev, void *opaque)
{
    (void)opaque;
    evbus_event_free(dapr_last);
    dapr_last = evbus_event_clone(ev);
    return EVBUS_ACK;
}

static char *slurp(const char *path)
{
    FILE *f = fopen(path, "rb");
    ck_assert_msg(f != NULL, "cannot open %s", path);
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *buf = malloc((size_t)n + 1);
    ck_assert_int_eq(fread(buf, 1, (size_t)n, f), (size_t)n);
    buf[n] = '\0';
    fclose(f);
    return buf;
}

START_TEST(dapr_bare_json_record_is_decoded)
{
    kt_mock_t m;
    kt_mock_start(&m, 1, "");
    char *text = slurp(TESTDATA_DIR "/dapr/kafka-record.json");
    cJSON *rec = cJSON_Parse(text);
    ck_assert_ptr_nonnull(rec);
    const char *key = cJSON_GetObjectItem(rec, "key")->valuestring;
    const char *value = cJSON_GetObjectItem(rec, "value")->valuestring;
    char topic[128], err[512];
    kt_topic(topic, sizeof topic, "dapr");

    rd_kafka_t *p = kt_raw_producer(m.brokers);
    ck_assert_int_eq(rd_kafka_producev(p, RD_KAFKA_V_TOPIC(topic),
                                       RD_KAFKA_V_KEY(key, strlen(key)),
                                       RD_KAFKA_V_VALUE((void *)value,
                                                        strlen(value)),
                                       RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
                                       RD_KAFKA_V_END),
                     0);
    ck_assert_int_eq(rd_kafka_flush(p, 10000), 0);
    rd_kafka_destroy(p);

    evbus_t *bus = evbus_open(m.url, err, sizeof err);
    ck_assert_msg(bus != NULL, "%s", err);
    ck_assert_ptr_nonnull(evbus_subscribe(bus, topic, "g", keep_event, NULL));
    for (int i = 0; i < 300 && !dapr_last; i++)
        evbus_poll(bus, 100);
    ck_assert_ptr_nonnull(dapr_last);
    ck_assert_str_eq(evbus_event_id(dapr_last),
                     "5929aaac-a5e2-4ca1-859c-edfe73f11565");
    ck_assert_str_eq(evbus_event_type(dapr_last), "com.dapr.event.sent");
    ck_assert_str_eq(evbus_event_source(dapr_last), "checkout");
    ck_assert_str_eq(evbus_event_ext(dapr_last, "traceparent"),
                     "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01");
    ck_assert_str_eq(evbus_event_ext(dapr_last, "pubsubname"), "pubsub");
    cJSON *data = cJSON_Parse(evbus_event_data(dapr_last));
    ck_assert_ptr_nonnull(data);
    ck_assert_str_eq(cJSON_GetObjectItem(data, "orderId")->valuestring, "100");
    ck_assert_int_eq(cJSON_GetObjectItem(data, "items")->valueint, 3);
    cJSON_Delete(data);
    evbus_event_free(dapr_last);
    dapr_last = NULL;
    cJSON_Delete(rec);
    free(text);
    evbus_close(bus);
    kt_mock_stop(&m);
}
END_TEST

/* Consumes topic on a default bus until its dead-letter topic holds one
 * event, checks no handler ran on topic, and returns that dead letter
 * (caller frees). */
static evbus_event_t *only_dead_letter(const char *url, const char *topic,
                                       int ms)
{
    char dlq[160], err[512];
    snprintf(dlq, sizeof dlq, "%s.dlq", topic);
    evbus_t *bus = evbus_open(url, err, sizeof err);
    ck_assert_msg(bus != NULL, "%s", err);
    kt_collector_t c, d;
    kt_collector_init(&c, KT_ACK);
    kt_collector_init(&d, KT_ACK);
    ck_assert_ptr_nonnull(evbus_subscribe(bus, topic, "g", kt_handler, &c));
    ck_assert_ptr_nonnull(evbus_subscribe(bus, dlq, "g", kt_handler, &d));
    evbus_t *buses[] = {bus, NULL};
    ck_assert_int_eq(kt_poll_until(buses, &d, kt_acked, 1, ms), 1);
    ck_assert_int_eq(c.calls, 0);
    evbus_close(bus);
    evbus_event_t *dl = d.last;
    d.last = NULL;
    kt_collector_free(&c);
    kt_collector_free(&d);
    ck_assert_str_eq(evbus_event_type(dl), "evbus.deadletter.undecodable");
    return dl;
}

START_TEST(broken_binary_record_is_dead_lettered)
{
    kt_mock_t m;
    kt_mock_start(&m, 1, "");
    char topic[128];
    kt_topic(topic, sizeof topic, "badbin");
    rd_kafka_t *p = kt_raw_producer(m.brokers);
    /* ce_ headers without ce_type / ce_source */
    ck_assert_int_eq(rd_kafka_producev(
                         p, RD_KAFKA_V_TOPIC(topic),
                         RD_KAFKA_V_VALUE("x", 1),
                         RD_KAFKA_V_HEADER("ce_specversion", "1.0", 3),
                         RD_KAFKA_V_HEADER("ce_id", "b1", 2),
                         RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
                         RD_KAFKA_V_END),
                     0);
    ck_assert_int_eq(rd_kafka_flush(p, 10000), 0);
    rd_kafka_destroy(p);
    evbus_event_t *dl = only_dead_letter(m.url, topic, 30000);
    ck_assert_ptr_nonnull(strstr(evbus_event_ext(dl, "dlqreason"), "ce_"));
    evbus_event_free(dl);
    kt_mock_stop(&m);
}
END_TEST

/* A record over the consumer's max_event_bytes, written by a producer
 * with larger limits: its dead letter, cut to max_event_bytes (1 MiB),
 * would still be over librdkafka's message.max.bytes (1,000,000 by
 * default), and the event was held and given back for ever. It must reach
 * the dead-letter topic, cut further. */
START_TEST(oversized_record_dead_letter_fits_kafka)
{
    kt_mock_t m;
    kt_mock_start(&m, 1, "");
    char topic[128], url[1200], err[512];
    kt_topic(topic, sizeof topic, "oversized");
    snprintf(url, sizeof url, "%s&max_event_bytes=5000000"
             "&kafka.message.max.bytes=10000000", m.url);
    evbus_t *big = evbus_open(url, err, sizeof err);
    ck_assert_msg(big != NULL, "%s", err);
    size_t n = 3000000;
    char *text = malloc(n);
    ck_assert_ptr_nonnull(text);
    memset(text, 'b', n);
    evbus_event_t *ev = evbus_event_new("a.b.c", "/src");
    ck_assert_int_eq(evbus_event_set_data(ev, text, n, "text/plain"),
                     EVBUS_OK);
    size_t encoded = 0;
    free(evbus_event_to_json(ev, &encoded));
    ck_assert_int_eq(evbus_publish(big, topic, ev), EVBUS_OK);
    evbus_event_free(ev);
    free(text);
    evbus_close(big);

    evbus_event_t *dl = only_dead_letter(m.url, topic, 90000);
    char want[32];
    snprintf(want, sizeof want, "%zu", encoded);
    ck_assert_str_eq(evbus_event_ext(dl, "dlqtruncated"), want);
    ck_assert_ptr_nonnull(strstr(evbus_event_ext(dl, "dlqreason"),
                                 "over max_event_bytes 1048576"));
    ck_assert_uint_lt(evbus_event_data_len(dl), 1000000);
    evbus_event_free(dl);
    kt_mock_stop(&m);
}
END_TEST

/* ---------------------------------------------------------------- offsets */

/* Events 0..4 on one partition; seq 2 is answered RETRY forever. The
 * committed offset must stop at 2 although 3 and 4 were acked, and a new
 * member must get 2 (and what follows) again. */
START_TEST(offsets_never_pass_a_retrying_event)
{
    kt_mock_t m;
    kt_mock_start(&m, 1, "");
    char topic[128], err[512];
    kt_topic(topic, sizeof topic, "watermark");
    ck_assert_int_eq(rd_kafka_mock_topic_create(m.mc, topic, 1, 1), 0);
    evbus_t *bus = evbus_open(m.url, err, sizeof err);
    ck_assert_msg(bus != NULL, "%s", err);
    for (int i = 0; i < 5; i++) {
        evbus_event_t *ev = kt_event(i);
        ck_assert_int_eq(evbus_publish(bus, topic, ev), EVBUS_OK);
        evbus_event_free(ev);
    }
    kt_collector_t c;
    kt_collector_init(&c, KT_RETRY_SEQ);
    c.retry_seq = 2;
    evbus_sub_opts_t o;
    evbus_sub_opts_init(&o);
    evbus_retry_policy_t retry;
    evbus_retry_policy_init(&retry);
    retry.max_attempts = 1000;
    retry.initial_ms = 50;
    retry.max_ms = 100;
    o.retry = &retry;
    ck_assert_ptr_nonnull(
        evbus_subscribe_opts(bus, topic, "wm", &o, kt_handler, &c, NULL, 0));
    evbus_t *buses[] = {bus, NULL};
    ck_assert_int_eq(kt_poll_until(buses, &c, kt_acked, 4, 30000), 4);
    /* let the periodic commit (1 s) run while 2 keeps retrying */
    kt_poll_until(buses, &c, kt_acked, 1000, 6000);
    ck_assert_int_gt(c.calls, 6); /* seq 2 was retried meanwhile */
    int64_t off = kt_committed(m.brokers, "wm", topic, 0);
    ck_assert_msg(off == 2, "committed %lld with offset 2 in retry",
                  (long long)off);
    evbus_close(bus); /* releases 2: the final commit must stay at 2 */
    off = kt_committed(m.brokers, "wm", topic, 0);
    ck_assert_msg(off == 2, "committed %lld after close", (long long)off);

    bus = evbus_open(m.url, err, sizeof err);
    kt_collector_t c2;
    kt_collector_init(&c2, KT_ACK);
    /* The same policy: the attempts made above travel with the event (the
     * default 5 would dead-letter it at once). */
    ck_assert_ptr_nonnull(
        evbus_subscribe_opts(bus, topic, "wm", &o, kt_handler, &c2, NULL, 0));
    buses[0] = bus;
    ck_assert_int_eq(kt_poll_until(buses, &c2, kt_acked, 3, 30000), 3);
    ck_assert_int_eq(c2.seen[2], 1);
    ck_assert_int_eq(c2.seen[0] + c2.seen[1], 0); /* acked ones stay done */
    evbus_close(bus);
    off = kt_committed(m.brokers, "wm", topic, 0);
    ck_assert_int_eq(off, 5);
    kt_collector_free(&c);
    kt_collector_free(&c2);
    kt_mock_stop(&m);
}
END_TEST

/* ---------------------------------------------------------------- errors */

START_TEST(delivery_report_error_fails_the_publish)
{
    kt_mock_t m;
    kt_mock_start(&m, 1, "&kafka.message.max.bytes=2000");
    char topic[128], err[512];
    kt_topic(topic, sizeof topic, "drerr");
    evbus_t *bus = evbus_open(m.url, err, sizeof err);
    ck_assert_msg(bus != NULL, "%s", err);
    /* a local refusal: the record is larger than message.max.bytes */
    evbus_event_t *big = evbus_event_new("kafka.test.big", "/tests/kafka");
    char *blob = malloc(5000);
    memset(blob, 'a', 5000);
    ck_assert_int_eq(evbus_event_set_data(big, blob, 5000, "text/plain"),
                     EVBUS_OK);
    ck_assert_int_eq(evbus_publish(bus, topic, big), EVBUS_ETOOBIG);
    free(blob);
    evbus_event_free(big);
    /* a broker refusal in the delivery report */
    evbus_event_t *ev = kt_event(1);
    ck_assert_int_eq(evbus_publish(bus, topic, ev), EVBUS_OK); /* warm up */
    rd_kafka_mock_push_request_errors(
        m.mc, 0 /* Produce */, 20, RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED,
        RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED,
        RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED,
        RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED,
        RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED,
        RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED,
        RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED,
        RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED,
        RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED,
        RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED,
        RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED,
        RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED,
        RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED,
        RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED,
        RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED,
        RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED,
        RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED,
        RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED,
        RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED,
        RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED);
    int rc = evbus_publish(bus, topic, ev);
    ck_assert_msg(rc != EVBUS_OK, "publish succeeded despite the error");
    ck_assert_int_eq(rc, EVBUS_EAUTH);
    evbus_metrics_t mt;
    evbus_metrics_init(&mt);
    evbus_metrics_get(bus, &mt);
    ck_assert_uint_ge(mt.publish_failed, 2);
    evbus_event_free(ev);
    evbus_close(bus);
    kt_mock_stop(&m);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("kafka-backend");
    TCase *tc = tcase_create("backend");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, bad_property_is_named);
    tcase_add_test(tc, unreachable_cluster_fails_open);
    tcase_add_test(tc, passthrough_properties_accepted_and_health);
    tcase_add_test(tc, structured_mode_record_layout);
    tcase_add_test(tc, binary_mode_roundtrip_and_headers);
    tcase_add_test(tc, dapr_bare_json_record_is_decoded);
    tcase_add_test(tc, broken_binary_record_is_dead_lettered);
    tcase_add_test(tc, oversized_record_dead_letter_fits_kafka);
    tcase_add_test(tc, offsets_never_pass_a_retrying_event);
    tcase_add_test(tc, delivery_report_error_fails_the_publish);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? 1 : 0;
}
